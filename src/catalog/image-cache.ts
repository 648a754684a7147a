/**
 * This host's cache: the chunk store plus the images unpacked from it, under one size limit with
 * least-recently-used eviction. An image some VM on this host was cloned from (running or not: a
 * qemu overlay needs its base) is never evicted, nor are the chunks of a pull under way.
 *
 *   <dir>/chunks/...                               the chunk store
 *   <dir>/images/<image>@<version>@<arch>/<root>   an unpacked bundle
 *   <dir>/images/<image>@<version>@<arch>/catalog.json   written last: the image is complete
 */
import { mkdir, readdir, readFile, rename, rm, utimes, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { ChunkStore } from './chunk-store.ts'
import { ZERO_CHUNK, type BundleManifest } from './manifest.ts'
import { removeTree } from './unpack.ts'
import { CacheFullError } from './errors.ts'
import type { CatalogVersion } from './types.ts'

export interface CachedImage {
  /** `<image>:<version>`: the name VMs and placement use. */
  name: string
  version: CatalogVersion
  /** The unpacked bundle folder (what the driver opens). */
  path: string
  /** Bytes it takes on disk (holes excluded). */
  diskBytes: number
  unpackedAt: string
  lastUsed: number
}

export interface ImageCacheComponents {
  logger: Logger
  clock: () => number
  store: ChunkStore
  /** Names of images that VMs on this host were created from. */
  inUse: () => Set<string>
}

export interface ImageCacheInit {
  dir: string
  maxBytes: number
}

const DONE = 'catalog.json'

export const cachedName = (image: string, version: string): string => `${image}:${version}`

export class ImageCache {
  private readonly c: ImageCacheComponents
  private readonly init: ImageCacheInit
  private readonly images = new Map<string, CachedImage>()

  constructor (components: ImageCacheComponents, init: ImageCacheInit) {
    this.c = components
    this.init = init
  }

  get imagesDir (): string {
    return join(this.init.dir, 'images')
  }

  private folder (v: { image: string, version: string, arch: string }): string {
    return join(this.imagesDir, `${v.image}@${v.version}@${v.arch}`)
  }

  /**
   * Indexes complete images; removes what a crash left half-unpacked, except the folders of pulls
   * that will resume (`keep`: `<image>@<version>@<arch>`).
   */
  async open (keep: ReadonlySet<string> = new Set()): Promise<void> {
    await mkdir(this.imagesDir, { recursive: true })
    this.images.clear()
    for (const name of await readdir(this.imagesDir)) {
      const folder = join(this.imagesDir, name)
      let record: { version: CatalogVersion, root: string, diskBytes: number, unpackedAt: string } | undefined
      try {
        record = JSON.parse(await readFile(join(folder, DONE), 'utf8'))
      } catch {}
      if (record?.version == null) {
        if (keep.has(name)) continue
        this.c.logger.info({ folder }, 'removing an image a previous run left half-unpacked')
        await removeTree(folder)
        continue
      }
      const lastUsed = (await stat(join(folder, DONE))).mtimeMs
      this.index({ name: cachedName(record.version.image, record.version.version), version: record.version, path: join(folder, record.root), diskBytes: record.diskBytes, unpackedAt: record.unpackedAt, lastUsed })
    }
  }

  private index (image: CachedImage): void {
    this.images.set(`${image.version.image}@${image.version.version}@${image.version.arch}`, image)
  }

  list (): CachedImage[] {
    return [...this.images.values()].sort((a, b) => a.name.localeCompare(b.name) || a.version.arch.localeCompare(b.version.arch))
  }

  get (image: string, version: string, arch: string): CachedImage | undefined {
    return this.images.get(`${image}@${version}@${arch}`)
  }

  touch (image: CachedImage): void {
    image.lastUsed = this.c.clock()
    const when = new Date(image.lastUsed)
    utimes(join(this.folder(image.version), DONE), when, when).catch(() => {})
  }

  /** The folder an image is unpacked in (created if missing; a resumable unpack keeps its staging there). */
  async stage (version: CatalogVersion): Promise<string> {
    const folder = this.folder(version)
    const stale = this.get(version.image, version.version, version.arch)
    if (stale != null) await this.remove(stale)
    await mkdir(folder, { recursive: true })
    return folder
  }

  /** Records an image whose bundle was just unpacked into stage()'s folder. */
  async commit (version: CatalogVersion, manifest: BundleManifest): Promise<CachedImage> {
    const folder = this.folder(version)
    const zeros = manifest.entries.reduce((n, e) => n + (e.type === 'file' ? e.chunks.filter(([id]) => id === ZERO_CHUNK).reduce((s, [, size]) => s + size, 0) : 0), 0)
    const diskBytes = manifest.size - zeros
    const unpackedAt = new Date(this.c.clock()).toISOString()
    const tmp = join(folder, `${DONE}.tmp`)
    await writeFile(tmp, JSON.stringify({ version, root: manifest.root, diskBytes, unpackedAt }, null, 2))
    await rename(tmp, join(folder, DONE))
    const image: CachedImage = { name: cachedName(version.image, version.version), version, path: join(folder, manifest.root), diskBytes, unpackedAt, lastUsed: this.c.clock() }
    this.index(image)
    return image
  }

  /** Drops an unpack that will not resume. */
  async discard (version: CatalogVersion): Promise<void> {
    if (this.get(version.image, version.version, version.arch) != null) return
    await removeTree(this.folder(version))
  }

  async remove (image: CachedImage): Promise<void> {
    this.images.delete(`${image.version.image}@${image.version.version}@${image.version.arch}`)
    // The marker goes first: a crash mid-delete leaves an incomplete folder, removed at next open.
    await rm(join(this.folder(image.version), DONE), { force: true })
    await removeTree(this.folder(image.version))
  }

  /** Evicts every chunk and image not in use or kept (an operator's "empty the cache"). */
  async prune (keep: { chunks?: ReadonlySet<string>, images?: ReadonlySet<string> } = {}): Promise<{ evictedChunks: number, evictedImages: string[] }> {
    const inUse = this.c.inUse()
    const result = { evictedChunks: 0, evictedImages: [] as string[] }
    for (const chunk of this.c.store.leastRecentlyUsed()) {
      if (keep.chunks?.has(chunk.id) === true) continue
      await this.c.store.remove(chunk.id)
      result.evictedChunks++
    }
    for (const image of [...this.images.values()]) {
      if (inUse.has(image.name) || keep.images?.has(image.name) === true) continue
      await this.remove(image)
      result.evictedImages.push(`${image.name} (${image.version.arch})`)
    }
    this.c.logger.info({ ...result, usedMiB: mib(this.usedBytes()) }, 'cache pruned')
    return result
  }

  /** Bytes held: chunks plus unpacked images. */
  usedBytes (): number {
    return this.c.store.totalBytes() + [...this.images.values()].reduce((n, i) => n + i.diskBytes, 0)
  }

  get maxBytes (): number {
    return this.init.maxBytes
  }

  /**
   * Evicts least recently used chunks and images until `needBytes` more fit under the limit.
   * Never evicts images in use, images in `keepImages`, or chunks in `keepChunks`. Throws
   * CacheFullError if everything evictable is not enough.
   */
  async makeRoom (needBytes: number, keep: { chunks?: ReadonlySet<string>, images?: ReadonlySet<string> } = {}): Promise<{ evictedChunks: number, evictedImages: string[] }> {
    const result = { evictedChunks: 0, evictedImages: [] as string[] }
    if (this.usedBytes() + needBytes <= this.init.maxBytes) return result
    const inUse = this.c.inUse()
    type Candidate = { lastUsed: number, bytes: number, evict: () => Promise<void> }
    const candidates: Candidate[] = []
    for (const chunk of this.c.store.leastRecentlyUsed()) {
      if (keep.chunks?.has(chunk.id) === true) continue
      candidates.push({ lastUsed: chunk.lastUsed, bytes: chunk.stored, evict: async () => { await this.c.store.remove(chunk.id); result.evictedChunks++ } })
    }
    for (const image of this.images.values()) {
      if (inUse.has(image.name) || keep.images?.has(image.name) === true) continue
      candidates.push({ lastUsed: image.lastUsed, bytes: image.diskBytes, evict: async () => { await this.remove(image); result.evictedImages.push(`${image.name} (${image.version.arch})`) } })
    }
    candidates.sort((a, b) => a.lastUsed - b.lastUsed)
    const evictable = candidates.reduce((n, c) => n + c.bytes, 0)
    if (this.usedBytes() - evictable + needBytes > this.init.maxBytes) {
      throw new CacheFullError(`the image cache (limit ${mib(this.init.maxBytes)} MiB, ${mib(this.usedBytes())} MiB used) cannot make room for ${mib(needBytes)} MiB: only ${mib(evictable)} MiB is not in use by VMs or pulls. Delete VMs, or raise catalog.cacheMaxMiB`, { needBytes, usedBytes: this.usedBytes(), maxBytes: this.init.maxBytes })
    }
    for (const candidate of candidates) {
      if (this.usedBytes() + needBytes <= this.init.maxBytes) break
      await candidate.evict()
    }
    if (result.evictedChunks > 0 || result.evictedImages.length > 0) this.c.logger.info({ ...result, usedMiB: mib(this.usedBytes()) }, 'evicted least recently used cache entries')
    return result
  }
}

const mib = (bytes: number): number => Math.ceil(bytes / 1048576)
