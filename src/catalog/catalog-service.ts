/**
 * The catalog on one node: cluster-wide metadata (records), pushes to and pulls from storage
 * providers, the local cache of chunks and unpacked images, and jobs that report progress.
 *
 * A pull resolves a reference to a version, checks the user may use it, fetches the manifest, then
 * the chunks the cache lacks (peers first when a peer router is set, the provider last), checks
 * every chunk, and unpacks into the cache. A marker file per pull makes a restarted node carry on
 * with the pulls it had under way; the chunks it already has are not fetched again.
 */
import { randomUUID } from 'node:crypto'
import { mkdir, open, readdir, readFile, rm, stat, writeFile, rename } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Logger } from 'pino'
import type { RecordStore } from '../node/index.ts'
import { ChunkStore } from './chunk-store.ts'
import { ImageCache, cachedName, type CachedImage } from './image-cache.ts'
import { CatalogRecords, checkImageId, checkVersion, normaliseArch, parseRef, DEFAULT_TAG, TAG } from './records.ts'
import { Repository, knownLocations, packKey, versionKey } from './repository.ts'
import { collectGarbage, leaseKey, DEFAULT_GRACE_MS, LEASE_REFRESH_MS, type GarbageReport, type PushLease } from './garbage.ts'
import { packFolder, type BlobSink } from './pack.ts'
import { BundleWriter, removeTree } from './unpack.ts'
import { countHeld, fetchSegment, fetchUnits, segmentsOf, READ_BYTES, type BlobSource, type FetchCounters, type FetchOptions, type Segment, type SegmentRouting } from './transfer.ts'
import { CODEC_RAW, sha256Hex, type CheckedBlob } from './blob.ts'
import { forEachLimit } from './pool.ts'
export type { BlobSource, Segment } from './transfer.ts'
import { decodeManifest, encodeManifest, manifestDigest, blobIds, type BundleManifest } from './manifest.ts'
import { DEFAULT_CHUNKING, type ChunkingParams } from './chunker.ts'
import { describeBundle, type GuestOverrides } from './describe-bundle.ts'
import { importPdsPacks, type ImportOptions, type ImportOutcome } from './import-pds.ts'
import { checkAccess } from './access.ts'
import {
  BundleInvalidError, CatalogJobNotFoundError, CatalogRequestError, CatalogVersionExistsError, ChunkCorruptError, ChunkNotFoundError,
  ProviderConfigError, CatalogAccessDeniedError, ImageRevokedError, CatalogImageNotFoundError, CatalogVersionNotFoundError, PackGoneError
} from './errors.ts'
import type { ProviderKind, StorageProvider } from './providers/types.ts'
import type { CatalogArch, CatalogEntry, CatalogImage, CatalogUser, CatalogVersion, MinHost, TransferProgress } from './types.ts'

export interface CatalogComponents {
  logger: Logger
  /** The mesh's cluster-wide records. */
  records: RecordStore
  clock: () => number
  /** This host's architecture (what it pulls for by default). */
  hostArch: () => Promise<CatalogArch>
  /** Names of images VMs on this host were created from: never evicted. */
  inUse?: () => Set<string>
}

export interface CatalogInit {
  cacheDir: string
  cacheMaxBytes: number
  providers: Partial<Record<ProviderKind, StorageProvider>>
  /** Where pushes go when they do not say. */
  defaultProvider?: ProviderKind
  /** Chunks fetched or sent at once. */
  concurrency: number
  chunking?: ChunkingParams
  zstdLevel?: number
  /** Keep a pushed image's chunks in this node's cache, so peers can fetch them from here. */
  cacheOnPush?: boolean
  /** Least time between two progress events of one transfer. */
  progressIntervalMs?: number
  /** Stored bytes per segment, the unit of fetching and of ownership in a swarm (default 8 MiB; every node of a cluster must use the same). */
  segmentBytes?: number
  /** A push uploads a pack once it holds this many bytes (default 32 MiB). */
  packBytes?: number
  /** Largest ranged read a pull makes of neighbouring segments no peer serves (default 32 MiB). */
  readBytes?: number
}

export interface PushOptions {
  path: string
  image: string
  version: string
  arch?: string
  provider?: ProviderKind
  /** Tags to point at this version; default ["latest"]. */
  tags?: string[]
  description?: string
  requiredClaims?: string[]
  minHost?: MinHost
  guest?: GuestOverrides
  /** Replace a version of the same number (versions are otherwise immutable). */
  force?: boolean
}

export interface PullOptions {
  arch?: string
  /** The user the pull is for; absent for the node's own on-demand pulls (already authorised). */
  user?: CatalogUser
  signal?: AbortSignal
  /** Peers told to pull the same version now (a prefetch): they split the provider reads. */
  swarm?: string[]
}

export type JobState = 'running' | 'done' | 'failed'

export interface CatalogJob {
  id: string
  kind: 'pull' | 'push' | 'import'
  ref: string
  by: string
  state: JobState
  progress: TransferProgress
  startedAt: string
  finishedAt?: string
  error?: { name: string, message: string }
  /** The pulled image (name, path) or the pushed version. */
  result?: unknown
}

export interface LocalCatalogImage {
  /** `<image>:<version>`. */
  name: string
  path: string
  version: CatalogVersion
}

export interface CatalogEvents {
  /** A transfer moved on (throttled; phase changes always sent). */
  progress: CustomEvent<TransferProgress & { job?: string }>
  /** Metadata or the local cache changed: what this host can offer may differ. */
  changed: CustomEvent<{ reason: string }>
}

/** Chunk routing beyond the provider: peers that hold or fetch the chunks (src/catalog/p2p.ts). */
export interface PeerRouting {
  /** A pull of this manifest starts on this node; `swarm` names peers told to pull it at the same time. */
  begin: (manifest: string, swarm?: string[]) => Promise<void>
  /** Where else than the provider to look for a segment's chunks, best first. */
  sources: (segment: Segment, round: number, manifest: string) => BlobSource[]
  /** The pull ended (ok: this node now holds every chunk). */
  end: (manifest: string, ok: boolean) => Promise<void>
  /** No other host holds or pulls this manifest now. */
  alone?: (manifest: string) => boolean
}

/** Bytes this node moved since it started, for benches and the cache route. */
export interface CatalogMetrics {
  /** Stored bytes read from providers, for this node's pulls and for peers it fetched on behalf of. */
  providerBytesRead: number
  /** Stored bytes received from peers, and sent to them. */
  peerBytesIn: number
  peerBytesOut: number
  corruptChunks: number
}

