/**
 * bench/scheduler-throughput: placements per second through the scheduler leader, and request-to-
 * placement latency from a gateway that is not the leader. N real `corral node` processes (sim
 * driver, sim operations take 0 ms) on 127.0.0.1, with the production timings and policy (binpack)
 * of config/default.yaml. The hosts together hold twice the VMs the run creates, so binpack fills
 * about half of them, host after host, and nothing has to queue. Every placement takes the real path: HTTP to a
 * gateway, RPC to the leader, placement on the leader's snapshot, RPC host.admit to the chosen host,
 * and the answer back. Prints figures with the host count; asserts nothing.
 *
 *   node bench/scheduler-throughput.ts [--hosts 10] [--placements 2000] [--concurrency 64] [--sequential 300] [--data-dir DIR]
 *
 *   latency:    --sequential POST /api/v1/vms one after another through one non-leader gateway,
 *               each timed until its 201 whose body names a host (placed); median and p99.
 *   throughput: --placements POST /api/v1/vms (no ?wait), --concurrency in flight, spread over
 *               every non-leader gateway, timed until every VM is placed (state is not queued).
 *               First --warmup (4) untimed POSTs through each gateway: a node's first requests
 *               compile its request schemas and warm its JIT (~0.1 s of CPU each), which with 49
 *               cold gateways was most of the CPU of a 2,000-placement run.
 *
 * All nodes share this machine's cores with the bench client, and each keeps up the mesh (idle
 * upkeep, printed first), so on a small machine the figures are bounded by the simulation as much
 * as by the leader: the CPU the node processes used is printed beside them, with what the leader
 * alone needs per placement. More in flight means bigger batches per scheduling pass and per
 * durable write, and so less CPU per placement: on 2 cores with 50 hosts, 128 in flight gave
 * 335-500/s and 256 gave 443-676/s, median 563/s (notes/scheduler.md). Each node process needs
 * ~100-150 MB; 50 hosts need ~7 GB and a few minutes to start.
 *
 * Every placement waits for durable writes (the gateway keeps the request, the host records the
 * VM before it answers the leader, each an fsync'd atomic file write), so the disk under the nodes'
 * data folders matters: --data-dir puts them elsewhere (e.g. /dev/shm, to see the cost without the
 * disk), and the bench prints what one such write costs there.
 */
import { rmSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { writeFileAtomic } from '../src/store/atomic-file.ts'
import { parseArgs } from 'node:util'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../test/helpers/node-process.ts'
import { meshCounts } from './mesh-harness.ts'

const { values } = parseArgs({
  options: {
    hosts: { type: 'string', default: '10' },
    placements: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '64' },
    sequential: { type: 'string', default: '300' },
    warmup: { type: 'string', default: '4' },
    'data-dir': { type: 'string', default: tmpdir() }
  }
})
const hostCount = Math.max(2, Math.min(100, Number(values.hosts)))
const placements = Math.max(10, Math.min(100_000, Number(values.placements)))
const concurrency = Math.max(1, Math.min(1024, Number(values.concurrency)))
const sequential = Math.max(10, Math.min(100_000, Number(values.sequential)))
const warmup = Math.max(0, Math.min(100, Number(values.warmup)))
const LIMIT_MS = Number(process.env.BENCH_LIMIT_MS ?? 600_000)

const VM = { image: 'sim-ubuntu-24.04', cpus: 1, memoryMiB: 64 }
/** Room for twice the run's VMs across the hosts: CPUs are what binpack fills (disk is plenty). The env names
 * are what src/config derives from memoryMiB and diskMiB. */
