/**
 * bench/catalog-pull-throughput: a catalog pull from S3 against a plain @aws-sdk/client-s3
 * download of the same bytes from the same server (s3rver on loopback, its own process).
 *
 * The image (a synthetic disk, `--mix mixed` or incompressible `random`) is pushed once as a
 * catalog version and once as a single object. Then, each `--runs` times with an empty cache:
 *   - plain:  one GetObject of the object, its body piped to a file with createWriteStream (what
 *             a user of the SDK writes to download an object; the bytes end on disk, as a pull's do);
 *   - ranged: the same object as 8 parallel ranged GetObjects, each read into memory and written at
 *             its offset in one file (a stronger baseline);
 *   - pull:   the catalog pull (parallel ranged reads of packs, every chunk checked, decompressed
 *             when stored compressed, written into the unpacked image folder).
 * Throughput is image bytes made available per second; the ratio pull/plain is the figure the
 * catalog must keep at 80% or more. Each figure is the median of the runs, with the CPU-seconds
 * this process (the client) and the s3rver process spent: the machine is shared, and CPU moves
 * far less with its load than wall time does. Prints figures; asserts nothing.
 *
 *   node bench/catalog-pull-throughput.ts [--size-mib 1024] [--mix mixed|random] [--runs 3] [--concurrency 8] [--segment-mib N] [--read-mib N] [--avg-kib N]
 */
import { createWriteStream, readFileSync } from 'node:fs'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { DEFAULT_CHUNKING } from '../src/catalog/index.ts'
import { createS3Provider } from '../src/catalog/providers/s3.ts'
import { removeTree } from '../src/catalog/unpack.ts'
import { startS3Server, S3_TEST_CREDENTIALS } from '../test/helpers/storage-servers.ts'
import { catalogService, MemoryRecords, MiB, rate, writeImage, type DiskMix } from './catalog-harness.ts'

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' }, mix: { type: 'string', default: 'mixed' }, runs: { type: 'string', default: '3' }, concurrency: { type: 'string', default: '8' }, 'segment-mib': { type: 'string' }, 'read-mib': { type: 'string' }, 'avg-kib': { type: 'string' } } })
const sizeMiB = Math.max(16, Math.min(16384, Number(values['size-mib'])))
const mix = (values.mix === 'random' ? 'random' : 'mixed') as DiskMix
const runs = Math.max(1, Math.min(10, Number(values.runs)))
const concurrency = Math.max(1, Math.min(64, Number(values.concurrency)))
const segmentBytes = values['segment-mib'] != null ? Math.max(1, Number(values['segment-mib'])) * MiB : undefined
const readBytes = values['read-mib'] != null ? Math.max(1, Number(values['read-mib'])) * MiB : undefined

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

  const kinds = ['plain', 'ranged', 'pull'] as const
  type Kind = typeof kinds[number]
  const wall: Record<Kind, number[]> = { plain: [], ranged: [], pull: [] }
  // CPU (user + system) of this process, the client, and of the s3rver process.
  const cpu: Record<Kind, number[]> = { plain: [], ranged: [], pull: [] }
  const serverCpu: Record<Kind, number[]> = { plain: [], ranged: [], pull: [] }
  const cpuNow = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }
  const serverNow = (): number => {
    const fields = readFileSync(`/proc/${s3.child.pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) * 10
  }
  const measure = async (kind: Kind, run: () => Promise<void>): Promise<void> => {
    const t0 = performance.now()
    const c0 = cpuNow()
    const s0 = serverNow()
    await run()
    wall[kind].push(performance.now() - t0)
    cpu[kind].push(cpuNow() - c0)
    serverCpu[kind].push(serverNow() - s0)
  }
  for (let run = 0; run < runs; run++) {
    const out = join(dir, `plain-${run}`)
    await measure('plain', async () => {
      const res = await client.send(new GetObjectCommand({ Bucket: 'corral', Key: plainKey }))
      await pipeline(res.Body as Readable, createWriteStream(out))
    })
    await rm(out)

    await measure('ranged', async () => {
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
    })
    await rm(out)

    const puller = await catalogService(records, join(dir, `puller-${run}`), { providers: { s3: provider }, concurrency, ...(segmentBytes != null ? { segmentBytes } : {}), ...(readBytes != null ? { readBytes } : {}) })
    await measure('pull', async () => { await puller.pull('bench:1.0') })
    await puller.stop()
    await removeTree(join(dir, `puller-${run}`))
    console.log(`  run ${run + 1}: ${kinds.map(k => `${k} ${(wall[k][run] / 1000).toFixed(2)} s (${(cpu[k][run] / 1000).toFixed(2)} + ${(serverCpu[k][run] / 1000).toFixed(2)} CPU-s)`).join(', ')}`)
  }
  const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }
  const bytes = sizeMiB * MiB
  const line = (k: Kind): string => `${rate(bytes, median(wall[k]))} (${(median(wall[k]) / 1000).toFixed(2)} s; CPU-s client ${(median(cpu[k]) / 1000).toFixed(2)}, server ${(median(serverCpu[k]) / 1000).toFixed(2)})`
  console.log(`  medians of ${runs} runs:`)
  console.log(`  plain GetObject to file: ${line('plain')}`)
  console.log(`  8 ranged GetObjects:     ${line('ranged')}`)
  console.log(`  catalog pull:            ${line('pull')}, ${concurrency} reads of up to ${((readBytes ?? 32 * MiB) / MiB).toFixed(0)} MiB at once (segments of ${((segmentBytes ?? 8 * MiB) / MiB).toFixed(0)} MiB), ${(version.storedSize / MiB).toFixed(0)} MiB on the wire, checked and unpacked`)
  const ratios = Array.from({ length: runs }, (_, i) => wall.plain[i] / wall.pull[i])
  console.log(`  pull / plain:            ${(100 * median(wall.plain) / median(wall.pull)).toFixed(0)}% (per run: ${ratios.map(r => `${(100 * r).toFixed(0)}%`).join(', ')})   pull / ranged: ${(100 * median(wall.ranged) / median(wall.pull)).toFixed(0)}%`)
  console.log(`  client CPU pull / plain: ${(100 * median(cpu.pull) / median(cpu.plain)).toFixed(0)}%`)
} finally {
  await s3.stop()
  await removeTree(dir)
}
