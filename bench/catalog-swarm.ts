/**
 * bench/catalog-swarm: how much of a new image `--hosts` hosts read from the bucket when they all
 * pull it at once, peer to peer over the mesh. In-process mesh nodes on loopback, each with its own
 * catalog cache; s3rver (its own process) is the bucket. The image (`--size-mib`, mixed data) is
 * pushed by one more node that keeps no copy, so every byte starts in the bucket. Two rounds:
 *   - prefetch: one call names the whole swarm (POST /api/v1/catalog/{id}/prefetch);
 *   - independent: every host pulls on its own at the same moment (as when VMs land on them),
 *     finding the others through their announcements.
 * Reports bytes read from the bucket (the catalog's target: at most 1.5 GiB for 5 hosts and a
 * 1 GiB image), bytes between peers, and wall time. Prints figures; asserts nothing.
 *
 *   node bench/catalog-swarm.ts [--hosts 5] [--size-mib 1024]
 */
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { CatalogPeers, CatalogService } from '../src/catalog/index.ts'
import { createS3Provider } from '../src/catalog/providers/s3.ts'
import { removeTree } from '../src/catalog/unpack.ts'
import { MeshFixture } from '../test/node/fixture.ts'
import { startS3Server, S3_TEST_CREDENTIALS } from '../test/helpers/storage-servers.ts'
import { logger, MiB, writeImage } from './catalog-harness.ts'

const { values } = parseArgs({ options: { hosts: { type: 'string', default: '5' }, 'size-mib': { type: 'string', default: '1024' } } })
const hostCount = Math.max(2, Math.min(20, Number(values.hosts)))
const sizeMiB = Math.max(16, Math.min(16384, Number(values['size-mib'])))

const dir = await mkdtemp(join(tmpdir(), 'corral-bench-swarm-'))
const s3 = await startS3Server(['corral'])
const mesh = new MeshFixture()
const admin = { subject: 'bench', claims: new Set(['catalog:write']), roles: [] }
try {
  const provider = createS3Provider({ bucket: 'corral', prefix: 'catalog', endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, ...S3_TEST_CREDENTIALS })
  const nodes: Array<{ catalog: CatalogService, peers: CatalogPeers }> = []
  for (let i = 0; i <= hostCount; i++) {
    const node = i === 0 ? await mesh.node({ heartbeatMs: 500, suspectAfterMs: 5000, deadAfterMs: 15000 }) : await mesh.joined({ heartbeatMs: 500, suspectAfterMs: 5000, deadAfterMs: 15000 })
    if (i === 0) await node.mesh.start()
    const catalog = new CatalogService({ logger, records: node.mesh.records, clock: Date.now, hostArch: async () => 'x86_64' }, {
      cacheDir: join(dir, `node-${i}`), cacheMaxBytes: 64 * 1024 * MiB, providers: { s3: provider }, concurrency: 8, cacheOnPush: false
    })
    await catalog.start()
    const peers = new CatalogPeers({
      mesh: node.mesh, service: catalog, logger, clock: Date.now,
      hosts: () => node.mesh.members().filter(m => m.status === 'alive').map(m => ({ peerId: m.peerId, name: m.nodeName, labels: { role: m.nodeName === 'n0' ? 'pusher' : 'host' } }))
    })
    await peers.start()
    nodes.push({ catalog, peers })
  }
  const [pusher, ...hosts] = nodes
  const deadline = Date.now() + 60_000
  while (mesh.nodes.some(n => n.mesh.members().filter(m => m.status === 'alive').length < nodes.length)) {
    if (Date.now() > deadline) throw new Error('the mesh did not form within 60 s')
    await new Promise(resolve => setTimeout(resolve, 100))
  }

  const image = await writeImage(join(dir, 'image'), sizeMiB, 5)
  const round = async (label: string, version: string, start: () => Promise<void>): Promise<void> => {
    const v = await pusher.catalog.push({ path: image, image: 'swarm', version }, 'bench')
    while (hosts.some(h => h.catalog.records.version('swarm', version, 'x86_64') == null)) await new Promise(resolve => setTimeout(resolve, 50))
    const before = hosts.map(h => h.catalog.metrics())
    const t = performance.now()
    await start()
    while (!hosts.every(h => h.catalog.localImages().some(i => i.name === `swarm:${version}`))) {
      const failed = hosts.flatMap(h => h.catalog.listJobs().filter(j => j.state === 'failed'))
      if (failed.length > 0) throw new Error(`a pull failed: ${failed[0].error?.message ?? ''}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const seconds = (performance.now() - t) / 1000
    const after = hosts.map(h => h.catalog.metrics())
    const bucket = after.map((m, i) => m.providerBytesRead - before[i].providerBytesRead)
    const peersIn = after.reduce((n, m, i) => n + m.peerBytesIn - before[i].peerBytesIn, 0)
    const total = bucket.reduce((a, b) => a + b, 0)
    console.log(`  ${label.padEnd(12)} bucket read ${(total / MiB).toFixed(0)} MiB = ${(total / v.storedSize).toFixed(2)}x the stored image (${(total / (1024 * MiB)).toFixed(2)} GiB; per host ${bucket.map(b => (b / MiB).toFixed(0)).join('/')} MiB), ${(peersIn / MiB).toFixed(0)} MiB between peers, ${seconds.toFixed(1)} s for all ${hosts.length}`)
  }
  const stored = (await pusher.catalog.push({ path: image, image: 'probe', version: '0' }, 'bench')).storedSize
  console.log(`catalog swarm bench: ${hostCount} hosts pull one new ${sizeMiB} MiB image (${(stored / MiB).toFixed(0)} MiB stored) from s3rver at once`)
  await round('prefetch', '1.0', async () => {
    const result = await pusher.peers.prefetch('swarm:1.0', { hostLabels: { role: 'host' } }, admin)
    if (result.hosts.some(h => h.status !== 'started')) throw new Error(`prefetch did not start everywhere: ${JSON.stringify(result.hosts)}`)
  })
  // A new version of different bytes, so nothing is cached: each host pulls on its own.
  await writeImage(image, sizeMiB, 6)
  await round('independent', '2.0', async () => {
    for (const h of hosts) h.catalog.startPull('swarm:2.0', admin)
  })
  for (const n of nodes) { await n.peers.stop(); await n.catalog.stop() }
} finally {
  await mesh.cleanup()
  await s3.stop()
  await removeTree(dir)
}