/** A segment fetch under way, found by whoever asks for the same segment next. */
interface SegmentFetch {
  done: Promise<Map<string, CheckedBlob | null>>
  /** It may ask an owner peer, which may in turn join a fetch of its own. */
  viaOwner: boolean
}

const MAX_JOBS_KEPT = 200
const SYSTEM_USER: CatalogUser = { subject: 'corral', claims: new Set(['catalog:write']), roles: [] }

export class CatalogService extends EventTarget {
  readonly records: CatalogRecords
  readonly store: ChunkStore
  readonly cache: ImageCache
  private readonly c: CatalogComponents
  private readonly init: CatalogInit
  private readonly log: Logger
  private readonly inflight = new Map<string, Promise<CachedImage>>()
  private readonly jobs = new Map<string, CatalogJob>()
  /** Chunks of pulls under way: never evicted from under them. */
  private readonly pinnedChunks = new Map<string, Set<string>>()
  private readonly abort = new AbortController()
  private peerRouting?: PeerRouting
  private started = false
  /** One fetch per segment at a time, whoever asks (a pull here, a peer's request). */
  private readonly segmentFetches = new Map<string, SegmentFetch>()
  /** Pulls under way, by manifest: peers are served what they placed already. */
  private readonly writers = new Map<string, BundleWriter>()
  private readonly stats: CatalogMetrics = { providerBytesRead: 0, peerBytesIn: 0, peerBytesOut: 0, corruptChunks: 0 }

  constructor (components: CatalogComponents, init: CatalogInit) {
    super()
    this.c = components
    this.init = init
    this.log = components.logger
    this.records = new CatalogRecords(components.records)
    this.store = new ChunkStore({ logger: components.logger, clock: components.clock }, { dir: join(init.cacheDir, 'chunks') })
    this.cache = new ImageCache({ logger: components.logger, clock: components.clock, store: this.store, inUse: () => components.inUse?.() ?? new Set() }, { dir: init.cacheDir, maxBytes: init.cacheMaxBytes })
  }

  private get pullsDir (): string { return join(this.init.cacheDir, 'pulls') }
  private get manifestsDir (): string { return join(this.init.cacheDir, 'manifests') }

  async start (): Promise<void> {
    if (this.started) return
    await mkdir(this.pullsDir, { recursive: true })
    await mkdir(this.manifestsDir, { recursive: true })
    await this.store.open()
    const pending = (await readdir(this.pullsDir)).filter(f => f.endsWith('.json'))
    await this.cache.open(new Set(pending.map(f => f.slice(0, -'.json'.length))))
    this.started = true
    for (const file of pending) {
      const marker = await readFile(join(this.pullsDir, file), 'utf8').then(t => JSON.parse(t) as { version: CatalogVersion }).catch(() => undefined)
      if (marker?.version == null) {
        await rm(join(this.pullsDir, file), { force: true })
        continue
      }
      const v = marker.version
      this.log.info({ image: v.image, version: v.version, arch: v.arch, held: this.store.count() }, 'resuming a pull a previous run left unfinished')
      this.startJob('pull', cachedName(v.image, v.version), 'corral', async job => await this.pullResolved(v, job))
    }
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.abort.abort()
    await Promise.allSettled([...this.inflight.values()])
  }

  /** Set by the p2p layer: where else than the provider a chunk may be found. */
  setPeerRouting (routing: PeerRouting | undefined): void {
    this.peerRouting = routing
  }

  metrics (): CatalogMetrics {
    return { ...this.stats }
  }

  /** Counts bytes sent to a peer (the p2p server calls it). */
  countServed (bytes: number): void {
    this.stats.peerBytesOut += bytes
  }

  providerNames (): ProviderKind[] {
    return Object.keys(this.init.providers) as ProviderKind[]
  }

  repository (name: ProviderKind): Repository {
    const provider = this.init.providers[name]
    if (provider == null) {
      const known = this.providerNames()
      throw new ProviderConfigError(`this node has no "${name}" storage provider configured (catalog.${name}.* in its config); it has ${known.length > 0 ? known.join(', ') : 'none'}`, { provider: name })
    }
    return new Repository(provider)
  }

  // ---- metadata ----

  list (): CatalogEntry[] {
    return this.records.entries()
  }

  show (id: string): CatalogEntry {
    return this.records.entry(checkImageId(id))
  }

  /**
   * Changes an image's description, required claims or minimum host; with `version`, the minimum
   * host of that version (every arch) instead, which wins over the image's. A version's content
   * is immutable; what host it needs is metadata, and may have been wrong.
   */
  async update (id: string, changes: { description?: string, requiredClaims?: string[], minHost?: MinHost, version?: string }): Promise<CatalogImage> {
    const image = this.records.requireImage(checkImageId(id))
    if (changes.version != null) {
      if (changes.minHost == null) throw new CatalogRequestError('version is only for changing that version\'s minHost: give minHost too, or leave version out to change the image', { field: 'version' })
      const versions = this.records.versions(id).filter(v => v.version === changes.version)
      if (versions.length === 0) throw new CatalogVersionNotFoundError(`image "${id}" has no version ${changes.version}`, { image: id, version: changes.version })
      for (const v of versions) await this.records.putVersion({ ...v, minHost: changes.minHost })
    }
    const next: CatalogImage = { ...image, updatedAt: this.now() }
    if (changes.description != null) next.description = changes.description
    if (changes.requiredClaims != null) next.requiredClaims = [...new Set(changes.requiredClaims)]
    if (changes.minHost != null && changes.version == null) next.minHost = changes.minHost
    await this.records.putImage(next)
    this.changed('image updated')
    return next
  }

  /** Points a tag at a version (which must exist), or removes it (version null). */
  async setTag (id: string, tag: string, version: string | null): Promise<CatalogImage> {
    if (!TAG.test(tag)) throw new CatalogRequestError(`"${tag}" is not a valid tag: 1-40 letters, digits, ".", "_", "+" or "-"`, { field: 'tag' })
    const image = this.records.requireImage(checkImageId(id))
    const tags = { ...image.tags }
    if (version == null) {
      if (tags[tag] == null) throw new CatalogVersionNotFoundError(`image "${id}" has no tag "${tag}"; its tags: ${Object.keys(tags).join(', ') || 'none'}`, { image: id, tag })
      delete tags[tag]
    }
    else {
      if (!this.records.versions(id).some(v => v.version === version)) throw new CatalogVersionNotFoundError(`image "${id}" has no version ${version} to tag`, { image: id, version })
      tags[tag] = version
    }
    const next = { ...image, tags, updatedAt: this.now() }
    await this.records.putImage(next)
    this.changed('tag changed')
    return next
  }

