/**
 * Garbage collection of one provider: mark, then sweep. What is alive is every version the
 * provider describes (its `images/<id>/<version>/<arch>.json` documents, so a bucket is never
 * judged by a cluster that does not know it) and every version the catalog records name; their
 * manifests name the packs (and older per-chunk objects) that stay. Everything else goes, once it
 * is older than a grace period: a push writes its packs first, its manifest next and its version
 * last, so a push under way owns young objects that nothing references yet.
 *
 * A push also reuses packs of earlier versions, learnt from their manifests when it starts. So a
 * push announces itself with a lease (`leases/<id>.json`, refreshed while it runs), and while any
 * lease is fresh no pack or chunk object is removed; the lease is checked again before every batch
 * of deletions, and a push checks at its end that the packs it reused are still there.
 */
import type { BundleManifest } from './manifest.ts'
import { chunkKey, packKey, type Repository } from './repository.ts'
import type { ProviderCallOptions } from './providers/types.ts'
import type { CatalogVersion } from './types.ts'

/** A push refreshes its lease this often; one not refreshed for LEASE_TTL_MS is a crashed push's. */
export const LEASE_REFRESH_MS = 5 * 60_000
export const LEASE_TTL_MS = 15 * 60_000
/** Default grace: nothing younger than a day is removed. */
export const DEFAULT_GRACE_MS = 24 * 3600_000
/** Deletions between two looks at the leases. */
const BATCH = 50

export type GarbageKind = 'pack' | 'chunk' | 'manifest' | 'version-doc'

export interface GarbageItem {
  key: string
  kind: GarbageKind
  bytes: number
  /** Minutes since it was written, where the provider says. */
  ageMinutes?: number
  /** removed; would-remove (dry run); kept-young (within the grace period); kept-push (a push is under way); kept-orphan (a version document no catalog record names). */
  action: 'removed' | 'would-remove' | 'kept-young' | 'kept-push' | 'kept-orphan'
  /** For a version document: the version it describes. */
  version?: string
}

export interface PushLease {
  id: string
  image?: string
  version?: string
  /** Who pushes. */
  by?: string
  startedAt?: string
  refreshedAt?: string
}

export interface GarbageReport {
  provider: string
  dryRun: boolean
  graceMinutes: number
  /** What stays: versions (records and documents), their manifests, and the packs those use. */
  live: { versions: number, manifests: number, packs: number, packBytes: number }
  /** Every unreferenced object, with what was (or would be) done with it. */
  items: GarbageItem[]
  /** Bytes removed, or that would be with dryRun false. */
  bytes: number
  /** Pushes under way (fresh leases): while there is one, packs and chunks are only listed. */
  pushes: PushLease[]
  /** Live versions whose manifest is missing from the provider: they cannot be pulled. */
  missingManifests: string[]
}

export interface GarbageOptions extends ProviderCallOptions {
  dryRun: boolean
  graceMs: number
  /** Also remove version documents that no catalog record names (versions deleted where this provider was not configured). */
  forgetOrphans?: boolean
  now: number
  /** A manifest by digest: this node's copy if it has one, else the provider's. */
  manifest: (digest: string) => Promise<BundleManifest | undefined>
}

interface Listed { key: string, size: number, modifiedAt?: number }

export const leaseKey = (id: string): string => `leases/${id}.json`

