/**
 * bench/catalog-delta: what a new version costs when it changes a little of a large image. A
 * synthetic disk (`--size-mib`, mixed data) is pushed to S3 (s3rver on loopback) as 1.0 and pulled
 * by a host; then `--change` percent of it is rewritten in `--regions` places, pushed as 2.0 and
 * pulled by the same host. Reports the bytes the second push uploaded and the second pull
 * downloaded, against the image size (the catalog's target: at most 10% for a 5% change).
 * Prints figures; asserts nothing.
 *
 *   node bench/catalog-delta.ts [--size-mib 1024] [--change 5] [--regions 20] [--avg-kib 1024]
 * (--avg-kib tries another average chunk size: min a quarter of it, max four times it)
 */
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { DEFAULT_CHUNKING } from '../src/catalog/index.ts'
import { createS3Provider } from '../src/catalog/providers/s3.ts'
import { removeTree } from '../src/catalog/unpack.ts'
import { startS3Server, S3_TEST_CREDENTIALS } from '../test/helpers/storage-servers.ts'
import { catalogService, changeImage, MemoryRecords, MiB, writeImage } from './catalog-harness.ts'

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' }, change: { type: 'string', default: '5' }, regions: { type: 'string', default: '20' }, 'avg-kib': { type: 'string' } } })
const sizeMiB = Math.max(16, Math.min(16384, Number(values['size-mib'])))
const change = Math.max(0.1, Math.min(50, Number(values.change)))
const regions = Math.max(1, Math.min(100_000, Number(values.regions)))

const dir = await mkdtemp(join(tmpdir(), 'corral-bench-delta-'))
const s3 = await startS3Server(['corral'])
try {
  const provider = createS3Provider({ bucket: 'corral', prefix: 'catalog', endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, ...S3_TEST_CREDENTIALS })
  const records = new MemoryRecords()
  const image = await writeImage(join(dir, 'image'), sizeMiB, 3)
  const avg = values['avg-kib'] != null ? Number(values['avg-kib']) * 1024 : undefined
  const chunking = avg != null ? { ...DEFAULT_CHUNKING, minSize: avg / 4, avgSize: avg, maxSize: avg * 4 } : DEFAULT_CHUNKING
  const pusher = await catalogService(records, join(dir, 'pusher'), { providers: { s3: provider }, chunking })
  const host = await catalogService(records, join(dir, 'host'), { providers: { s3: provider } })
  const size = sizeMiB * MiB
  const pct = (n: number): string => `${(100 * n / size).toFixed(1)}%`

  let sent = 0
  const v1 = await pusher.push({ path: image, image: 'delta', version: '1.0' }, 'bench', p => { sent = p.bytesFromProvider })
  console.log(`catalog delta bench: ${sizeMiB} MiB image, chunks ${chunking.minSize / 1024}/${chunking.avgSize / 1024}/${chunking.maxSize / 1024} KiB, ${v1.chunks} chunks, ${(v1.storedSize / MiB).toFixed(0)} MiB stored; push 1.0 uploaded ${(sent / MiB).toFixed(0)} MiB`)
  let got = 0
  await host.pull('delta:1.0', {}, undefined, p => { got = p.bytesFromProvider })
  console.log(`  pull 1.0 downloaded ${(got / MiB).toFixed(0)} MiB (${pct(got)} of the image)`)

  await changeImage(image, sizeMiB, change, regions, 9)
  const v2 = await pusher.push({ path: image, image: 'delta', version: '2.0' }, 'bench', p => { sent = p.bytesFromProvider })
  const before = new Set(Object.keys((await pusher.manifestOf(v1)).blobs))
  const newChunks = Object.keys((await pusher.manifestOf(v2)).blobs).filter(id => !before.has(id)).length
  const pull2 = { bytes: 0, reused: 0, total: 0 }
  await host.pull('delta:2.0', {}, undefined, p => { pull2.bytes = p.bytesFromProvider; pull2.reused = p.chunksReused; pull2.total = p.chunksTotal })
  console.log(`  ${change}% of the disk rewritten in ${regions} regions of ${(size * change / 100 / regions / 1024).toFixed(0)} KiB`)
  console.log(`  push 2.0 uploaded   ${(sent / MiB).toFixed(1)} MiB = ${pct(sent)} of the image size (${newChunks} of ${v2.chunks} chunks are new)`)
  console.log(`  pull 2.0 downloaded ${(pull2.bytes / MiB).toFixed(1)} MiB = ${pct(pull2.bytes)} of the image size; ${pull2.reused} of ${pull2.total} chunks came from the host's cache`)
  await pusher.stop()
  await host.stop()
} finally {
  await s3.stop()
  await removeTree(dir)
}