  /** Revokes (or, with reason null, restores) an image, or one version of it (all arches unless given). */
  async setRevoked (id: string, target: { version?: string, arch?: string }, reason: string | null, by: string): Promise<CatalogEntry> {
    const image = this.records.requireImage(checkImageId(id))
    const revocation = reason == null ? undefined : { by, at: this.now(), reason }
    if (target.version == null) {
      const next: CatalogImage = { ...image, updatedAt: this.now() }
      if (revocation == null) delete next.revoked
      else next.revoked = revocation
      await this.records.putImage(next)
    } else {
      const versions = this.records.versions(id).filter(v => v.version === target.version && (target.arch == null || v.arch === normaliseArch(target.arch)))
      if (versions.length === 0) throw new CatalogVersionNotFoundError(`image "${id}" has no version ${target.version}${target.arch != null ? ` for ${target.arch}` : ''}`, { image: id, version: target.version })
      for (const v of versions) {
        const next: CatalogVersion = { ...v }
        if (revocation == null) delete next.revoked
        else next.revoked = revocation
        await this.records.putVersion(next)
      }
    }
    this.changed(reason == null ? 'restored' : 'revoked')
    return this.records.entry(id)
  }

  /**
   * Removes catalog metadata and the versions' documents in storage; their chunks stay (other
   * versions may share them) until a garbage collection finds them unreferenced.
   */
  async remove (id: string, version?: string, arch?: string): Promise<void> {
    checkImageId(id)
    if (version == null) {
      const versions = this.records.versions(id)
      await this.records.deleteImage(id)
      await this.forgetVersionDocs(versions)
    } else {
      const versions = this.records.versions(id).filter(v => v.version === version && (arch == null || v.arch === normaliseArch(arch)))
      if (versions.length === 0) throw new CatalogVersionNotFoundError(`image "${id}" has no version ${version}`, { image: id, version })
      for (const v of versions) await this.records.deleteVersion(v)
      await this.forgetVersionDocs(versions)
      const image = this.records.image(id)
      if (image != null && Object.values(image.tags).includes(version) && !this.records.versions(id).some(v => v.version === version)) {
        await this.records.putImage({ ...image, tags: Object.fromEntries(Object.entries(image.tags).filter(([, v]) => v !== version)), updatedAt: this.now() })
      }
    }
    this.changed('removed')
  }

  /**
   * Removes deleted versions' documents from their provider, so that garbage collection no longer
   * counts them as alive. Where this node lacks the provider they stay (a collection with
   * forgetOrphans removes them).
   */
  private async forgetVersionDocs (versions: CatalogVersion[]): Promise<void> {
    for (const v of versions) {
      const provider = this.init.providers[v.provider]
      if (provider == null) {
        this.log.warn({ image: v.image, version: v.version, arch: v.arch, provider: v.provider }, 'this node has no such provider: the deleted version\'s document stays in storage until a garbage collection with forgetOrphans')
        continue
      }
      await provider.delete(versionKey(v.image, v.version, v.arch), { signal: this.abort.signal }).catch((err: Error) => {
        this.log.warn({ image: v.image, version: v.version, err: err.message }, 'could not remove a deleted version\'s document from storage; a garbage collection with forgetOrphans will')
      })
    }
  }

  /** The version a reference means for this host (or `arch`), checked for the user. */
  async resolveFor (ref: string, user: CatalogUser | undefined, arch?: string): Promise<{ image: CatalogImage, version: CatalogVersion }> {
    const resolved = this.records.resolve(ref, arch != null ? normaliseArch(arch) : await this.c.hostArch())
    checkAccess(user ?? SYSTEM_USER, resolved.image, resolved.version)
    return resolved
  }

  /**
   * The image name a VM request should carry: a catalog reference becomes `<image>:<version>` once
   * the user is checked against the image's claims and revocation; any other name is left alone.
   */
  imageForVm (name: string, user: CatalogUser, arch?: string): string {
    if (!this.knows(name)) return name
    const { image, version } = this.records.resolve(name, arch != null ? normaliseArch(arch) : undefined)
    checkAccess(user, image, version)
    return cachedName(version.image, version.version)
  }

  /** Whether a name is a catalog reference at all (an image id the catalog knows). */
  knows (ref: string): boolean {
    try {
      return this.records.image(parseRef(ref).id) != null
    } catch {
      return false
    }
  }

  // ---- push ----