/** Collects the garbage of one provider; `versions` are the catalog's records for it. */
export async function collectGarbage (repo: Repository, versions: CatalogVersion[], options: GarbageOptions): Promise<GarbageReport> {
  const { now, graceMs, dryRun } = options
  const list = async (prefix: string): Promise<Listed[]> => {
    const out: Listed[] = []
    for await (const o of repo.provider.list(prefix, options)) out.push(o)
    return out
  }
  const young = (o: Listed): boolean => o.modifiedAt == null || now - o.modifiedAt < graceMs
  const age = (o: Listed): { ageMinutes?: number } => (o.modifiedAt == null ? {} : { ageMinutes: Math.max(0, Math.floor((now - o.modifiedAt) / 60_000)) })
  const items: GarbageItem[] = []
  const report: GarbageReport = {
    provider: repo.provider.name, dryRun, graceMinutes: Math.round(graceMs / 60_000),
    live: { versions: 0, manifests: 0, packs: 0, packBytes: 0 }, items, bytes: 0, pushes: [], missingManifests: []
  }

  // ---- mark ----
  const liveManifests = new Set<string>()
  const recorded = new Set<string>()
  for (const v of versions) {
    recorded.add(`${v.image}/${v.version}/${v.arch}`)
    liveManifests.add(v.manifest)
  }
  const orphanDocs: Array<{ doc: Listed, version: string }> = []
  for (const doc of await list('images/')) {
    const name = doc.key.slice('images/'.length).replace(/\.json$/, '')
    let described: Partial<CatalogVersion> | undefined
    try {
      described = JSON.parse((await repo.provider.get(doc.key, options)).toString('utf8')) as Partial<CatalogVersion>
    } catch {
      described = undefined
    }
    const manifest = typeof described?.manifest === 'string' && /^[0-9a-f]{64}$/.test(described.manifest) ? described.manifest : undefined
    if (recorded.has(name) || manifest == null) {
      if (manifest != null) liveManifests.add(manifest)
      continue
    }
    // Described by the bucket but unknown to the catalog: kept unless asked (and then only once old).
    if (options.forgetOrphans === true && !young(doc)) orphanDocs.push({ doc, version: name })
    else {
      liveManifests.add(manifest)
      items.push({ key: doc.key, kind: 'version-doc', bytes: doc.size, ...age(doc), action: 'kept-orphan', version: name })
    }
  }
  report.live.versions = recorded.size + items.filter(i => i.action === 'kept-orphan').length

  // Unreferenced manifests go once old; young ones may belong to a push about to write its version.
  const manifestObjects = await list('manifests/')
  const deadManifests: Listed[] = []
  const marking = new Set(liveManifests)
  for (const m of manifestObjects) {
    const digest = m.key.slice('manifests/'.length).replace(/\.json$/, '')
    if (liveManifests.has(digest)) continue
    if (young(m)) {
      marking.add(digest)
      items.push({ key: m.key, kind: 'manifest', bytes: m.size, ...age(m), action: 'kept-young' })
    } else deadManifests.push(m)
  }
  const livePacks = new Set<string>()
  const liveChunks = new Set<string>()
  for (const digest of marking) {
    const manifest = await options.manifest(digest).catch(() => undefined)
    if (manifest == null) {
      if (liveManifests.has(digest)) report.missingManifests.push(digest)
      continue
    }
    for (const [id, b] of Object.entries(manifest.blobs)) {
      if (b.pack != null) livePacks.add(b.pack)
      else liveChunks.add(id)
    }
  }
  report.live.manifests = liveManifests.size - report.missingManifests.length

  // ---- sweep ----
  const pushesUnderWay = async (): Promise<PushLease[]> => {
    const fresh: PushLease[] = []
    for (const l of await list('leases/')) {
      const lease = await repo.provider.get(l.key, options).then(b => JSON.parse(b.toString('utf8')) as PushLease, () => undefined)
      const at = Date.parse(lease?.refreshedAt ?? '') || l.modifiedAt
      if (at == null || now - at < LEASE_TTL_MS) fresh.push({ ...lease, id: l.key.slice('leases/'.length).replace(/\.json$/, '') })
    }
    return fresh
  }
  report.pushes = await pushesUnderWay()

  const doomed: Array<{ item: GarbageItem, key: string }> = []
  for (const { doc, version } of orphanDocs) doomed.push({ key: doc.key, item: { key: doc.key, kind: 'version-doc', bytes: doc.size, ...age(doc), action: 'would-remove', version } })
  for (const m of deadManifests) doomed.push({ key: m.key, item: { key: m.key, kind: 'manifest', bytes: m.size, ...age(m), action: 'would-remove' } })
  const sweepData = async (prefix: string, kind: 'pack' | 'chunk', live: Set<string>, keyOf: (id: string) => string): Promise<void> => {
    for (const o of await list(prefix)) {
      const id = o.key.slice(o.key.lastIndexOf('/') + 1)
      if (live.has(id) || o.key !== keyOf(id)) {
        if (kind === 'pack' && live.has(id)) { report.live.packs++; report.live.packBytes += o.size }
        continue
      }
      if (young(o)) items.push({ key: o.key, kind, bytes: o.size, ...age(o), action: 'kept-young' })
      else if (report.pushes.length > 0) items.push({ key: o.key, kind, bytes: o.size, ...age(o), action: 'kept-push' })
      else doomed.push({ key: o.key, item: { key: o.key, kind, bytes: o.size, ...age(o), action: 'would-remove' } })
    }
  }
  await sweepData('packs/', 'pack', livePacks, packKey)
  await sweepData('chunks/', 'chunk', liveChunks, chunkKey)

  for (let i = 0; i < doomed.length; i++) {
    const { key, item } = doomed[i]
    items.push(item)
    if (dryRun) {
      report.bytes += item.bytes
      continue
    }
    // A push that started since: the packs it may build on stay (documents and manifests were
    // unreferenced already, and a push never builds on those).
    if ((item.kind === 'pack' || item.kind === 'chunk') && i % BATCH === 0 && report.pushes.length === 0) report.pushes = await pushesUnderWay()
    if ((item.kind === 'pack' || item.kind === 'chunk') && report.pushes.length > 0) {
      item.action = 'kept-push'
      continue
    }
    await repo.provider.delete(key, options)
    item.action = 'removed'
    report.bytes += item.bytes
  }
  items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  return report
}
