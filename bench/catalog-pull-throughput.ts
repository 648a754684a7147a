/**
 * bench/catalog-pull-throughput: a catalog pull from S3 against a plain @aws-sdk/client-s3
 * download of the same bytes from the same server (s3rver on loopback, its own process).
 *
 * The image (a synthetic disk, `--mix mixed` or incompressible `random`) is pushed once as a
 * catalog version and once as a single object. Then, each `--runs` times with an empty cache:
 *   - plain:  one GetObject of the object, streamed to a file (what a naive pull does);
 *   - ranged: the same object as 8 parallel ranged GetObjects (a stronger baseline);
 *   - pull:   the catalog pull (parallel chunk GETs, checked, decompressed, unpacked to a folder).
 * Throughput is image bytes made available per second; the ratio pull/plain is the figure the
 * catalog must keep at 80% or more. Prints figures; asserts nothing.
 *
 *   node bench/catalog-pull-throughput.ts [--size-mib 1024] [--mix mixed|random] [--runs 2] [--concurrency 8] [--avg-kib N]
 */
import { createWriteStream } from 'node:fs'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { createS3Provider, DEFAULT_CHUNKING } from '../src/catalog/index.ts'
import { removeTree } from '../src/catalog/unpack.ts'
import { startS3Server, S3_TEST_CREDENTIALS } from '../test/helpers/storage-servers.ts'
import { catalogService, MemoryRecords, MiB, rate, writeImage, type DiskMix } from './catalog-harness.ts'

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' }, mix: { type: 'string', default: 'mixed' }, runs: { type: 'string', default: '2' }, concurrency: { type: 'string', default: '8' }, 'avg-kib': { type: 'string' } } })
const sizeMiB = Math.max(16, Math.min(16384, Number(values['size-mib'])))
const mix = (values.mix === 'random' ? 'random' : 'mixed') as DiskMix
const runs = Math.max(1, Math.min(10, Number(values.runs)))
const concurrency = Math.max(1, Math.min(64, Number(values.concurrency)))

const dir = await mkdtemp(join(tmpdir(), 'corral-bench-pull-'))
const s3 = await startS3Server(['corral'])
try {
  const s3Init = { bucket: 'corral', endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, ...S3_TEST_CREDENTIALS, partSizeBytes: 64 * MiB }
  const provider = createS3Provider({ ...s3Init, prefix: 'catalog' })
  const records = new MemoryRecords()
  const image = await writeImage(join(dir, 'image'), sizeMiB, 1, mix)
  const avg = values['avg-kib'] != null ? Number(values['avg-kib']) * 1024 : undefined
  const chunking = avg != null ? { ...DEFAULT_CHUNKING, minSize: avg / 4, avgSize: avg, maxSize: avg * 4 } : DEFAULT_CHUNKING
  const pusher = await catalogService(records, join(dir, 'pusher'), { providers: { s3: provider }, concurrency, chunking })
  let t = performance.now()
  const version = await pusher.push({ path: image, image: 'bench', version: '1.0' }, 'bench')
  console.log(`catalog pull throughput bench: ${sizeMiB} MiB image (${mix}), chunks ${chunking.avgSize / 1024} KiB on average, ${version.chunks} chunks, ${(version.storedSize / MiB).toFixed(0)} MiB stored; push took ${((performance.now() - t) / 1000).toFixed(1)} s`)
  await pusher.stop()

  // The same bytes as one plain object.
  const plainKey = 'plain/disk.qcow2'
  const plainStore = createS3Provider({ ...s3Init, prefix: '' })
  await plainStore.put(plainKey, await readFile(join(image, 'disk.qcow2')))
  const client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3_TEST_CREDENTIALS })

  const results: Record<string, number[]> = { plain: [], ranged: [], pull: [] }
  // CPU this process spent (user + system), to compare the work apart from the machine's load.
  const cpu: Record<string, number[]> = { plain: [], ranged: [], pull: [] }
  const cpuNow = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }
  let c0 = 0
  for (let run = 0; run < runs; run++) {
    const out = join(dir, `plain-${run}`)
    t = performance.now()
    c0 = cpuNow()
    const res = await client.send(new GetObjectCommand({ Bucket: 'corral', Key: plainKey }))
    await pipeline(res.Body as Readable, createWriteStream(out))
    results.plain.push(performance.now() - t)
    cpu.plain.push(cpuNow() - c0)
    await rm(out)

    t = performance.now()
    c0 = cpuNow()
    const parts = 8
    const size = sizeMiB * MiB
    const handle = await open(out, 'w')
    await Promise.all(Array.from({ length: parts }, async (_, i) => {
      const start = Math.floor(size * i / parts)
      const end = Math.floor(size * (i + 1) / parts)
      const r = await client.send(new GetObjectCommand({ Bucket: 'corral', Key: plainKey, Range: `bytes=${start}-${end - 1}` }))
      const data = await (r.Body as { transformToByteArray: () => Promise<Uint8Array> }).transformToByteArray()
      await handle.write(data, 0, data.length, start)
    }))
    await handle.close()
    results.ranged.push(performance.now() - t)
    cpu.ranged.push(cpuNow() - c0)
    await rm(out)

    const puller = await catalogService(records, join(dir, `puller-${run}`), { providers: { s3: provider }, concurrency })
    t = performance.now()
    c0 = cpuNow()
    await puller.pull('bench:1.0')
    results.pull.push(performance.now() - t)
    cpu.pull.push(cpuNow() - c0)
    await puller.stop()
    await removeTree(join(dir, `puller-${run}`))
  }
  const best = (xs: number[]): number => Math.min(...xs)
  const bytes = sizeMiB * MiB
  const cpuOf = (k: string): string => `${(best(cpu[k]) / 1000).toFixed(2)} CPU-s`
  console.log(`  plain GetObject:        ${rate(bytes, best(results.plain))} (best of ${runs}: ${(best(results.plain) / 1000).toFixed(2)} s, ${cpuOf('plain')})`)
  console.log(`  8 ranged GetObjects:    ${rate(bytes, best(results.ranged))} (${(best(results.ranged) / 1000).toFixed(2)} s, ${cpuOf('ranged')})`)
  console.log(`  catalog pull:           ${rate(bytes, best(results.pull))} (${(best(results.pull) / 1000).toFixed(2)} s, ${cpuOf('pull')}, ${concurrency} segments at once, ${(version.storedSize / MiB).toFixed(0)} MiB on the wire, checked and unpacked)`)
  console.log(`  pull / plain:           ${(100 * best(results.plain) / best(results.pull)).toFixed(0)}%   pull / ranged: ${(100 * best(results.ranged) / best(results.pull)).toFixed(0)}%`)
} finally {
  await s3.stop()
  await removeTree(dir)
}