  async push (options: PushOptions, by: string, onProgress?: (p: TransferProgress) => void, jobId?: string): Promise<CatalogVersion> {
    const image = checkImageId(options.image)
    const version = checkVersion(options.version)
    const path = resolve(options.path)
    const st = await stat(path).catch(() => undefined)
    if (st == null || !st.isDirectory()) throw new BundleInvalidError(`${path} is not a folder on this node: give the image folder (with image.json) or the .pvm/.macvm bundle, as a path on the node that runs the push`, { path })
    const described = await describeBundle(path, options.guest ?? {})
    const arch = options.arch != null ? normaliseArch(options.arch) : described.arch ?? await this.c.hostArch()
    const providerName = options.provider ?? this.init.defaultProvider ?? this.providerNames()[0]
    if (providerName == null) throw new ProviderConfigError('this node has no storage provider configured: set catalog.folder.path, catalog.s3.bucket, catalog.azure.container or catalog.artifactory.url')
    const repo = this.repository(providerName)
    if (this.records.version(image, version, arch) != null && options.force !== true) {
      throw new CatalogVersionExistsError(`image "${image}" already has version ${version} for ${arch}; versions are immutable: push a new version, or pass force to replace it`, { image, version, arch })
    }
    for (const tag of options.tags ?? [DEFAULT_TAG]) if (!TAG.test(tag)) throw new CatalogRequestError(`"${tag}" is not a valid tag`, { field: 'tags' })

    const progress = this.newProgress('push', image, version, arch)
    const emit = this.emitter(progress, onProgress, jobId)
    progress.phase = 'uploading'
    emit(true)
    const local: BlobSink | undefined = this.init.cacheOnPush === false ? undefined : { has: async () => undefined, put: async (id, stored) => { await this.store.put(id, stored, { verified: true }) } }
    // Announced in the provider while it runs: garbage collection leaves alone the packs it builds on.
    const lease = await this.startLease(repo, image, version, by)
    let manifest: BundleManifest
    let record: CatalogVersion
    try {
      // Where the chunks of earlier versions in this provider are: those are referenced, not stored again.
      const earlier = await Promise.all(this.records.allVersions().filter(v => v.provider === providerName).map(async v => await this.manifestOf(v).catch(() => undefined)))
      const known = knownLocations(earlier.filter((m): m is BundleManifest => m != null))
      const sink = repo.packSink({ signal: this.abort.signal, also: local, known, packBytes: this.init.packBytes, concurrency: Math.max(1, Math.floor(this.init.concurrency / 2)) })
      manifest = await packFolder(path, sink, {
        chunking: this.init.chunking ?? DEFAULT_CHUNKING,
        zstdLevel: this.init.zstdLevel,
        concurrency: this.init.concurrency,
        signal: this.abort.signal,
        onProgress: p => {
          progress.chunksDone = p.blobsSent + p.blobsReused
          progress.chunksReused = p.blobsReused
          progress.bytesDone = p.bytesRead
          progress.bytesTotal = p.totalBytes
          progress.bytesFromProvider = p.bytesSent
          emit(false)
        }
      })
      progress.chunksTotal = progress.chunksDone = Object.keys(manifest.blobs).length
      await this.checkReusedPacks(repo, manifest, known)
      const digest = await repo.putManifest(manifest, { signal: this.abort.signal })
      await this.saveManifest(digest, manifest)
      const guest = described.guest.format === 'qemu' || options.guest?.diskMiB != null ? described.guest : { ...described.guest, diskMiB: Math.max(1, Math.ceil(manifest.size / 1048576)) }
      record = {
        image, version, arch, manifest: digest, provider: providerName,
        size: manifest.size, storedSize: manifest.storedSize, chunks: Object.keys(manifest.blobs).length,
        guest, createdBy: by, createdAt: this.now()
      }
      if (options.minHost != null) record.minHost = options.minHost
      await repo.putVersionDoc(record, { signal: this.abort.signal })
      await this.records.putVersion(record)
    } finally {
      await lease.end()
    }
    const existing = this.records.image(image)
    const tags = { ...(existing?.tags ?? {}) }
    for (const tag of options.tags ?? [DEFAULT_TAG]) tags[tag] = version
    const meta: CatalogImage = {
      id: image,
      description: options.description ?? existing?.description ?? '',
      tags,
      requiredClaims: options.requiredClaims ?? existing?.requiredClaims ?? [],
      createdBy: existing?.createdBy ?? by,
      createdAt: existing?.createdAt ?? this.now(),
      updatedAt: this.now()
    }
    if (existing?.revoked != null) meta.revoked = existing.revoked
    const minHost = options.minHost ?? existing?.minHost
    if (minHost != null) meta.minHost = minHost
    await this.records.putImage(meta)
    progress.phase = 'done'
    emit(true)
    // Holding every chunk, this node can serve the new version to the first hosts that pull it.
    if (local != null) await this.peerRouting?.end(record.manifest, true).catch(() => {})
    this.log.info({ image, version, arch, provider: providerName, sizeMiB: Math.round(manifest.size / 1048576), sentMiB: Math.round(progress.bytesFromProvider / 1048576), by }, 'image version pushed')
    this.changed('pushed')
    if (local != null) {
      const evicted = await this.cache.makeRoom(0).catch((err: Error) => { this.log.warn({ err: err.message }, 'the cache is over its limit after a push'); return undefined })
      if (evicted != null && (evicted.evictedChunks > 0 || evicted.evictedImages.length > 0)) this.changed('evicted')
    }
    return record
  }

  /**
   * Writes this push's lease into the provider and refreshes it until end() (which removes it).
   * A lease that cannot be written fails the push: without it a collection could remove what the
   * push builds on.
   */
  private async startLease (repo: Repository, image: string, version: string, by: string): Promise<{ end: () => Promise<void> }> {
    const key = leaseKey(randomUUID())
    const startedAt = this.now()
    const write = async (): Promise<void> => {
      await repo.provider.put(key, Buffer.from(JSON.stringify({ image, version, by, startedAt, refreshedAt: this.now() } satisfies Omit<PushLease, 'id'>)), { signal: this.abort.signal })
    }
    await write()
    const timer = setInterval(() => { write().catch((err: Error) => this.log.warn({ err: err.message, image, version }, 'could not refresh a push\'s lease in storage')) }, LEASE_REFRESH_MS)
    timer.unref()
    return {
      end: async () => {
        clearInterval(timer)
        await repo.provider.delete(key).catch((err: Error) => this.log.warn({ err: err.message, key }, 'could not remove a push\'s lease from storage; garbage collection ignores it once stale'))
      }
    }
  }

  /** The packs of earlier versions this push references must still be there (a collection may have run). */
  private async checkReusedPacks (repo: Repository, manifest: BundleManifest, known: Map<string, { pack?: string }>): Promise<void> {
    const packs = new Set<string>()
    for (const id of Object.keys(manifest.blobs)) {
      const pack = known.get(id)?.pack
      if (pack != null) packs.add(pack)
    }
    await forEachLimit(packs, 8, async pack => {
      if (await repo.provider.head(packKey(pack), { signal: this.abort.signal }) == null) {
        throw new PackGoneError(`pack ${pack.slice(0, 12)}… that this push shares chunks with was removed from ${repo.provider.describe()} while it ran (catalog garbage collection of a deleted version?); push again: those chunks will be uploaded anew`, { pack })
      }
    })
  }

  /**
   * Garbage collection of storage (every configured provider, or one): removes packs, chunk objects
   * and manifests that no version references and that are older than the grace period (see
   * garbage.ts); dryRun lists them only.
   */
  async collectGarbage (options: { provider?: ProviderKind, dryRun: boolean, graceMs?: number, forgetOrphans?: boolean }): Promise<GarbageReport[]> {
    const names = options.provider != null ? [options.provider] : this.providerNames()
    const reports: GarbageReport[] = []
    for (const name of names) {
      const repo = this.repository(name)
      const report = await collectGarbage(repo, this.records.allVersions().filter(v => v.provider === name), {
        dryRun: options.dryRun,
        graceMs: options.graceMs ?? DEFAULT_GRACE_MS,
        forgetOrphans: options.forgetOrphans,
        now: this.c.clock(),
        signal: this.abort.signal,
        manifest: async digest => await this.localManifest(digest) ?? await repo.getManifest(digest, { signal: this.abort.signal })
      })
      if (!options.dryRun) this.log.info({ provider: name, removed: report.items.filter(i => i.action === 'removed').length, mib: mib(report.bytes), pushes: report.pushes.length }, 'catalog storage garbage collected')
      reports.push(report)
    }
    return reports
  }

  // ---- pull ----

