/**
 * bench/scheduler-failover: how long the cluster goes without a scheduler leader when the leader's
 * process dies. N real `corral node` processes (sim driver) on 127.0.0.1; each run finds the leader
 * every node agrees on, SIGKILLs it, and polls GET /api/v1/cluster on every survivor every 20 ms
 * until each reports a new leader (the same one on all). Then a fresh node joins, so every run
 * starts from N nodes. Runs once with the production timings of config/default.yaml and once with
 * the fast timings the e2e tests use; prints median and max, asserts nothing.
 *
 *   node bench/scheduler-failover.ts [--nodes 5] [--runs 5] [--profile default|fast|both] [--hang]
 *
 * With --nodes above 10 the survivors are polled every 2 x nodes ms instead of 20 ms (100 ms with
 * 50), and the nodes start four at a time.
 *
 * A SIGKILL closes the dead node's TCP connections, so survivors suspect it at once (connection
 * lost, ping fails) instead of after suspectAfterMs of silence. A hung host or a cut cable gives no
 * such hint: --hang also measures a leader frozen with SIGSTOP (then killed), which costs the full
 * suspectAfterMs. Either way the lease is taken over as soon as its holder is not alive, and the
 * other nodes see the new lease at their next election tick (renewMs).
 */
import { rmSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../test/helpers/node-process.ts'

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '5' },
    runs: { type: 'string', default: '5' },
    profile: { type: 'string', default: 'both' },
    hang: { type: 'boolean', default: false }
  }
})
const nodeCount = Math.max(3, Math.min(60, Number(values.nodes)))
const runs = Math.max(1, Math.min(50, Number(values.runs)))
/** Each survivor is polled this often: 20 ms up to 10 nodes, then slower so polling 49 APIs does not load the machine. */
const POLL_MS = Math.max(20, nodeCount * 2)
const LIMIT_MS = 60_000 + nodeCount * 3_000

interface Profile { name: string, env: Record<string, string>, describe: string }
const profiles = ([
  {
    name: 'default',
    // Nothing set: the node runs with config/default.yaml, as in production.
    env: {},
    describe: 'config/default.yaml: heartbeat 1000 ms, suspect 4000 ms, dead 12000 ms, leaseMs 2000, renewMs 500'
  },
  {
    name: 'fast',
    env: {
      CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '800', CORRAL_CLUSTER_DEAD_AFTER_MS: '2500',
      CORRAL_SCHEDULER_LEASE_MS: '1000', CORRAL_SCHEDULER_RENEW_MS: '250'
    },
    describe: 'e2e-test timings: heartbeat 200 ms, suspect 800 ms, dead 2500 ms, leaseMs 1000, renewMs 250'
  }
] as Profile[]).filter(p => values.profile === 'both' || values.profile === p.name)

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

/** Polls until check() returns a value, every everyMs, within LIMIT_MS. */
async function until<T> (what: string, check: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  const deadline = performance.now() + LIMIT_MS
  let last: unknown
  while (performance.now() < deadline) {
    try {
      const result = await check()
      if (result !== undefined) return result
    } catch (err) { last = err }
    await sleep(everyMs)
  }
  throw new Error(`${what} did not happen within ${LIMIT_MS} ms${last != null ? `: ${String(last)}` : ''}`)
}

/** Every node process and data folder of the run in progress, for the interrupt handler. */
const live = new Set<NodeProcess>()
const dirs = new Set<string>()
// Interrupted (Ctrl-C, a timeout): leave no node process or data folder behind.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const node of live) node.child.kill('SIGKILL')
    // Once they are gone (a dying node may still be writing its files).
    setTimeout(() => {
      for (const dir of dirs) { try { rmSync(dir, { recursive: true, force: true, maxRetries: 3 }) } catch {} }
      process.exit(130)
    }, 300)
  })
}

