/**
 * bench/mesh-idle-cpu: what an idle mesh costs in CPU. N real `corral node` processes (sim driver)
 * on 127.0.0.1 join by bootstrap, and once every node sees every other alive the bench measures,
 * over --seconds, the CPU the node processes use with nothing to do: heartbeats, gossip, failure
 * detection, lease renewals. On a small machine this is what bounds how many nodes it can hold
 * and what is left for placements. Prints figures; asserts nothing.
 *
 *   node bench/mesh-idle-cpu.ts [--nodes 10] [--seconds 20]
 *
 * BENCH_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=DIR' profiles every node (written when it stops).
 */
import { cpus, loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { call, type NodeProcess } from '../test/helpers/node-process.ts'
import { meshCounts, startMesh } from './mesh-harness.ts'
import { cpuSeconds } from './proc-stats.ts'

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '10' }, seconds: { type: 'string', default: '20' } } })
const count = Math.max(2, Math.min(100, Number(values.nodes)))
const seconds = Math.max(1, Math.min(600, Number(values.seconds)))
const LIMIT_MS = Number(process.env.BENCH_LIMIT_MS ?? 600_000)
const env: Record<string, string> = {
  CORRAL_LOG_LEVEL: 'warn',
  // BENCH_ENV='CORRAL_X=1,CORRAL_Y=2' passes settings to every node (to compare configurations).
  ...Object.fromEntries((process.env.BENCH_ENV ?? '').split(',').filter(kv => kv.includes('=')).map(kv => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
  ...(process.env.BENCH_NODE_OPTIONS != null ? { NODE_OPTIONS: process.env.BENCH_NODE_OPTIONS } : {})
}
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const nodes: NodeProcess[] = []
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { void Promise.all(nodes.map(async n => { await n.destroy() })).finally(() => process.exit(130)) })
}
const total = async (): Promise<number> => nodes.map(n => cpuSeconds(n.child.pid as number)).reduce((a, b) => a + b, 0)
try {
  const started = performance.now()
  const { token } = await startMesh(count, env, nodes, LIMIT_MS)
  // What the nodes accept at rest, summed over the cluster (GET /api/v1/cluster's metrics).
  const counts = async (): Promise<Map<string, number>> => await meshCounts(nodes, token)
  console.log(`${count} node processes joined and see each other alive after ${((performance.now() - started) / 1000).toFixed(1)} s`)
  // Let start-up work settle before measuring: first syncs, catalog scans, and the full heartbeats
  // a node sends in its first 30 s (NEW_NODE_MS in src/node/mesh-node.ts).
  await sleep(Number(process.env.BENCH_SETTLE_MS ?? 32_000))
  const countsBefore = await counts()
  console.log(`direct connections per node: ${((countsBefore.get('connectedPeers') ?? 0) / count).toFixed(1)} on average`)
  countsBefore.delete('connectedPeers')
  const before = await total()
  const t0 = performance.now()
  await sleep(seconds * 1000)
  const used = await total() - before
  const wall = (performance.now() - t0) / 1000
  const countsAfter = await counts()
  countsAfter.delete('connectedPeers')
  const rates = [...countsAfter].map(([k, v]) => [k, (v - (countsBefore.get(k) ?? 0)) / wall / count] as const).filter(([, r]) => r > 0)
  console.log(`per node per second: ${rates.map(([k, r]) => `${k} ${r.toFixed(1)}`).join(', ')}`)
  console.log(`idle mesh of ${count} nodes: ${(used / wall).toFixed(3)} cores in all, ${(used / wall / count * 1000).toFixed(1)} ms of CPU per node per second, over ${wall.toFixed(1)} s; machine has ${cpus().length} cores, load average ${loadavg()[0]!.toFixed(1)}`)
} finally {
  await Promise.all(nodes.map(async n => { await n.destroy() }))
}