  /** Pulls a reference for the user into this host's cache (or finds it there). */
  async pull (ref: string, options: PullOptions = {}, jobId?: string, onProgress?: (p: TransferProgress) => void): Promise<LocalCatalogImage> {
    const { version } = await this.resolveFor(ref, options.user, options.arch)
    const cached = await this.pullResolved(version, undefined, jobId, onProgress, options.swarm)
    return { name: cached.name, path: cached.path, version: cached.version }
  }

  /** One pull per version at a time on this node: a second caller waits for the first. */
  private async pullResolved (version: CatalogVersion, job?: CatalogJob, jobId?: string, onProgress?: (p: TransferProgress) => void, swarm?: string[]): Promise<CachedImage> {
    const cached = this.cache.get(version.image, version.version, version.arch)
    if (cached != null && cached.version.manifest === version.manifest) {
      this.cache.touch(cached)
      if (job != null) {
        job.progress.phase = 'done'
        job.progress.chunksDone = job.progress.chunksTotal = version.chunks
        job.progress.bytesDone = job.progress.bytesTotal = version.storedSize
      }
      return cached
    }
    const key = `${version.image}@${version.version}@${version.arch}`
    const running = this.inflight.get(key)
    if (running != null) return await running
    const p = this.doPull(version, job?.progress, job?.id ?? jobId, onProgress, swarm).finally(() => this.inflight.delete(key))
    this.inflight.set(key, p)
    return await p
  }

  private async doPull (version: CatalogVersion, given: TransferProgress | undefined, jobId: string | undefined, onProgress?: (p: TransferProgress) => void, swarm?: string[]): Promise<CachedImage> {
    const signal = this.abort.signal
    const progress = given ?? this.newProgress('pull', version.image, version.version, version.arch)
    const emit = this.emitter(progress, onProgress, jobId)
    const key = `${version.image}@${version.version}@${version.arch}`
    const marker = join(this.pullsDir, `${key}.json`)
    await writeFile(marker, JSON.stringify({ version, startedAt: this.now() }))
    let writer: BundleWriter | undefined
    try {
      progress.phase = 'manifest'
      emit(true)
      const manifest = await this.manifestOf(version)
      this.pinnedChunks.set(key, new Set(blobIds(manifest)))
      // The bundle is written in place as chunks arrive; a crashed pull's journal says what is there.
      writer = await BundleWriter.resumable(manifest, await this.cache.stage(version))
      this.writers.set(version.manifest, writer)
      const w = writer
      const local = await this.localChunks()
      const missing = countHeld(manifest, id => w.has(id) || this.store.has(id) || local.has(id), progress)
      // Room for the unpacked image (chunks are written into it, not kept apart).
      const evicted = await this.cache.makeRoom(missing.length > 0 ? manifest.size : 0, { chunks: this.allPinned(), images: new Set([cachedName(version.image, version.version)]) })
      if (evicted.evictedChunks > 0 || evicted.evictedImages.length > 0) this.changed('evicted')
      progress.phase = 'chunks'
      emit(true)
      const routing = this.routing(version)
      // Provider reads stream: each chunk is checked and written as it arrives, from the pieces
      // the network delivered, with no copy of the segment gathered first.
      const options: FetchOptions = { signal, logger: this.log, keep: async chunks => { await w.placeAll(chunks.map(([id, c]) => [id, c.plain])) }, retain: false }
      const peers = missing.length > 0 ? this.peerRouting : undefined
      await peers?.begin(version.manifest, swarm)
      let ok = false
      try {
        // Neighbouring segments are read from the provider together by a pull no other host shares
        // (in a swarm a peer waiting for one segment would wait for the whole read), and only after
        // a first round of single segments: hosts that start the same pull together see each
        // other's announcements late on a busy cluster, and a first round of long reads would have
        // each of them read most of the image alone.
        let first = this.init.concurrency
        const providerOnly = (segment: Segment): boolean => {
          if (first > 0) { first--; return false }
          return (this.peerRouting?.alone?.(version.manifest) ?? true) && routing.sources(segment, 0).every(s => s.kind === 'provider')
        }
        const units = fetchUnits(segmentsOf(manifest, this.init.segmentBytes), this.init.readBytes ?? READ_BYTES, providerOnly)
        await forEachLimit(units, this.init.concurrency, async ({ segment, keys }) => {
          // What this host holds (its chunk store, other unpacked images) is copied, not fetched.
          for (const id of segment.ids) {
            if (w.has(id)) continue
            const plain = await this.readLocal(id, manifest.blobs[id].size, local)
            if (plain != null) await w.place(id, plain)
          }
          const need = segment.ids.filter(id => !w.has(id))
          if (need.length > 0) {
            const fetched = await this.obtainSegment(segment, need, manifest, routing, progress, options, id => w.has(id), keys)
            for (const id of need) {
              // Written by this fetch, or by a peer's request this node served meanwhile.
              const got = fetched.get(id)
              if (got != null && got.plain.length > 0) await w.placeAll([[id, got.plain]])
              if (!w.has(id)) throw new ChunkNotFoundError(`chunk ${id.slice(0, 12)}… of ${cachedName(version.image, version.version)} was not fetched`, { chunk: id })
              progress.chunksDone++
              progress.bytesDone += manifest.blobs[id].stored
            }
          }
          emit(false)
        })
        progress.phase = 'unpacking'
        emit(true)
        await w.finish()
        const image = await this.cache.commit(version, manifest)
        ok = true
        await rm(marker, { force: true })
        progress.phase = 'done'
        emit(true)
        this.log.info({ image: version.image, version: version.version, arch: version.arch, fromProviderMiB: mib(progress.bytesFromProvider), fromPeersMiB: mib(progress.bytesFromPeers), reusedChunks: progress.chunksReused, corrupt: progress.corruptChunks }, 'image pulled')
        this.changed('pulled')
        return image
      } finally {
        await peers?.end(version.manifest, ok).catch(() => {})
      }
    } catch (err) {
      // The node stopping, or storage failing for a while: keep the marker and what was written,
      // so the next start (or the next pull of it) resumes. A hopeless pull is dropped.
      if (!signal.aborted && isFinal(err)) {
        await rm(marker, { force: true })
        await writer?.abort()
        await this.cache.discard(version)
      } else await writer?.suspend()
      progress.phase = 'failed'
      progress.error = (err as Error).message
      emit(true)
      throw err
    } finally {
      if (writer != null && this.writers.get(version.manifest) === writer) this.writers.delete(version.manifest)
      this.pinnedChunks.delete(key)
    }
  }