async function runProfile (profile: Profile, signal: 'SIGKILL' | 'SIGSTOP'): Promise<{ all: number[], first: number[] }> {
  const nodes = new Map<string, NodeProcess>()
  let serial = 0
  let token = ''
  let joinToken = ''
  const start = async (): Promise<void> => {
    const name = `f${++serial}`
    const env = { ...profile.env, CORRAL_NODE_NAME: name, CORRAL_LOG_LEVEL: 'warn', CORRAL_SIM_CPUS: '4' }
    const dataDir = await mkdtemp(join(tmpdir(), 'corral-bench-failover-'))
    dirs.add(dataDir)
    const node = await startNodeProcess(serial === 1 ? env : { ...env, CORRAL_JOIN_TOKEN: joinToken, CORRAL_ADMIN_PASSWORD: '' }, { dataDir, readyTimeoutMs: 120_000 })
    live.add(node)
    nodes.set(name, node)
    if (serial === 1) {
      const first = nodes.get(name)!
      token = (await call(first.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
      joinToken = (await call(first.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token
    }
  }
  const leaderSeenBy = async (node: NodeProcess): Promise<string | undefined> => {
    const res = await call(node.url, 'GET', '/api/v1/cluster', { token })
    if (res.status !== 200) throw new Error(`GET /api/v1/cluster: ${res.status}`)
    return res.body.leader?.nodeName ?? undefined
  }
  /** Every node sees nodeCount alive members and the same leader. */
  const settled = async (): Promise<string> => await until('the cluster agrees on a leader', async () => {
    const leaders = new Set<string | undefined>()
    for (const node of nodes.values()) {
      const cluster = (await call(node.url, 'GET', '/api/v1/cluster', { token })).body
      if (cluster.members.filter((m: { status: string }) => m.status === 'alive').length !== nodeCount) return undefined
      leaders.add(cluster.leader?.nodeName)
    }
    return leaders.size === 1 && !leaders.has(undefined) ? [...leaders][0] : undefined
  })

  const all: number[] = []
  const first: number[] = []
  try {
    await start()
    // A few at a time: start-up is CPU-bound and the machine is small.
    while (serial < nodeCount) await Promise.all(Array.from({ length: Math.min(4, nodeCount - serial) }, async () => await start()))
    for (let run = 0; run < runs; run++) {
      const old = await settled()
      // A little quiet after the last join, so the lease is renewed as in a steady cluster.
      await sleep(1000)
      const victim = nodes.get(old)!
      const survivors = [...nodes.entries()].filter(([name]) => name !== old).map(([, n]) => n)
      const killedAt = performance.now()
      victim.child.kill(signal)
      const seen = await Promise.all(survivors.map(async node => await until(`a survivor reports a new leader after ${old} died`, async () => {
        const leader = await leaderSeenBy(node).catch(() => undefined)
        return leader != null && leader !== old ? { leader, after: performance.now() - killedAt } : undefined
      }, POLL_MS)))
      const names = new Set(seen.map(s => s.leader))
      const after = seen.map(s => s.after)
      all.push(Math.max(...after))
      first.push(Math.min(...after))
      console.log(`  ${profile.name} ${signal} run ${run + 1}: ${old} down; ${[...names].join(' / ')} recognised by the first survivor after ${Math.min(...after).toFixed(0)} ms, by all ${survivors.length} after ${Math.max(...after).toFixed(0)} ms${names.size > 1 ? ' (survivors named different leaders!)' : ''}`)
      victim.child.kill('SIGKILL')
      await victim.destroy()
      live.delete(victim)
      dirs.delete(victim.dataDir)
      nodes.delete(old)
      // A join token names its issuer as the bootstrap address: take one from a live node.
      joinToken = (await call(survivors[0]!.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token
      await start()
    }
  } finally {
    await Promise.all([...nodes.values()].map(async n => { await n.destroy(); live.delete(n); dirs.delete(n.dataDir) }))
  }
  return { all, first }
}

const signals = values.hang ? ['SIGKILL', 'SIGSTOP'] as const : ['SIGKILL'] as const
const results: Array<{ profile: Profile, signal: string, all: number[], first: number[] }> = []
for (const profile of profiles) {
  for (const signal of signals) {
    console.log(`${profile.name}, leader ${signal === 'SIGKILL' ? 'killed' : 'frozen'} (${signal}): ${nodeCount} node processes, ${runs} runs (${profile.describe})`)
    results.push({ profile, signal, ...await runProfile(profile, signal) })
  }
}
console.log(`\nscheduler failover, ${nodeCount} node processes on loopback (poll GET /api/v1/cluster every ${POLL_MS} ms; time from the signal; machine load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores):`)
for (const { profile, signal, all, first } of results) {
  console.log(`  ${profile.name.padEnd(7)} ${signal}: every survivor knows the new leader: median ${median(all).toFixed(0)} ms, max ${Math.max(...all).toFixed(0)} ms; first survivor: median ${median(first).toFixed(0)} ms  [${profile.describe}]`)
}
