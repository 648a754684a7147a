/**
 * How fast the mesh converges, with N in-process nodes on 127.0.0.1:
 *   - join: start one more node (bootstrapping from node 0) and time until every node lists it
 *     as an alive member, and until it lists every node;
 *   - record: write a record on a random node and time until every node can read it.
 * Medians over a few runs; prints figures and RSS, asserts nothing.
 *
 *   node bench/mesh-join.ts [nodes=3] [runs=5] [heartbeatMs=1000]
 *
 * All nodes share one process, so gossip work grows with N² here (each node handles every
 * heartbeat of every other); on real hosts each node only pays for N. Use a slower heartbeat for
 * large N on a small machine (e.g. `50 5 5000`).
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import type { MeshNode } from '../src/node/index.ts'
import { removeNodeFolders, startInProcessNode } from './in-process-mesh.ts'

const nodeCount = Number(process.argv[2] ?? 3)
const runs = Number(process.argv[3] ?? 5)
const heartbeatMs = Number(process.argv[4] ?? 1000)

/** Poll `check` every `everyMs` (checks are cheap single lookups, but they share the CPU with the nodes). */
async function until (check: () => boolean, everyMs = 5, deadlineMs = 180_000): Promise<number> {
  const start = performance.now()
  while (!check()) {
    if (performance.now() - start > deadlineMs) return Number.NaN
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
  return performance.now() - start
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}
const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(0)} MB`
const ms = (x: number): string => Number.isNaN(x) ? 'timeout' : `${x.toFixed(0)} ms`

const nodes: MeshNode[] = []
const t0 = performance.now()
const rssBefore = process.memoryUsage().rss
try {
  for (let i = 0; i < nodeCount; i++) {
    // Everyone bootstraps from node 0, plus one random earlier node, so node 0 is not the only hub.
    const seeds = i === 0 ? [] : [...nodes[0]!.self().multiaddrs, ...nodes[Math.floor(Math.random() * i)]!.self().multiaddrs]
    nodes.push(await startInProcessNode(`n${i}`, seeds, heartbeatMs))
  }
  const ids = nodes.map(n => n.self().peerId)
  // members() copies every member's state; poll it rarely.
  const formed = await until(() => nodes.every(n => n.members().filter(m => m.status === 'alive').length === nodeCount), 250)
  console.log(`${nodeCount} nodes started and fully formed in ${ms(performance.now() - t0)} (formation wait ${ms(formed)}); heartbeat ${heartbeatMs} ms`)

  // What the formed mesh costs at rest, and how late the event loop runs (all nodes share it).
  const cpuBefore = process.cpuUsage()
  await new Promise(resolve => setTimeout(resolve, 5000))
  const cpu = process.cpuUsage(cpuBefore)
  console.log(`idle: ${((cpu.user + cpu.system) / 1000 / 5000 * 100).toFixed(0)}% of one core for all ${nodeCount} nodes over 5 s`)
  const lag = monitorEventLoopDelay({ resolution: 10 })
  lag.enable()

  const seenByAll: number[] = []
  const seesAll: number[] = []
  for (let run = 0; run < runs; run++) {
    const start = performance.now()
    const joiner = await startInProcessNode(`joiner-${run}`, nodes[0]!.self().multiaddrs, heartbeatMs)
    const id = joiner.self().peerId
    const others = await until(() => nodes.every(n => n.member(id)?.status === 'alive'))
    seenByAll.push(Number.isNaN(others) ? Number.NaN : performance.now() - start)
    await until(() => ids.every(peer => joiner.member(peer)?.status === 'alive'), 20)
    seesAll.push(performance.now() - start)
    await joiner.stop()
  }
  console.log(`join: every node lists the new one after ${ms(median(seenByAll))} median (runs: ${seenByAll.map(x => x.toFixed(0)).join(', ')} ms)`)
  console.log(`join: the new node lists every node after ${ms(median(seesAll))} median (runs: ${seesAll.map(x => x.toFixed(0)).join(', ')} ms)`)

  const spread: number[] = []
  for (let run = 0; run < runs; run++) {
    const writer = nodes[Math.floor(Math.random() * nodes.length)]!
    const id = `bench-${run}`
    const start = performance.now()
    await writer.records.put('bench', id, { run, at: Date.now() })
    const waited = await until(() => nodes.every(n => n.records.get('bench', id) !== undefined))
    spread.push(Number.isNaN(waited) ? Number.NaN : performance.now() - start)
  }
  console.log(`record: readable on all ${nodeCount} nodes after ${ms(median(spread))} median (runs: ${spread.map(x => x.toFixed(0)).join(', ')} ms)`)
  lag.disable()
  // The histogram samples a 10 ms timer, so an idle loop reads 10 ms: subtract it.
  const late = (ns: number): string => `${Math.max(0, ns / 1e6 - 10).toFixed(0)} ms`
  console.log(`event loop lateness during the runs: mean ${late(lag.mean)}, p99 ${late(lag.percentile(99))}, max ${late(lag.max)}`)
  const m = nodes[0]!.metrics()
  console.log(`node 0 metrics: heartbeats ${m.heartbeatsReceived}, gossip accepted ${m.accepted.gossip}, dropped ${m.dropped.gossip + m.dropped.sync + m.dropped.rpc}, syncs ${m.syncRuns}`)
  const rss = process.memoryUsage().rss
  console.log(`rss: ${mb(rss)} (${mb((rss - rssBefore) / nodeCount)} per node above the ${mb(rssBefore)} baseline)`)
} finally {
  await Promise.all(nodes.map(async n => { await n.stop() }))
  await removeNodeFolders()
}