const slots = Math.min(4096, Math.ceil(2 * (placements + sequential + warmup * hostCount) / hostCount))
const sim = {
  CORRAL_SIM_CPUS: String(slots), CORRAL_SIM_MEMORY_MI_B: String(slots * VM.memoryMiB), CORRAL_SIM_DISK_MI_B: String(slots * 1024 * 1024),
  CORRAL_SIM_TIMINGS_CREATE_MS: '0', CORRAL_SIM_TIMINGS_START_MS: '0', CORRAL_SIM_TIMINGS_STOP_MS: '0', CORRAL_SIM_TIMINGS_DELETE_MS: '0',
  CORRAL_LOG_LEVEL: 'warn',
  // BENCH_ENV='CORRAL_X=1,CORRAL_Y=2' passes settings to every node (to compare configurations).
  ...Object.fromEntries((process.env.BENCH_ENV ?? '').split(',').filter(kv => kv.includes('=')).map(kv => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
  // e.g. BENCH_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=/tmp/prof' to profile every node.
  ...(process.env.BENCH_NODE_OPTIONS != null ? { NODE_OPTIONS: process.env.BENCH_NODE_OPTIONS } : {})
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!
}
async function until<T> (what: string, check: () => Promise<T | undefined>, everyMs = 250): Promise<T> {
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

/**
 * POST /api/v1/vms on its own keep-alive pool, whose idle sockets close after 1 s: before the
 * server's 5 s keep-alive timeout, so a request never goes out on a socket the server is closing
 * (fetch's pool hit that race under load: ECONNRESET on a request that may or may not have run).
 */
const agent = new Agent({ keepAlive: true, timeout: 1000, maxSockets: 1024 })
async function createVm (url: string, token: string, body: unknown): Promise<{ status: number, body: any }> {
  const payload = JSON.stringify(body)
  return await new Promise((resolve, reject) => {
    const req = request(`${url}/api/v1/vms`, {
      method: 'POST', agent,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      signal: AbortSignal.timeout(120_000)
    }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => { try { resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }) } catch (err) { reject(err) } })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(payload)
  })
}

/** GETs are safe to repeat: once more after a network error (the same keep-alive race). */
async function get (url: string, path: string, token: string): Promise<any> {
  const once = async (): Promise<any> => {
    const res = await call(url, 'GET', path, { token })
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body
  }
  return await once().catch(async (err: Error) => { if (err.message === 'fetch failed') return await once(); throw err })
}

/** CPU seconds (user + system) a process has used, from /proc. */
async function cpuSeconds (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}
const nodesCpu = async (nodes: NodeProcess[]): Promise<number> => (await Promise.all(nodes.map(async n => await cpuSeconds(n.child.pid as number)))).reduce((a, b) => a + b, 0)

/** What one durable atomic write of a small file costs in that folder (the store's unit of work). */
async function durableWriteMs (dir: string): Promise<number> {
  const probe = await mkdtemp(join(dir, 'corral-bench-fsync-'))
  try {
    const start = performance.now()
    for (let i = 0; i < 20; i++) await writeFileAtomic(join(probe, 'probe.json'), JSON.stringify({ i, pad: 'x'.repeat(20_000) }))
    return (performance.now() - start) / 20
  } finally {
    await rm(probe, { recursive: true, force: true })
  }
}

const dataBase = values['data-dir']
const nodes: NodeProcess[] = []
const dirs = new Set<string>()
// Interrupted (Ctrl-C, a timeout): leave no node process or data folder behind.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const node of nodes) node.child.kill('SIGKILL')
    // Once they are gone (a dying node may still be writing its files).
    setTimeout(() => {
      for (const dir of dirs) { try { rmSync(dir, { recursive: true, force: true, maxRetries: 3 }) } catch {} }
      process.exit(130)
    }, 300)
  })
}
/** Each node's data folder under --data-dir (startNodeProcess removes it on destroy). */
/** BENCH_PROFILE_NODES=N: h01..hN get BENCH_PROFILE_OPTIONS (profiling all 50 would double their CPU). */
const profiled = Number(process.env.BENCH_PROFILE_NODES ?? 0)
const start = async (env: Record<string, string>): Promise<NodeProcess> => {
  const dataDir = await mkdtemp(join(dataBase, 'corral-bench-tp-'))
  dirs.add(dataDir)
  const index = Number(env.CORRAL_NODE_NAME?.slice(1))
  const profile: Record<string, string> = index >= 1 && index <= profiled && process.env.BENCH_PROFILE_OPTIONS != null ? { NODE_OPTIONS: process.env.BENCH_PROFILE_OPTIONS } : {}
  return await startNodeProcess({ ...env, ...profile }, { readyTimeoutMs: 120_000, dataDir })
}
try {
  const fsyncMs = await durableWriteMs(dataBase)
  const started = performance.now()
  nodes.push(await start({ ...sim, CORRAL_NODE_NAME: 'h00' }))
  const token = (await call(nodes[0]!.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token as string
  const joinToken = (await call(nodes[0]!.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token as string
  // A few at a time: start-up is CPU-bound and the machine is small.
  for (let i = 1; i < hostCount; i += 4) {
    const batch = Array.from({ length: Math.min(4, hostCount - i) }, (_, k) => i + k)
    nodes.push(...await Promise.all(batch.map(async j => await start({ ...sim, CORRAL_NODE_NAME: `h${String(j).padStart(2, '0')}`, CORRAL_JOIN_TOKEN: joinToken, CORRAL_ADMIN_PASSWORD: '' }))))
  }
  const byName = new Map<string, NodeProcess>()
  const leader = await until('every node sees every host alive and one leader', async () => {
    const leaders = new Set<string | undefined>()
    for (const node of nodes) {
      const cluster = await get(node.url, '/api/v1/cluster', token)
      if (cluster.members.filter((m: { status: string }) => m.status === 'alive').length !== hostCount) return undefined
      byName.set(cluster.self.nodeName, node)
      leaders.add(cluster.leader?.nodeName)
    }
    // Every host's gossiped state must be in, too, or placement would not see it as a host.
    const hosts = (await get(nodes[0]!.url, '/api/v1/hosts', token)).items
    return leaders.size === 1 && !leaders.has(undefined) && hosts.length === hostCount ? [...leaders][0] : undefined
  }, 500)
  const gateways = nodes.filter(n => n !== byName.get(leader!))
  console.log(`${hostCount} hosts (node processes) up and agreed on leader ${leader} after ${((performance.now() - started) / 1000).toFixed(1)} s; timings from config/default.yaml; each host ${sim.CORRAL_SIM_CPUS} CPUs, sim operations 0 ms; data folders in ${dataBase}, where one durable atomic write takes ${fsyncMs.toFixed(1)} ms`)

  // ---- idle: what the mesh costs with nothing to place (heartbeats, gossip, failure detection) ----
  const idleBefore = await nodesCpu(nodes)
  const idleStart = performance.now()
  await sleep(5_000)
  const idleCores = (await nodesCpu(nodes) - idleBefore) / ((performance.now() - idleStart) / 1000)
  console.log(`idle: the ${hostCount} node processes used ${idleCores.toFixed(2)} cores in all (${(idleCores * 1000 / hostCount).toFixed(1)} ms of CPU per node per second) with nothing to place`)

  // ---- latency: one request at a time through one non-leader gateway ----------------------------
  const latencies: number[] = []
  let notPlaced = 0
  const cpuBeforeSeq = await nodesCpu(nodes)
  const perNodeBeforeSeq = await Promise.all(nodes.map(async n => await cpuSeconds(n.child.pid as number)))
  const seqStart = performance.now()
  for (let i = 0; i < sequential; i++) {
    const t = performance.now()
    const res = await createVm(gateways[0]!.url, token, { ...VM, name: `seq-${i}` })
    const elapsed = performance.now() - t
    if (res.status !== 201) throw new Error(`POST /api/v1/vms: ${res.status} ${JSON.stringify(res.body)}`)
    if (res.body.host === '' || res.body.state === 'queued') notPlaced++
    else latencies.push(elapsed)
  }
  const seqWall = (performance.now() - seqStart) / 1000
  const seqCpu = await nodesCpu(nodes) - cpuBeforeSeq
  const perNodeSeq = await Promise.all(nodes.map(async (n, i) => (await cpuSeconds(n.child.pid as number)) - perNodeBeforeSeq[i]!))
  console.log(`\nscheduler throughput with ${hostCount} hosts (${gateways.length} non-leader gateways, leader ${leader}):`)
  console.log(`  request-to-placement, sequential through one non-leader gateway: median ${quantile(latencies, 0.5).toFixed(1)} ms, p99 ${quantile(latencies, 0.99).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms over ${latencies.length} placed requests${notPlaced > 0 ? ` (${notPlaced} answered queued, left out)` : ''}; node processes used ${(seqCpu / seqWall).toFixed(2)} cores meanwhile`)

  {
    // Who pays for a request: the gateway, the leader, and every other node (idle upkeep included).
    const gatewayAt = nodes.indexOf(gateways[0]!)
    const leaderAt = nodes.indexOf(byName.get(leader!)!)
    const others = perNodeSeq.filter((_, i) => i !== gatewayAt && i !== leaderAt).sort((a, b) => a - b)
    const ms = (cpuS: number): string => (cpuS * 1000 / sequential).toFixed(2)
    console.log(`  CPU per sequential request: the gateway ${ms(perNodeSeq[gatewayAt]!)} ms, the leader ${ms(perNodeSeq[leaderAt]!)} ms, each other node ${ms(others[others.length >> 1]!)} ms (median; max ${ms(others[others.length - 1]!)} ms) — idle upkeep included: ${(idleCores / hostCount * seqWall * 1000 / sequential).toFixed(2)} ms per node per request's time`)
  }

  // ---- throughput: many in flight through every non-leader gateway ------------------------------
  await Promise.all(gateways.map(async (gateway, g) => {
    for (let i = 0; i < warmup; i++) {
      const res = await createVm(gateway.url, token, { ...VM, name: `warm-${g}-${i}` })
      if (res.status !== 201) throw new Error(`POST /api/v1/vms (warm-up) through ${gateway.url}: ${res.status} ${JSON.stringify(res.body)}`)
    }
  }))
  const ids: string[] = []
  const lost: string[] = []
  const queued = new Set<string>()
  /** Why requests were answered "queued" (the scheduler's reason), counted. */
  const queuedWhy = new Map<string, number>()
  let next = 0
  const countsBefore = await meshCounts(nodes, token)
  const cpuBefore = await nodesCpu(nodes)
  const perNodeBefore = await Promise.all(nodes.map(async n => await cpuSeconds(n.child.pid as number)))
  const leaderCpuBefore = await cpuSeconds(byName.get(leader!)!.child.pid as number)
  const t0 = performance.now()
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < placements) {
      const i = next++
      const gateway = gateways[i % gateways.length]!
      const res = await createVm(gateway.url, token, { ...VM, name: `tp-${i}` }).catch((err: Error) => err)
      // Not retried (a POST may have run); counted apart and left out of the figure.
      if (res instanceof Error) { lost.push(`${gateway.url}: ${res.message}`); continue }
      if (res.status !== 201) throw new Error(`POST /api/v1/vms through ${gateway.url}: ${res.status} ${JSON.stringify(res.body)}`)
      ids.push(res.body.id)
      if (res.body.state === 'queued') {
        queued.add(res.body.id)
        const why = String(res.body.stateReason ?? 'no reason').replace(/\(.*\)/, process.env.BENCH_DEBUG != null ? '$&' : '(…)').slice(0, process.env.BENCH_DEBUG != null ? 400 : 90)
        queuedWhy.set(why, (queuedWhy.get(why) ?? 0) + 1)
      }
    }
  }))
  const answered = performance.now() - t0
  const queuedAtAnswer = queued.size
  // Whatever was answered "queued" counts once a host has it.
  await until('every queued request is placed', async () => {
    let sample: unknown
    for (const id of [...queued]) {
      const vm = await get(nodes[0]!.url, `/api/v1/vms/${id}`, token)
      if (vm.state !== 'queued') queued.delete(id)
      else if (sample == null || vm.queuePosition < (sample as { queuePosition: number }).queuePosition) sample = vm
    }
    if (queued.size > 0 && process.env.BENCH_DEBUG != null) {
      const hosts = (await get(nodes[0]!.url, '/api/v1/hosts', token)).items
      console.error(JSON.stringify(hosts.map((h: any) => ({ name: h.name, state: h.state, free: h.free, vms: h.vms }))))
    }
    if (queued.size > 0) throw new Error(`${queued.size} still queued, e.g. ${JSON.stringify(sample)}`)
    return true
  }, 50)
  const elapsed = performance.now() - t0
  const cpu = await nodesCpu(nodes) - cpuBefore
  const perNode = await Promise.all(nodes.map(async (n, i) => (await cpuSeconds(n.child.pid as number)) - perNodeBefore[i]!))
  const leaderCpu = await cpuSeconds(byName.get(leader!)!.child.pid as number) - leaderCpuBefore
  const countsAfter = await meshCounts(nodes, token)
  // Each host's own figures: beyond 10 members another node's view of a host is a heartbeat old.
  const hosts = await Promise.all(nodes.map(async n => ((await get(n.url, '/api/v1/hosts', token)).items as Array<{ name: string, self: boolean, vms: { total: number } }>).find(h => h.self)!))
  const perHost = hosts.map(h => h.vms.total)
  const oneVm = await get(nodes[0]!.url, `/api/v1/vms/${ids[0]!}`, token)

  console.log(`  placements: ${ids.length} with ${concurrency} in flight in ${(elapsed / 1000).toFixed(2)} s = ${(ids.length / (elapsed / 1000)).toFixed(0)} placements/s (all answered after ${(answered / 1000).toFixed(2)} s, ${queuedAtAnswer} of them queued at first)${lost.length > 0 ? `; ${lost.length} requests lost to network errors, left out (first: ${lost[0]!})` : ''}`)
  // What the leader alone could sustain with a core to itself, from the CPU it used per placement.
  console.log(`  the leader used ${(leaderCpu * 1000 / ids.length).toFixed(2)} ms of CPU per placement: about ${(ids.length / leaderCpu).toFixed(0)} placements/s per core it gets`)
  if (queuedWhy.size > 0) console.log(`  answered queued because: ${[...queuedWhy].sort((a, b) => b[1] - a[1]).map(([why, n]) => `${n}× ${why}`).join('; ')}`)
  console.log(`  CPU meanwhile: node processes ${(cpu / (elapsed / 1000)).toFixed(2)} cores in all, the leader ${(leaderCpu / (elapsed / 1000)).toFixed(2)} cores; machine has ${cpus().length} cores, load average ${loadavg()[0]!.toFixed(1)} (others' work included)`)
  const vmsOn = new Map(hosts.map(h => [h.name, h.vms.total]))
  const names = [...byName.entries()]
  const busiest = perNode.map((c, i) => ({ c, name: names.find(([, n]) => n === nodes[i])?.[0] ?? `node ${i}` })).sort((a, b) => b.c - a.c).slice(0, hostCount <= 12 ? hostCount : 3)
  console.log(`  ${hostCount <= 12 ? 'node processes' : 'busiest node processes'}: ${busiest.map(b => `${b.name} (${b.name === leader ? 'leader' : 'gateway'}, ${vmsOn.get(b.name) ?? 0} VMs) ${(b.c / (elapsed / 1000)).toFixed(2)} cores`).join(', ')}; ${(cpu / ids.length * 1000).toFixed(1)} ms of CPU per placement across the cluster`)
  // What the mesh carried meanwhile: a count that grows with every placement on every node is a broadcast.
  const perPlacement = [...countsAfter].map(([k, v]) => [k, (v - (countsBefore.get(k) ?? 0)) / ids.length] as const).filter(([k, r]) => r >= 0.01 && k !== 'connectedPeers')
  console.log(`  mesh messages accepted per placement, summed over the nodes: ${perPlacement.map(([k, r]) => `${k} ${r.toFixed(2)}`).join(', ')}`)
  console.log(`  VMs per host afterwards: min ${Math.min(...perHost)}, max ${Math.max(...perHost)}, total ${perHost.reduce((a, b) => a + b, 0)} (binpack policy); each VM ${oneVm.cpus} CPU, ${oneVm.memoryMiB} MiB memory, ${oneVm.diskMiB} MiB disk`)
} catch (err) {
  // What the nodes said (warnings and errors only), to see why.
  for (const [i, node] of nodes.entries()) {
    const lines = node.log().split('\n').filter(l => l.trim() !== '')
    if (lines.length > 0) console.error(`--- node ${i} (${node.url}), last of ${lines.length} log lines:\n${lines.slice(-15).map(l => l.slice(0, 600)).join('\n')}`)
  }
  throw err
} finally {
  agent.destroy()
  await Promise.all(nodes.map(async n => { await n.destroy() }))
}