  /** Where this host already has chunks: every unpacked image (the files it wrote them into). */
  private async localChunks (): Promise<Map<string, { path: string, offset: number }>> {
    const out = new Map<string, { path: string, offset: number }>()
    for (const image of this.cache.list()) {
      const manifest = await this.localManifest(image.version.manifest)
      if (manifest == null) continue
      for (const entry of manifest.entries) {
        if (entry.type !== 'file') continue
        let offset = 0
        for (const [id, size] of entry.chunks) {
          if (!out.has(id) && manifest.blobs[id] != null) out.set(id, { path: join(image.path, ...entry.path.split('/')), offset })
          offset += size
        }
      }
    }
    return out
  }

  /** A chunk's plain bytes from this host (chunk store, or an unpacked image), checked; else undefined. */
  private async readLocal (id: string, size: number, local: Map<string, { path: string, offset: number }>): Promise<Buffer | undefined> {
    if (this.store.has(id)) {
      const plain = await this.store.readPlain(id, size).catch(() => undefined)
      if (plain != null) return plain
    }
    const at = local.get(id)
    if (at == null) return undefined
    const buf = Buffer.allocUnsafe(size)
    try {
      const handle = await open(at.path, 'r')
      try {
        if ((await handle.read(buf, 0, size, at.offset)).bytesRead !== size) return undefined
      } finally {
        await handle.close()
      }
    } catch {
      return undefined
    }
    return sha256Hex(buf) === id ? buf : undefined
  }

  /**
   * Fetches chunks of a segment this node lacks; resolves with what it fetched (checked, and kept
   * by `options.keep`). One fetch per segment at a time on this node, whoever asks (a pull here, a
   * peer's request); a caller that joined another's fetch gets what that fetch got, and fetches
   * the rest itself.
   */
  private async obtainSegment (segment: Segment, wanted: string[], manifest: BundleManifest, routing: SegmentRouting, progress: FetchCounters, options: FetchOptions, held: (id: string) => boolean, keys: string[] = [segment.key], forPeer = false): Promise<Map<string, CheckedBlob | null>> {
    const result = new Map<string, CheckedBlob | null>()
    let need = wanted
    // Bounded: each pass either joins a fetch that kept chunks, or fetches what is left itself.
    for (let attempt = 0; attempt < 8 && need.length > 0; attempt++) {
      const running = keys.map(k => this.segmentFetches.get(k)).find(f => f != null)
      // A peer's request never waits for a fetch of ours that asks an owner peer in turn: when two
      // hosts each think the other owns a segment (their views of the swarm differ for a moment),
      // each would wait for the other until the fetch timed out. It reads the provider instead.
      if (running != null && !(forPeer && running.viaOwner)) {
        const got = await running.done.catch(() => new Map<string, CheckedBlob | null>())
        // Chunks that fetch kept without their bytes (null) are held here now: see below.
        for (const id of need) { const c = got.get(id); if (c != null) result.set(id, c) }
        // What that fetch kept for its own caller is here now too: not fetched again.
        need = need.filter(id => !result.has(id) && !held(id))
        continue
      }
      const mine: FetchCounters = { bytesFromPeers: 0, bytesFromProvider: 0, corruptChunks: 0 }
      // Every chunk is kept (written into the image, or stored) before the fetch counts as done,
      // so whoever asks next finds the chunks here instead of fetching them again. A fetch of
      // merged segments is found under each of their keys.
      const fetch: SegmentFetch = {
        viaOwner: [0, 1].some(round => routing.sources(segment, round).some(s => s.owner === true)),
        done: fetchSegment(segment, need, manifest, routing, mine, options).finally(() => {
          for (const k of keys) if (this.segmentFetches.get(k) === fetch) this.segmentFetches.delete(k)
          progress.bytesFromPeers += mine.bytesFromPeers
          progress.bytesFromProvider += mine.bytesFromProvider
          progress.corruptChunks += mine.corruptChunks
          this.stats.peerBytesIn += mine.bytesFromPeers
          this.stats.providerBytesRead += mine.bytesFromProvider
          this.stats.corruptChunks += mine.corruptChunks
        })
      }
      // Not registered over a fetch a peer's request would not join (it stays the one others find).
      if (running == null) for (const k of keys) this.segmentFetches.set(k, fetch)
      for (const [id, c] of await fetch.done) result.set(id, c)
      need = need.filter(id => !result.has(id))
    }
    return result
  }

  /** Whether this node holds every chunk of a manifest (an unpacked image of it, or its chunk store). */
  async holds (manifestDigest: string): Promise<boolean> {
    if (this.cache.list().some(i => i.version.manifest === manifestDigest)) return true
    const manifest = await this.localManifest(manifestDigest)
    return manifest != null && Object.keys(manifest.blobs).every(id => this.store.has(id))
  }

