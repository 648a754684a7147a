/**
 * Catalog services for tests: in-memory cluster records shared by the "nodes", a temp cache per
 * node, real providers (folder by default), and a provider wrapper that counts, corrupts or fails.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import type { MeshRecord, RecordStore } from '../../src/node/index.ts'
import { CatalogService, type CatalogInit } from '../../src/catalog/catalog-service.ts'
import { createFolderProvider } from '../../src/catalog/providers/folder.ts'
import type { StorageProvider } from '../../src/catalog/providers/types.ts'
import { removeTree } from '../../src/catalog/unpack.ts'
import type { CatalogUser } from '../../src/catalog/types.ts'

export const logger = pino({ level: process.env.CORRAL_TEST_LOG ?? 'silent' })

/** Cluster-wide records as one map every test "node" shares (replication is the mesh's business). */
export class MemoryRecords implements RecordStore {
  readonly data = new Map<string, Map<string, unknown>>()
  async put<T> (collection: string, id: string, value: T): Promise<void> {
    let c = this.data.get(collection)
    if (c == null) this.data.set(collection, c = new Map())
    c.set(id, JSON.parse(JSON.stringify(value)))
  }

  async delete (collection: string, id: string): Promise<boolean> { return this.data.get(collection)?.delete(id) ?? false }
  get<T> (collection: string, id: string): T | undefined {
    const v = this.data.get(collection)?.get(id)
    return v === undefined ? undefined : structuredClone(v) as T
  }

  list<T> (collection: string): Array<MeshRecord<T>> {
    return [...(this.data.get(collection) ?? new Map()).entries()].map(([id, value]) => ({ collection, id, value: structuredClone(value) as T, updatedBy: 'test', updatedAt: 0 }))
  }
}

export interface Counting extends StorageProvider {
  /** Keys read (get or ranged get), one entry per request. */
  gets: string[]
  /** Bytes read from packs and chunk objects. */
  chunkBytes: number
  /** Keys whose next n whole-object gets return flipped bytes. */
  corruptNext: Map<string, number>
  /** Chunks in packs whose next n reads return a flipped byte inside them. */
  corruptInPack: Array<{ pack: string, offset: number, stored: number, times: number }>
  /** Fails every read after this many (to interrupt a pull); undefined: never. */
  failAfter?: number
  /** Streamed ranges come in pieces of this many bytes (default: one piece). */
  pieceBytes?: number
  /** A streamed range stops with an error after this many bytes (a connection cut midway), once. */
  cutStreamAfter?: number
}

/** Wraps a provider: counts reads, corrupts or fails them on demand. */
export function counting (inner: StorageProvider): Counting {
  const gate = (key: string): void => {
    if (wrapper.failAfter != null && wrapper.gets.length >= wrapper.failAfter) throw new Error('simulated outage')
    wrapper.gets.push(key)
  }
  const isChunkData = (key: string): boolean => key.startsWith('packs/') || key.startsWith('chunks/')
  const wrapper: Counting = {
    ...inner,
    gets: [],
    chunkBytes: 0,
    corruptNext: new Map(),
    corruptInPack: [],
    get: async (key, options) => {
      gate(key)
      const data = await inner.get(key, options)
      if (isChunkData(key)) wrapper.chunkBytes += data.length
      const n = wrapper.corruptNext.get(key) ?? 0
      if (n > 0) {
        wrapper.corruptNext.set(key, n - 1)
        const bad = Buffer.from(data)
        bad[bad.length >> 1] ^= 0x55
        return bad
      }
      return data
    },
    getRange: async (key, start, end, options) => {
      gate(key)
      const data = await inner.getRange(key, start, end, options)
      if (isChunkData(key)) wrapper.chunkBytes += data.length
      let out = data
      for (const victim of wrapper.corruptInPack) {
        const at = victim.offset + (victim.stored >> 1)
        if (victim.times > 0 && key.endsWith(victim.pack) && at >= start && at < end) {
          victim.times--
          out = Buffer.from(out)
          out[at - start] ^= 0x55
        }
      }
      return out
    },
    // What a streaming provider does: the same bytes (counted, corrupted as above), in pieces.
    getRangeStream: async function * (key, start, end, options) {
      const data = await wrapper.getRange(key, start, end, options)
      const step = Math.max(1, wrapper.pieceBytes ?? data.length)
      for (let at = 0; at < data.length; at += step) {
        if (wrapper.cutStreamAfter != null && at + step > wrapper.cutStreamAfter) {
          wrapper.cutStreamAfter = undefined
          throw new Error('simulated connection reset')
        }
        yield data.subarray(at, at + step)
      }
    }
  }
  return wrapper
}

export const users = {
  admin: { subject: 'admin', claims: new Set(['catalog:read', 'catalog:write']), roles: ['admin'] } satisfies CatalogUser,
  ci: { subject: 'ci-bot', claims: new Set(['catalog:read', 'vm:write']), roles: ['ci'] } satisfies CatalogUser,
  builder: { subject: 'mac-builder', claims: new Set(['catalog:read']), roles: ['ci', 'macos-builders'] } satisfies CatalogUser
}

export class CatalogFixture {
  readonly records = new MemoryRecords()
  readonly dirs: string[] = []
  readonly services: CatalogService[] = []
  root = ''
  provider?: StorageProvider

  async setup (): Promise<void> {
    this.root = await mkdtemp(join(tmpdir(), 'corral-catalog-'))
    this.dirs.push(this.root)
    this.provider = createFolderProvider({ path: join(this.root, 'bucket') })
  }

  async service (name: string, init: Partial<CatalogInit> = {}, inUse: () => Set<string> = () => new Set()): Promise<CatalogService> {
    const service = new CatalogService({ logger: logger.child({ node: name }), records: this.records, clock: Date.now, hostArch: async () => 'x86_64', inUse }, {
      cacheDir: join(this.root, name),
      cacheMaxBytes: 1024 * 1024 * 1024,
      providers: { folder: this.provider as StorageProvider },
      concurrency: 4,
      chunking: { algorithm: 'fastcdc-gear32-v1', minSize: 4096, avgSize: 16384, maxSize: 65536 },
      segmentBytes: 64 * 1024,
      // One segment per provider read unless a test says otherwise.
      readBytes: 64 * 1024,
      packBytes: 256 * 1024,
      progressIntervalMs: 0,
      ...init
    })
    await service.start()
    this.services.push(service)
    return service
  }

  async cleanup (): Promise<void> {
    for (const s of this.services) await s.stop()
    for (const d of this.dirs) await removeTree(d)
  }
}

/** A qemu-style image folder with a pseudo-random "disk" of `size` bytes. */
export async function makeImage (dir: string, size: number, seed: number, name = 'guest'): Promise<string> {
  const folder = join(dir, name)
  await mkdir(folder, { recursive: true })
  await writeFile(join(folder, 'image.json'), JSON.stringify({ name: 'guest', arch: 'x86_64', os: 'linux', disk: 'base.qcow2', defaultCpus: 1, defaultMemoryMiB: 256, diskMiB: 64, agent: 'none', ports: [80] }))
  await writeFile(join(folder, 'base.qcow2'), pseudoRandom(size, seed))
  return folder
}

export function pseudoRandom (n: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(n)
  let x = seed | 1
  for (let i = 0; i < n; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; out[i] = x & 0xff }
  return out
}
