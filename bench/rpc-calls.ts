/**
 * bench/rpc-calls: what one rpc call between two mesh nodes costs. Two nodes in this process on
 * 127.0.0.1; node a calls a handler on node b that answers at once, so the figures are the mesh's
 * own cost per call (framing, JSON, validation, yamux, noise, cluster-key encryption, both sides).
 *
 *   node bench/rpc-calls.ts [--sequential 2000] [--calls 20000] [--concurrency 64] [--body 512] [--runs 3]
 *
 *   sequential: --sequential calls one after another (latency-bound);
 *   concurrent: --calls calls with --concurrency in flight (throughput-bound).
 *
 * Each is run through request() (unary) and, to compare, through requestStream() on the same
 * handler (which still opens one stream per call). --body is the size of the request body's JSON
 * in bytes (a placement's sched.submit is about half a kilobyte). Prints calls/s and the CPU this
 * process spent per call (process.cpuUsage, user + system, both nodes together), the median of
 * --runs runs; asserts nothing. The machine is shared: compare figures from one sitting.
 */
import { parseArgs } from 'node:util'
import type { MeshNode } from '../src/node/index.ts'
import { removeNodeFolders, startInProcessNode } from './in-process-mesh.ts'

const { values } = parseArgs({
  options: {
    sequential: { type: 'string', default: '2000' },
    calls: { type: 'string', default: '20000' },
    concurrency: { type: 'string', default: '64' },
    body: { type: 'string', default: '512' },
    runs: { type: 'string', default: '3' }
  }
})
const sequential = Math.max(10, Math.min(1_000_000, Number(values.sequential)))
const calls = Math.max(10, Math.min(10_000_000, Number(values.calls)))
const concurrency = Math.max(1, Math.min(4096, Number(values.concurrency)))
const bodyBytes = Math.max(0, Math.min(512 * 1024, Number(values.body)))
const runs = Math.max(1, Math.min(20, Number(values.runs)))


type Call = (i: number) => Promise<unknown>

interface Figures { callsPerSecond: number, cpuMicrosPerCall: number }

async function measure (call: Call, total: number, inFlight: number): Promise<Figures> {
  const cpu = process.cpuUsage()
  const start = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: Math.min(inFlight, total) }, async () => {
    while (next < total) await call(next++)
  }))
  const seconds = (performance.now() - start) / 1000
  const used = process.cpuUsage(cpu)
  return { callsPerSecond: total / seconds, cpuMicrosPerCall: (used.user + used.system) / total }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const nodes: MeshNode[] = []
try {
  const a = await startInProcessNode('a', [])
  nodes.push(a)
  const b = await startInProcessNode('b', a.self().multiaddrs)
  nodes.push(b)
  const bId = b.self().peerId
  for (let i = 0; i < 600 && a.member(bId)?.status !== 'alive'; i++) await new Promise(resolve => setTimeout(resolve, 50))
  if (a.member(bId)?.status !== 'alive') throw new Error('the two nodes did not see each other within 30 s')

  b.handleRpc<{ n: number, pad: string }, { n: number, ok: boolean }>('bench.echo', body => ({ n: body.n, ok: true }))
  const pad = 'x'.repeat(bodyBytes)
  const unary: Call = async n => await a.request(bId, 'bench.echo', { n, pad })
  const streamed: Call = async n => {
    const frames = a.requestStream(bId, 'bench.echo', { n, pad })
    for (;;) if ((await frames.next()).done === true) return
  }

  // Warm up both paths (JIT, the channel, libp2p's stream bookkeeping).
  await measure(unary, 2000, 16)
  await measure(streamed, 2000, 16)

  console.log(`rpc calls between two nodes in one process (Node ${process.version}), body ${bodyBytes} B, median of ${runs} runs`)
  for (const [label, total, inFlight] of [['sequential', sequential, 1], [`concurrent x${concurrency}`, calls, concurrency]] as const) {
    for (const [kind, call] of [['request()', unary], ['requestStream()', streamed]] as const) {
      const results: Figures[] = []
      for (let r = 0; r < runs; r++) results.push(await measure(call, total, inFlight))
      const perSecond = median(results.map(f => f.callsPerSecond))
      const cpu = median(results.map(f => f.cpuMicrosPerCall))
      console.log(`  ${label.padEnd(16)} ${kind.padEnd(16)} ${String(total).padStart(7)} calls  ${perSecond.toFixed(0).padStart(7)} calls/s  ${cpu.toFixed(0).padStart(5)} µs CPU/call`)
    }
  }
} finally {
  await Promise.all(nodes.map(async n => { await n.stop() }))
  await removeNodeFolders()
}
