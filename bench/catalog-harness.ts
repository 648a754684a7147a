/**
 * Shared pieces of the catalog benches: a synthetic VM disk written to an image folder (seeded, so
 * every run measures the same bytes), catalog services on an in-memory record store, and the s3rver
 * process from the test helpers.
 */
import { mkdir, open, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import type { MeshRecord, RecordStore } from '../src/node/index.ts'
import { CatalogService, type CatalogInit } from '../src/catalog/index.ts'

export const MiB = 1024 * 1024
export const logger = pino({ level: process.env.CORRAL_BENCH_LOG ?? 'silent' })

export function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export type DiskMix = 'mixed' | 'random'

/** Fills buf in 1 MiB stretches: mixed = 45% random, 35% text-like, 20% zeros; random = all random. */
export function fillDisk (buf: Buffer, seed: number, mix: DiskMix = 'mixed'): void {
  const random = prng(seed)
  const words = ['kernel', 'module', 'library', 'usr', 'share', 'locale', 'config', 'xcode', 'swift', 'framework', '\n', ' ', '/', '0x1f', '{', '}']
  for (let off = 0; off < buf.length; off += MiB) {
    const end = Math.min(off + MiB, buf.length)
    const kind = mix === 'random' ? 0 : random()
    if (kind < 0.45) {
      for (let i = off; i + 4 <= end; i += 4) buf.writeUInt32LE((random() * 4294967296) >>> 0, i)
    } else if (kind < 0.8) {
      let i = off
      while (i < end) i += Math.max(1, buf.write(words[Math.floor(random() * words.length)], i))
    } else buf.fill(0, off, end)
  }
}

/** An image folder with image.json and a disk of sizeMiB, written 64 MiB at a time. */
export async function writeImage (folder: string, sizeMiB: number, seed: number, mix: DiskMix = 'mixed'): Promise<string> {
  await mkdir(folder, { recursive: true })
  await writeFile(join(folder, 'image.json'), JSON.stringify({ name: 'bench', arch: 'x86_64', os: 'linux', disk: 'disk.qcow2', defaultCpus: 1, defaultMemoryMiB: 512, agent: 'none' }))
  const handle = await open(join(folder, 'disk.qcow2'), 'w')
  const piece = Buffer.alloc(64 * MiB)
  try {
    for (let done = 0, i = 0; done < sizeMiB * MiB; i++) {
      const n = Math.min(piece.length, sizeMiB * MiB - done)
      fillDisk(piece, seed * 1000 + i, mix)
      await handle.write(piece, 0, n, done)
      done += n
    }
  } finally {
    await handle.close()
  }
  return folder
}

/** Rewrites `percent` of the disk in `regions` places (an image update). */
export async function changeImage (folder: string, sizeMiB: number, percent: number, regions: number, seed: number, mix: DiskMix = 'mixed'): Promise<void> {
  const random = prng(seed)
  const size = sizeMiB * MiB
  const per = Math.max(1, Math.floor(size * percent / 100 / regions))
  const handle = await open(join(folder, 'disk.qcow2'), 'r+')
  try {
    for (let r = 0; r < regions; r++) {
      const at = Math.floor(random() * (size - per))
      const patch = Buffer.alloc(per)
      fillDisk(patch, seed * 7919 + r, mix)
      await handle.write(patch, 0, per, at)
    }
  } finally {
    await handle.close()
  }
}

/** Cluster records for services that share no mesh (one process, one map). */
export class MemoryRecords implements RecordStore {
  private readonly data = new Map<string, Map<string, unknown>>()
  async put<T> (collection: string, id: string, value: T): Promise<void> {
    let c = this.data.get(collection)
    if (c == null) this.data.set(collection, c = new Map())
    c.set(id, JSON.parse(JSON.stringify(value)))
  }

  async delete (collection: string, id: string): Promise<boolean> { return this.data.get(collection)?.delete(id) ?? false }
  get<T> (collection: string, id: string): T | undefined { return structuredClone(this.data.get(collection)?.get(id)) as T | undefined }
  list<T> (collection: string): Array<MeshRecord<T>> {
    return [...(this.data.get(collection) ?? new Map()).entries()].map(([id, value]) => ({ collection, id, value: structuredClone(value) as T, updatedBy: 'bench', updatedAt: 0 }))
  }
}

export async function catalogService (records: RecordStore, cacheDir: string, init: Partial<CatalogInit> & Pick<CatalogInit, 'providers'>): Promise<CatalogService> {
  const service = new CatalogService({ logger, records, clock: Date.now, hostArch: async () => 'x86_64' }, {
    cacheDir, cacheMaxBytes: 64 * 1024 * MiB, concurrency: 8, cacheOnPush: false, ...init
  })
  await service.start()
  return service
}

export function rate (bytes: number, ms: number): string {
  return `${(bytes / MiB / (ms / 1000)).toFixed(0)} MiB/s`
}
