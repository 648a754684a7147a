/**
 * bench/mesh-nodes: how fast a mesh of N real `corral node` processes (sim driver, 127.0.0.1,
 * joined by bootstrap) converges:
 *   - join: one more node starts (joining through the first); from the moment its mesh is up
 *     (its "mesh node started" log line) until every one of the N nodes has logged "member
 *     joined" for it, and until it has logged all N itself;
 *   - record: a user created through the API of a random node (POST /api/v1/users); from the
 *     201 until GET /api/v1/users/NAME answers 200 on every node (polled on all nodes at once, so
 *     a figure is late by up to one polling round, printed beside it).
 * Medians over --runs; prints figures with the machine's load; asserts nothing.
 *
 *   node bench/mesh-nodes.ts [--nodes 3] [--runs 5]
 *
 * Each node process takes ~115 MB and, at rest, tens of ms of CPU a second (bench/mesh-idle-cpu):
 * on a 2-core machine 50 nodes take minutes to start and keep it busy, which the figures include.
 */
import { cpus, loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { startNodeProcess, call, type NodeProcess } from '../test/helpers/node-process.ts'
import { startMesh } from './mesh-harness.ts'

const { values } = parseArgs({ options: { nodes: { type: 'string', default: '3' }, runs: { type: 'string', default: '5' } } })
const count = Math.max(2, Math.min(100, Number(values.nodes)))
const runs = Math.max(1, Math.min(50, Number(values.runs)))
const LIMIT_MS = Number(process.env.BENCH_LIMIT_MS ?? 900_000)
const env = { CORRAL_LOG_LEVEL: 'info' }
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]! }

interface LogLine { time: number, msg: string, peer?: string, peerId?: string }
/** The node's JSON log lines that have a message (its stderr, kept by the helper). */
function logLines (node: NodeProcess): LogLine[] {
  const out: LogLine[] = []
  for (const text of node.log().split('\n')) {
    if (!text.startsWith('{')) continue
    try { out.push(JSON.parse(text) as LogLine) } catch {}
  }
  return out
}
const joinedAt = (node: NodeProcess, peerId: string): number | undefined => logLines(node).find(l => l.msg === 'member joined' && l.peer === peerId)?.time

const nodes: NodeProcess[] = []
const extra: NodeProcess[] = []
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { void Promise.all([...nodes, ...extra].map(async n => { await n.destroy() })).finally(() => process.exit(130)) })
}
try {
  const started = performance.now()
  const { token, joiner, peerIds } = await startMesh(count, env, nodes, LIMIT_MS)
  console.log(`${count} node processes joined and see each other alive after ${((performance.now() - started) / 1000).toFixed(1)} s`)
  await sleep(2000)

  // ---- join ------------------------------------------------------------------------------------
  const visible: number[] = []
  const learned: number[] = []
  for (let r = 0; r < runs; r++) {
    const node = await startNodeProcess(joiner(`join-${r}`), { readyTimeoutMs: 120_000 })
    extra.push(node)
    const start = logLines(node).find(l => l.msg === 'mesh node started')
    if (start?.peerId == null) throw new Error('the new node logged no "mesh node started" line with its peer id')
    const until = performance.now() + 60_000
    let seenBy: Array<number | undefined> = []
    let knows: number[] = []
    for (;;) {
      seenBy = nodes.map(n => joinedAt(n, start.peerId!))
      knows = peerIds.map(id => joinedAt(node, id)).filter((t): t is number => t !== undefined)
      if (seenBy.every(t => t !== undefined) && knows.length === count) break
      if (performance.now() > until) throw new Error(`run ${r}: after 60 s ${seenBy.filter(t => t !== undefined).length}/${count} nodes had logged the new node, and it had logged ${knows.length}/${count}`)
      await sleep(100)
    }
    visible.push(Math.max(...seenBy as number[]) - start.time)
    learned.push(Math.max(...knows) - start.time)
    // Gone again, so every run joins a mesh of N (it is dead to the others after a while).
    await node.destroy()
    await sleep(1000)
  }
  console.log(`join (${count}-node mesh): the new node listed by every node after median ${median(visible)} ms (runs: ${visible.join(', ')} ms); it listed every node after median ${median(learned)} ms (runs: ${learned.join(', ')} ms)`)

  // ---- record ----------------------------------------------------------------------------------
  const readable: number[] = []
  const rounds: number[] = []
  for (let r = 0; r < runs; r++) {
    const writer = nodes[Math.floor(Math.random() * nodes.length)]!
    const username = `bench-${Date.now().toString(36)}-${r}`
    const res = await call(writer.url, 'POST', '/api/v1/users', { token, body: { username, password: 'bench-password-1', roles: ['viewer'] } })
    if (res.status !== 201) throw new Error(`POST /api/v1/users: ${res.status} ${JSON.stringify(res.body)}`)
    const t0 = performance.now()
    const firstSeen: Array<number | undefined> = Array.from({ length: nodes.length }, () => undefined)
    let polls = 0
    while (firstSeen.some(t => t === undefined)) {
      if (performance.now() - t0 > 60_000) throw new Error(`run ${r}: the user was readable on ${firstSeen.filter(t => t !== undefined).length}/${count} nodes after 60 s`)
      polls++
      await Promise.all(nodes.map(async (n, i) => {
        if (firstSeen[i] !== undefined) return
        const got = await call(n.url, 'GET', `/api/v1/users/${username}`, { token })
        if (got.status === 200) firstSeen[i] = performance.now() - t0
      }))
    }
    readable.push(Math.max(...firstSeen as number[]))
    rounds.push(readable[r]! / polls)
  }
  console.log(`record (${count}-node mesh): a user created on one node readable on every node after median ${median(readable).toFixed(0)} ms (runs: ${readable.map(x => x.toFixed(0)).join(', ')} ms; one polling round of all nodes took ~${median(rounds).toFixed(0)} ms)`)
  console.log(`machine: ${cpus().length} cores, load average ${loadavg()[0]!.toFixed(1)}`)
} finally {
  await Promise.all([...nodes, ...extra].map(async n => { await n.destroy() }))
}