  /**
   * Chunks a peer asks for, in stored form: from the chunk store, a pull under way here, or an
   * unpacked image (sent uncompressed). With `fetch` (this node owns their segment in the swarm
   * pulling the manifest) what it lacks is fetched from the provider first, once.
   */
  async blobsForPeer (ids: string[], manifestDigest: string, fetch: boolean, signal: AbortSignal): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>()
    const writer = this.writers.get(manifestDigest)
    let local: Map<string, { path: string, offset: number }> | undefined
    for (const id of ids) {
      if (this.store.has(id)) {
        const stored = await this.store.readStored(id).catch(() => undefined)
        if (stored != null) { out.set(id, stored); continue }
      }
      const placed = await writer?.readPlaced(id)
      if (placed != null) { out.set(id, rawBlob([placed])); continue }
      local ??= await this.localChunks()
      const at = local.get(id)
      if (at != null) {
        const manifest = await this.localManifest(manifestDigest)
        const size = manifest?.blobs[id]?.size
        const plain = size != null ? await this.readLocal(id, size, local) : undefined
        if (plain != null) out.set(id, rawBlob([plain]))
      }
    }
    const missing = ids.filter(id => !out.has(id))
    if (fetch && missing.length > 0) {
      const version = this.records.allVersions().find(v => v.manifest === manifestDigest && this.init.providers[v.provider] != null)
      if (version != null) {
        const manifest = await this.manifestOf(version)
        const wanted = new Set(missing)
        const providerOnly = this.routing(version, false)
        const counters: FetchCounters = { bytesFromPeers: 0, bytesFromProvider: 0, corruptChunks: 0 }
        for (const segment of segmentsOf(manifest, this.init.segmentBytes).filter(seg => seg.ids.some(id => wanted.has(id)))) {
          // Whole reads, not streams: the stored bytes are what the peer gets.
          const keep = async (chunks: Array<[string, CheckedBlob]>): Promise<void> => {
            // Pulling it too: write it in; otherwise keep it for the next peer that asks.
            const active = this.writers.get(manifestDigest)
            if (active != null) await active.placeAll(chunks.map(([id, c]) => [id, c.plain]))
            else for (const [id, c] of chunks) await this.store.put(id, c.stored ?? rawBlob(c.plain), { verified: true })
          }
          const got = await this.obtainSegment(segment, segment.ids.filter(id => wanted.has(id)), manifest, providerOnly, counters, { signal, logger: this.log, keep, streaming: false },
            id => this.store.has(id) || this.writers.get(manifestDigest)?.has(id) === true, [segment.key], true)
          // A fetch of this pull's that this one joined came as a stream: sent uncompressed (or
          // read back below, if it let the bytes go).
          for (const [id, c] of got) if (c != null) out.set(id, c.stored ?? rawBlob(c.plain))
        }
        // Kept here by another fetch this one joined: read back.
        for (const id of missing) {
          if (out.has(id)) continue
          const stored = this.store.has(id) ? await this.store.readStored(id).catch(() => undefined) : undefined
          const placed = stored == null ? await this.writers.get(manifestDigest)?.readPlaced(id) : undefined
          if (stored != null) out.set(id, stored)
          else if (placed != null) out.set(id, rawBlob([placed]))
        }
      }
    }
    return out
  }

  private allPinned (): Set<string> {
    const all = new Set<string>()
    for (const ids of this.pinnedChunks.values()) for (const id of ids) all.add(id)
    return all
  }

  private routing (version: CatalogVersion, usePeers = true): SegmentRouting {
    const repo = this.repository(version.provider)
    let blobs: BundleManifest['blobs'] | undefined
    const provider: BlobSource = {
      kind: 'provider',
      label: repo.provider.describe(),
      fetch: async (ids, signal) => {
        blobs ??= (await this.manifestOf(version)).blobs
        const where = blobs
        return await repo.fetchBlobs(ids.map(id => ({ id, info: where[id] })), { signal })
      },
      stream: async (ids, signal, onBlob) => {
        blobs ??= (await this.manifestOf(version)).blobs
        const where = blobs
        await repo.streamBlobs(ids.map(id => ({ id, info: where[id] })), onBlob, { signal })
      }
    }
    return {
      sources: (segment, round) => {
        const peers = usePeers ? this.peerRouting?.sources(segment, round, version.manifest) ?? [] : []
        // Peers get a second chance before the bucket is read: a slow owner is still cheaper
        // than every host reading the same bytes from storage.
        return round === 0 && peers.length > 0 ? peers : [...peers, provider]
      }
    }
  }

  /** The manifest from this node's copy, else the provider (and kept for resumes and peers). */
  async manifestOf (version: { manifest: string, provider: ProviderKind }): Promise<BundleManifest> {
    const local = await this.localManifest(version.manifest)
    if (local != null) return local
    const manifest = await this.repository(version.provider).getManifest(version.manifest, { signal: this.abort.signal })
    await this.saveManifest(version.manifest, manifest)
    return manifest
  }

  /** A manifest this node holds, checked; undefined if it has none (or a bad copy, removed). */
  async localManifest (digest: string): Promise<BundleManifest | undefined> {
    if (!/^[0-9a-f]{64}$/.test(digest)) return undefined
    const path = join(this.manifestsDir, `${digest}.json`)
    const bytes = await readFile(path).catch(() => undefined)
    if (bytes == null) return undefined
    try {
      return decodeManifest(bytes, digest)
    } catch {
      await rm(path, { force: true })
      return undefined
    }
  }

  async localManifestBytes (digest: string): Promise<Buffer | undefined> {
    if (!/^[0-9a-f]{64}$/.test(digest)) return undefined
    return await readFile(join(this.manifestsDir, `${digest}.json`)).catch(() => undefined)
  }

  private async saveManifest (digest: string, manifest: BundleManifest): Promise<void> {
    const bytes = encodeManifest(manifest)
    if (manifestDigest(bytes) !== digest) return
    const tmp = join(this.manifestsDir, `${digest}.json.${randomUUID().slice(0, 8)}`)
    await writeFile(tmp, bytes)
    await rename(tmp, join(this.manifestsDir, `${digest}.json`))
  }

  /** Empties the cache of everything no VM uses and no pull under way needs. */
  async pruneCache (): Promise<{ evictedChunks: number, evictedImages: string[] }> {
    const result = await this.cache.prune({ chunks: this.allPinned() })
    if (result.evictedImages.length > 0 || result.evictedChunks > 0) this.changed('evicted')
    return result
  }

  // ---- what this host offers ----

  /** Images unpacked here whose version is still in the catalog. */
  localImages (): LocalCatalogImage[] {
    return this.cache.list().map(i => ({ name: i.name, path: i.path, version: i.version }))
  }

  /**
   * Makes a catalog reference local for a VM on this host (pulling it if needed); undefined when
   * the name is not a catalog reference. The caller checked the user's claims already.
   */
  async ensure (ref: string): Promise<LocalCatalogImage | undefined> {
    if (!this.knows(ref)) return undefined
    return await this.pull(ref)
  }

  /** The version a reference means for this host, checked for revocation; no pull. */
  async resolveHere (ref: string): Promise<{ name: string, version: CatalogVersion } | undefined> {
    if (!this.knows(ref)) return undefined
    const { version } = await this.resolveFor(ref, undefined)
    return { name: cachedName(version.image, version.version), version }
  }

  /**
   * The smallest host a version may run on: its own minimum host, else its image's (which
   * `PUT /api/v1/catalog/{id}` edits); undefined for no minimum.
   */
  minHostOf (version: CatalogVersion): MinHost | undefined {
    return version.minHost ?? this.records.image(version.image)?.minHost
  }

  /** Versions this host could pull for its arch, as `<image>:<version>` with their guest. */
  async pullable (): Promise<Array<{ name: string, version: CatalogVersion }>> {
    const arch = await this.c.hostArch()
    const revokedImages = new Set(this.records.images().filter(i => i.revoked != null).map(i => i.id))
    return this.records.allVersions()
      .filter(v => v.arch === arch && v.revoked == null && !revokedImages.has(v.image) && this.init.providers[v.provider] != null)
      .map(v => ({ name: cachedName(v.image, v.version), version: v }))
  }

  // ---- jobs ----

  startPull (ref: string, user: CatalogUser, arch?: string): CatalogJob {
    // Resolve and authorise now, so a refusal is the request's answer, not a failed job.
    const resolved = this.records.resolve(ref, arch != null ? normaliseArch(arch) : undefined)
    checkAccess(user, resolved.image, resolved.version)
    return this.startJob('pull', ref, user.subject, async job => {
      const { version } = await this.resolveFor(ref, user, arch)
      job.progress.image = version.image
      job.progress.version = version.version
      job.progress.arch = version.arch
      const image = await this.pullResolved(version, job)
      return { name: image.name, path: image.path, arch: image.version.arch }
    })
  }

  /** Pulls a resolved version as a job (prefetch: `swarm` names the hosts pulling it together). */
  startPullFor (version: CatalogVersion, by: string, swarm?: string[]): CatalogJob {
    return this.startJob('pull', cachedName(version.image, version.version), by, async job => {
      job.progress.arch = version.arch
      const image = await this.pullResolved(version, job, undefined, undefined, swarm)
      return { name: image.name, path: image.path, arch: image.version.arch }
    })
  }

  startPush (options: PushOptions, by: string): CatalogJob {
    checkImageId(options.image)
    checkVersion(options.version)
    return this.startJob('push', cachedName(options.image, options.version), by, async job => await this.push(options, by, p => { Object.assign(job.progress, p) }, job.id))
  }

  /** Imports Parallels DevOps Service packs from a provider (see import-pds.ts). */
  startImport (options: ImportOptions, by: string): CatalogJob {
    const source = this.repository(options.provider).provider
    if (options.to != null) this.repository(options.to)
    return this.startJob('import', `${options.provider}:${options.prefix}`, by, async job => {
      const packs = { total: 0, done: 0 } as NonNullable<TransferProgress['packs']>
      job.progress.packs = packs
      const tmpDir = join(this.init.cacheDir, 'import-tmp', job.id)
      try {
        const outcome: ImportOutcome = await importPdsPacks({
          logger: this.log,
          source,
          tmpDir,
          signal: this.abort.signal,
          exists: (id, version, arch) => this.records.version(id, version, arch) != null,
          push: async push => await this.push({ ...push, provider: push.provider ?? options.to ?? options.provider }, by, p => {
            job.progress.chunksDone = p.chunksDone
            job.progress.chunksReused = p.chunksReused
            job.progress.bytesDone = p.bytesDone
            job.progress.bytesTotal = p.bytesTotal
          }),
          revoke: async (id, version, arch, reason) => { await this.setRevoked(id, { version, arch }, reason, by) },
          onPack: (meta, step) => {
            if (packs.current !== meta) packs.done += packs.current != null ? 1 : 0
            packs.current = meta
            packs.step = step
          }
        }, options)
        packs.total = outcome.imported.length + outcome.skipped.length + outcome.failed.length
        packs.done = packs.total
        delete packs.current
        return outcome
      } finally {
        await removeTree(tmpDir)
      }
    })
  }

  job (id: string): CatalogJob {
    const job = this.jobs.get(id)
    if (job == null) throw new CatalogJobNotFoundError(`no catalog job ${id} on this node (jobs are kept in memory on the node that runs them, the last ${MAX_JOBS_KEPT})`, { job: id })
    return job
  }

  listJobs (): CatalogJob[] {
    return [...this.jobs.values()].reverse()
  }

  /** Resolves when the job ends (with the job, failed or not); `rethrow` throws a failed job's error instead. */
  async waitForJob (id: string, options: { signal?: AbortSignal, rethrow?: boolean } = {}): Promise<CatalogJob> {
    const job = this.job(id)
    const { done, failure } = job as CatalogJob & { done?: Promise<void>, failure?: Error }
    const signal = options.signal
    if (done != null) {
      await (signal == null ? done : Promise.race([done, new Promise<void>((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }))]))
    }
    const failed = failure ?? (job as CatalogJob & { failure?: Error }).failure
    if (options.rethrow === true && failed != null) throw failed
    return job
  }

  private startJob (kind: CatalogJob['kind'], ref: string, by: string, run: (job: CatalogJob) => Promise<unknown>): CatalogJob {
    const [image = '', version = ''] = ref.split(':')
    const job: CatalogJob = { id: randomUUID(), kind, ref, by, state: 'running', progress: this.newProgress(kind, image, version, ''), startedAt: this.now() }
    this.jobs.set(job.id, job)
    while (this.jobs.size > MAX_JOBS_KEPT) {
      const oldest = [...this.jobs.values()].find(j => j.state !== 'running')
      if (oldest == null) break
      this.jobs.delete(oldest.id)
    }
    const done = run(job).then(result => {
      job.state = 'done'
      job.result = result
      job.progress.phase = 'done'
    }, (err: Error) => {
      job.state = 'failed'
      job.error = { name: err.name, message: err.message }
      Object.defineProperty(job, 'failure', { value: err, enumerable: false })
      job.progress.phase = 'failed'
      job.progress.error = err.message
      if (!this.abort.signal.aborted) this.log.warn({ job: job.id, kind, ref, err: err.message }, 'catalog job failed')
    }).finally(() => { job.finishedAt = this.now() })
    Object.defineProperty(job, 'done', { value: done, enumerable: false })
    return job
  }

  // ---- helpers ----

  private newProgress (kind: TransferProgress['kind'], image: string, version: string, arch: string): TransferProgress {
    return { kind, image, version, arch, phase: 'resolving', chunksTotal: 0, chunksDone: 0, bytesTotal: 0, bytesDone: 0, bytesFromPeers: 0, bytesFromProvider: 0, chunksReused: 0, corruptChunks: 0 }
  }

  /** Sends progress events at most every progressIntervalMs, and always on phase changes. */
  private emitter (progress: TransferProgress, onProgress: ((p: TransferProgress) => void) | undefined, jobId: string | undefined): (force: boolean) => void {
    let last = 0
    const every = this.init.progressIntervalMs ?? 250
    return force => {
      onProgress?.(progress)
      const now = this.c.clock()
      if (!force && now - last < every) return
      last = now
      this.dispatchEvent(new CustomEvent('progress', { detail: { ...progress, ...(jobId != null ? { job: jobId } : {}) } }))
    }
  }

  private changed (reason: string): void {
    this.dispatchEvent(new CustomEvent('changed', { detail: { reason } }))
  }

  private now (): string {
    return new Date(this.c.clock()).toISOString()
  }
}

/** Errors a retry would not fix: the pull is dropped rather than resumed at the next start. */
function isFinal (err: unknown): boolean {
  return err instanceof CatalogAccessDeniedError || err instanceof ImageRevokedError || err instanceof CatalogImageNotFoundError ||
    err instanceof CatalogVersionNotFoundError || err instanceof ChunkCorruptError || err instanceof ProviderConfigError
}

const mib = (bytes: number): number => Math.round(bytes / 1048576)

/** Plain bytes in stored form, uncompressed (what peers get from an unpacked image). */
function rawBlob (plain: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from([CODEC_RAW]), ...plain])
}
