/**
 * bench/catalog-chunking: the local hot path of the catalog, measured on a synthetic VM disk (a mix
 * of incompressible data, compressible text-like data and zero runs, seeded so every run measures
 * the same bytes):
 *   - content-defined chunking alone, and SHA-256 alone (MB/s, one core);
 *   - pack (chunk + hash + zstd + write to a chunk store) and unpack (read, verify, write files);
 *   - delta: change `--change` percent of the disk in `--regions` places, pack the new version into
 *     the same store and report how many stored bytes were new (what a push or a pull transfers).
 * Prints figures; asserts nothing.
 *
 *   node bench/catalog-chunking.ts [--size-mib 1024] [--change 5] [--regions 20]
 */
import { mkdtemp, mkdir, rm, writeFile, open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { chunkLengths, DEFAULT_CHUNKING } from '../src/catalog/chunker.ts'
import { sha256Hex } from '../src/catalog/blob.ts'
import { ChunkStore } from '../src/catalog/chunk-store.ts'
import { packFolder, type BlobSink } from '../src/catalog/pack.ts'
import { unpackBundle, removeTree } from '../src/catalog/unpack.ts'

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' }, change: { type: 'string', default: '5' }, regions: { type: 'string', default: '20' } } })
const sizeMiB = Math.max(16, Math.min(8192, Number(values['size-mib'])))
const changePct = Math.max(0.1, Math.min(50, Number(values.change)))
const regions = Math.max(1, Math.min(10_000, Number(values.regions)))
const MiB = 1024 * 1024

function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Fills buf with 1 MiB stretches: 45% random, 35% text-like, 20% zeros. */
function fillDisk (buf: Buffer, seed: number): void {
  const random = prng(seed)
  const words = ['kernel', 'module', 'library', 'usr', 'share', 'locale', 'config', 'xcode', 'swift', 'framework', '\n', ' ', '/', '0x1f', '{', '}']
  for (let off = 0; off < buf.length; off += MiB) {
    const end = Math.min(off + MiB, buf.length)
    const kind = random()
    if (kind < 0.45) {
      for (let i = off; i < end; i++) buf[i] = (random() * 256) | 0
    } else if (kind < 0.8) {
      let i = off
      while (i < end) i += Math.max(1, buf.write(words[Math.floor(random() * words.length)], i))
    } else buf.fill(0, off, end)
  }
}

function rate (bytes: number, ms: number): string {
  return `${(bytes / MiB / (ms / 1000)).toFixed(0)} MiB/s`
}

const logger = pino({ level: 'silent' })
const dir = await mkdtemp(join(tmpdir(), 'corral-bench-chunking-'))
try {
  const disk = Buffer.alloc(sizeMiB * MiB)
  fillDisk(disk, 42)
  const image = join(dir, 'image')
  await mkdir(image)
  await writeFile(join(image, 'image.json'), '{"name":"bench"}\n')
  await writeFile(join(image, 'disk.qcow2'), disk)
  console.log(`catalog chunking bench: ${sizeMiB} MiB synthetic disk (45% random, 35% text-like, 20% zeros), chunks ${DEFAULT_CHUNKING.minSize / 1024}/${DEFAULT_CHUNKING.avgSize / 1024}/${DEFAULT_CHUNKING.maxSize / 1024} KiB`)

  let t = performance.now()
  const lengths = chunkLengths(disk)
  let ms = performance.now() - t
  console.log(`  chunking only:   ${rate(disk.length, ms)} (${lengths.length} chunks, mean ${(disk.length / lengths.length / 1024).toFixed(0)} KiB)`)
  t = performance.now()
  for (let off = 0; off < disk.length; off += 4 * MiB) sha256Hex(disk.subarray(off, off + 4 * MiB))
  ms = performance.now() - t
  console.log(`  sha-256 only:    ${rate(disk.length, ms)}`)

  const store = new ChunkStore({ logger }, { dir: join(dir, 'store') })
  await store.open()
  let sentBytes = 0
  const sink: BlobSink = {
    has: async id => store.storedSize(id),
    put: async (id, stored) => { sentBytes += stored.length; await store.put(id, stored, { verified: true }) }
  }
  t = performance.now()
  const v1 = await packFolder(image, sink, { concurrency: 4 })
  ms = performance.now() - t
  console.log(`  pack v1:         ${rate(v1.size, ms)} (${Object.keys(v1.blobs).length} stored chunks, ${(v1.storedSize / MiB).toFixed(0)} MiB stored of ${(v1.size / MiB).toFixed(0)} MiB)`)

  await mkdir(join(dir, 'out'))
  t = performance.now()
  await unpackBundle(v1, join(dir, 'out'), { readChunk: async (id, size) => await store.readPlain(id, size), concurrency: 4 })
  ms = performance.now() - t
  console.log(`  unpack v1:       ${rate(v1.size, ms)} (verifying every chunk)`)
  await removeTree(join(dir, 'out'))

  // v2: changePct of the disk rewritten in `regions` places, as an image update would.
  const random = prng(7)
  const changed = Math.floor(disk.length * changePct / 100)
  const per = Math.max(1, Math.floor(changed / regions))
  const handle = await open(join(image, 'disk.qcow2'), 'r+')
  for (let r = 0; r < regions; r++) {
    const at = Math.floor(random() * (disk.length - per))
    const patch = Buffer.alloc(per)
    fillDisk(patch, 1000 + r)
    await handle.write(patch, 0, per, at)
  }
  await handle.close()
  sentBytes = 0
  t = performance.now()
  const v2 = await packFolder(image, sink, { concurrency: 4 })
  ms = performance.now() - t
  const newPlain = Object.entries(v2.blobs).filter(([id]) => v1.blobs[id] == null).reduce((n, [, b]) => n + b.size, 0)
  console.log(`  pack v2:         ${rate(v2.size, ms)}; ${changePct}% of the disk changed in ${regions} regions of ${(per / 1024).toFixed(0)} KiB`)
  console.log(`  delta v1 -> v2:  ${(sentBytes / MiB).toFixed(1)} MiB stored bytes new = ${(100 * sentBytes / v2.size).toFixed(1)}% of the image size, ${(100 * sentBytes / v2.storedSize).toFixed(1)}% of its stored size (${(newPlain / MiB).toFixed(1)} MiB plain in new chunks)`)
} finally {
  await removeTree(dir)
}
