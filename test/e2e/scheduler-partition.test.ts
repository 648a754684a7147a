import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ADMIN_PASSWORD } from '../helpers/node-process.ts'
import { call, createTestNetwork, startNetnsNode, type NetnsNode, type TestNetwork } from '../helpers/netns.ts'

// Four real node processes (sim driver, 4 CPUs each), each in its own network namespace, cut into
// 2 + 2 so that each side elects its own scheduler leader and both leaders place VMs at once. Only
// hosts decide whether they have room, so two leaders may cost retries but must never overfill a
// host: every host's own view of itself is checked after every step, and polled all along. After
// the heal there is one leader, queued requests run once room is made, and no request runs twice.
// Needs root and iproute2 (see test/helpers/netns.ts).
const fast = {
  CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '800', CORRAL_CLUSTER_DEAD_AFTER_MS: '2500',
  CORRAL_SCHEDULER_LEASE_MS: '1000', CORRAL_SCHEDULER_RENEW_MS: '250', CORRAL_SCHEDULER_RESUBMIT_MS: '300',
  CORRAL_SIM_CPUS: '4', CORRAL_SIM_TIMINGS_START_MS: '20'
}
const HOST_CPUS = 4
const IMAGE = 'sim-ubuntu-24.04'

const nodes: NetnsNode[] = []
let network: TestNetwork | undefined
let monitor: CapacityMonitor | undefined
after(async () => {
  monitor?.stop()
  await Promise.all(nodes.splice(0).map(async n => await n.destroy()))
  await network?.destroy()
})

/** Polls until check() holds, within a bound; the last failure explains a timeout. */
async function eventually<T> (what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const result = await check()
      if (result !== undefined) return result
    } catch (err) { last = err }
    await sleep(100)
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms${last != null ? `: ${String(last)}` : ''}`)
}

const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

let token = ''

async function get (node: NetnsNode, path: string): Promise<any> {
  const res = await call(node, 'GET', path, { token })
  if (res.status !== 200) throw new Error(`GET ${path} on ${node.name}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body
}

const leaderOf = async (node: NetnsNode): Promise<string | undefined> => (await get(node, '/api/v1/cluster')).leader?.nodeName ?? undefined

interface Usage { cpus: number, memoryMiB: number, diskMiB: number }

/**
 * The host's own account of itself (GET /api/v1/hosts on that host, entry with self: true), and the
 * VMs it says it runs: allocated must stay within capacity, and must be what those VMs hold.
 */
async function ownView (node: NetnsNode): Promise<{ allocated: Usage, capacity: Usage, vms: number }> {
  const self = (await get(node, '/api/v1/hosts')).items.find((h: { self?: boolean }) => h.self === true)
  if (self == null) throw new Error(`${node.name} lists no host with self: true`)
  return { allocated: self.allocated, capacity: self.capacity, vms: self.vms.total }
}

function overCapacity (node: NetnsNode, view: { allocated: Usage, capacity: Usage }): string | undefined {
  const over = (['cpus', 'memoryMiB', 'diskMiB'] as const).filter(k => view.allocated[k] > view.capacity[k])
  return over.length > 0 ? `${node.name} holds more than its capacity (${over.join(', ')}): allocated ${JSON.stringify(view.allocated)}, capacity ${JSON.stringify(view.capacity)}` : undefined
}

/** Asks every host about itself, over and over, in the background: a brief overfill is caught too. */
class CapacityMonitor {
  readonly violations: string[] = []
  readonly maxCpus = new Map<string, number>()
  polls = 0
  private stopped = false
  private readonly hosts: NetnsNode[]
  private readonly done: Promise<void>

  constructor (hosts: NetnsNode[]) {
    this.hosts = hosts
    this.done = this.loop()
  }

  private async loop (): Promise<void> {
    // Bounded: the test's own timeout is far below this many rounds.
    for (let round = 0; round < 10_000 && !this.stopped; round++) {
      await Promise.all(this.hosts.map(async node => {
        const view = await ownView(node).catch(() => undefined)
        if (view == null) return
        this.maxCpus.set(node.name, Math.max(this.maxCpus.get(node.name) ?? 0, view.allocated.cpus))
        const problem = overCapacity(node, view)
        if (problem != null) this.violations.push(problem)
      }))
      this.polls++
      await sleep(150)
    }
  }

  stop (): void { this.stopped = true }
  async finish (): Promise<void> { this.stop(); await this.done }
}

/** After every step: each host's own view is within capacity now, and was at every poll so far. */
async function checkCapacity (step: string): Promise<void> {
  steps.push({ time: Date.now(), text: `${new Date().toISOString().slice(17, 23)} test: ${step}` })
  for (const node of nodes) {
    const problem = overCapacity(node, await ownView(node))
    assert.equal(problem, undefined, `after "${step}": ${problem}`)
  }
  assert.deepEqual(monitor?.violations ?? [], [], `a host was over capacity at some poll up to "${step}"`)
}

interface Asked { name: string, id: string, cpus: number, side: string, state: string, host: string }

async function vmOn (node: NetnsNode, id: string): Promise<{ state: string, host: string }> {
  const vm = await get(node, `/api/v1/vms/${id}`)
  return { state: vm.state, host: vm.host }
}

const steps: Array<{ time: number, text: string }> = []

/** The scheduling story of every node (leader changes, placements, admissions), merged by time. */
function schedulingLog (): string {
  const lines = [...steps]
  for (const node of nodes) {
    for (const line of node.log().split('\n')) {
      if (!line.startsWith('{')) {
        // Not pino: a crash's stack trace, say.
        if (line.trim() !== '') lines.push({ time: Number.MAX_SAFE_INTEGER, text: `${node.name} stderr: ${line}` })
        continue
      }
      const entry = JSON.parse(line)
      if (!/leader|placed|admitted|refused|never|deleted/.test(entry.msg ?? '') && entry.level < 50) continue
      const { time, msg, level: _level, pid: _pid, hostname: _hostname, component: _component, ...rest } = entry
      lines.push({ time, text: `${new Date(time).toISOString().slice(17, 23)} ${node.name} ${msg as string} ${JSON.stringify(rest)}` })
    }
  }
  return lines.sort((a, b) => a.time - b.time).map(l => l.text).join('\n')
}

test('partition 2 + 2 with a leader on each side placing VMs: no host over capacity, one leader after the heal, every request once', { timeout: 240_000 }, async () => {
  try {
    await partitionScenario()
  } catch (err) {
    process.stderr.write(`scheduling log of the 4 nodes:\n${schedulingLog()}\n`)
    throw err
  }
})

async function partitionScenario (): Promise<void> {
  network = await createTestNetwork('sp', 4)
  // Each host carries its own name as a label, so a request can be pinned to one host.
  const founder = await startNetnsNode(network.hosts[0]!, 'sp1', { ...fast, CORRAL_NODE_LABELS: 'host=sp1' })
  nodes.push(founder)
  const key = (await readFile(join(founder.dataDir, 'keys', 'cluster.key'), 'utf8')).trim()
  token = (await call(founder, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
  const [bootstrap] = (await get(founder, '/api/v1/cluster')).self.multiaddrs as string[]
  nodes.push(...await Promise.all([1, 2, 3].map(async i => await startNetnsNode(network!.hosts[i]!, `sp${i + 1}`, {
    ...fast, CORRAL_NODE_LABELS: `host=sp${i + 1}`, CORRAL_CLUSTER_KEY: key, CORRAL_BOOTSTRAP: bootstrap!, CORRAL_ADMIN_PASSWORD: ''
  }))))
  const byName = new Map(nodes.map(n => [n.name, n]))

  const firstLeader = await eventually('all 4 nodes see 4 alive hosts and agree on one leader', async () => {
    const leaders = new Set<string | undefined>()
    for (const node of nodes) {
      const hosts = (await get(node, '/api/v1/hosts')).items
      if (hosts.filter((h: { state: string }) => h.state === 'alive').length !== 4) return undefined
      leaders.add(await leaderOf(node))
    }
    return leaders.size === 1 && !leaders.has(undefined) ? [...leaders][0] : undefined
  }, 45_000)
  monitor = new CapacityMonitor(nodes)
  for (const node of nodes) {
    const view = await ownView(node)
    assert.equal(view.capacity.cpus, HOST_CPUS)
    assert.equal(view.vms, 0)
  }
  await checkCapacity('cluster formed')

  // Requests already queued when the cut comes: every host full (one 4-CPU VM pinned to each), then
  // one request through a node of each side. The leader's queue holds both.
  const leaderNode = byName.get(firstLeader!)!
  const others = nodes.filter(n => n !== leaderNode)
  const left = [leaderNode, others[0]!]
  const right = others.slice(1)
  const fillers = new Map<string, string>()
  for (const node of nodes) {
    const res = await call(node, 'POST', '/api/v1/vms?wait=true', { token, body: { image: IMAGE, cpus: HOST_CPUS, name: `fill-${node.name}`, hostLabels: { host: node.name } } })
    assert.equal(res.body.state, 'running', JSON.stringify(res.body))
    fillers.set(node.name, res.body.id)
  }
  await checkCapacity('every host full')
  const asked: Asked[] = []
  for (const [label, gateway] of [['l', left[1]!], ['r', right[0]!]] as const) {
    const res = await call(gateway, 'POST', '/api/v1/vms', { token, body: { image: IMAGE, cpus: 2, name: `pre-${label}` } })
    assert.equal(res.status, 201, JSON.stringify(res.body))
    assert.equal(res.body.state, 'queued', JSON.stringify(res.body))
    asked.push({ name: res.body.name, id: res.body.id, cpus: 2, side: label, state: 'queued', host: '' })
  }
  await checkCapacity('a request queued through each side')

  // The cut: the right side moves to the second bridge and elects its own leader; the left keeps
  // the old one, whose queue still holds pre-r, now also re-submitted to the right side's leader.
  steps.push({ time: Date.now(), text: `${new Date().toISOString().slice(17, 23)} test: cut` })
  await network.partition(right.map(n => n.host))
  const sideLeader = async (side: NetnsNode[]): Promise<string> => await eventually(`${side.map(n => n.name).join(' and ')} agree on a leader of their own side`, async () => {
    const names = await Promise.all(side.map(async n => await leaderOf(n)))
    const [name] = names
    return name != null && names.every(x => x === name) && side.some(n => n.name === name) ? name : undefined
  })
  const [leftLeader, rightLeader] = [await sideLeader(left), await sideLeader(right)]
  assert.notEqual(leftLeader, rightLeader, 'a leader on each side')
  assert.equal(leftLeader, firstLeader, 'the side that had the leader kept it')
  await checkCapacity('partitioned, a leader on each side')

  // Each side has noticed the other is gone (the right side's new leader implies it; the left
  // side's view of the right is checked here).
  for (const [side, other] of [[left, right], [right, left]] as const) {
    for (const node of side) {
      await eventually(`${node.name} sees the other side suspect or dead`, async () => {
        const states = Object.fromEntries((await get(node, '/api/v1/hosts')).items.map((h: { name: string, state: string }) => [h.name, h.state]))
        return other.every(n => states[n.name] === 'suspect' || states[n.name] === 'dead') ? true : undefined
      })
    }
  }

  // Room on both sides: each host deletes its own filler. Each side's leader may now place what
  // waits, pre-r included, but only one of them may run it: pre-r's gateway is on the right, and
  // re-submits it there. (Had room appeared on the left in the second or so before the left side
  // noticed the cut, the old leader could have placed pre-r there unseen by the right, which would
  // then place it too: within the failure detector's delay a partition can run a request twice.
  // Hosts never overfill either way.)
  await Promise.all(nodes.map(async node => {
    const res = await call(node, 'DELETE', `/api/v1/vms/${fillers.get(node.name)!}`, { token })
    assert.equal(res.status, 204, JSON.stringify(res.body))
  }))
  for (const pre of asked) {
    const side = pre.side === 'l' ? left : right
    const vm = await eventually(`${pre.name} runs on its gateway's side`, async () => {
      const got = await vmOn(side[0]!, pre.id)
      return got.state === 'running' ? got : undefined
    })
    assert.ok(side.some(n => n.name === vm.host), `${pre.name} runs on ${vm.host}`)
    pre.state = vm.state
    pre.host = vm.host
  }
  // A few more scheduling passes on both sides, then each side's hosts hold exactly one VM: its
  // own side's request, not a second copy of the other's.
  await sleep(1500)
  for (const side of [left, right]) {
    const views = await Promise.all(side.map(async n => await ownView(n)))
    const count = views.reduce((sum, v) => sum + v.vms, 0)
    assert.equal(count, 1, `${side.map(n => n.name).join(' and ')} run ${count} VMs, not just their own side's request (a request ran on both sides?): ${JSON.stringify(views.map(v => ({ allocated: v.allocated, vms: v.vms })))}`)
  }
  await checkCapacity('fillers deleted, the requests queued before the cut placed')

  // Both sides at once, through both nodes of each side: per side 2 x 3 CPUs and 4 x 1 CPU, 10 CPUs
  // where the side has 6 left, so some must wait; and one 5-CPU VM no host could ever hold.
  const asks = [left, right].flatMap((side, s) => {
    const label = s === 0 ? 'l' : 'r'
    const sized = [3, 3, 1, 1, 1, 1].map((cpus, i) => ({ name: `${label}-${cpus === 3 ? 'big' : 'small'}-${i}`, cpus }))
    return sized.map((ask, i) => ({ ...ask, side: label, gateway: side[i % 2]! }))
  })
  const answers = await Promise.all(asks.map(async ask => await call(ask.gateway, 'POST', '/api/v1/vms', { token, body: { image: IMAGE, cpus: ask.cpus, name: ask.name } })))
  const never = await Promise.all([left[0]!, right[1]!].map(async gateway => await call(gateway, 'POST', '/api/v1/vms', { token, body: { image: IMAGE, cpus: HOST_CPUS + 1, name: `never-${gateway.name}` } })))
  for (const res of never) {
    assert.equal(res.status, 409, JSON.stringify(res.body))
    assert.match(res.body.detail, /CPU/i)
  }
  asked.push(...answers.map((res, i) => {
    assert.equal(res.status, 201, `${asks[i]!.name}: ${JSON.stringify(res.body)}`)
    assert.equal(res.body.name, asks[i]!.name)
    return { name: asks[i]!.name, id: res.body.id, cpus: asks[i]!.cpus, side: asks[i]!.side, state: res.body.state, host: res.body.host }
  }))
  assert.equal(new Set(asked.map(a => a.id)).size, asked.length, 'one id per request')
  await checkCapacity('both sides created VMs at once')

  // Each side settles on its own: what fits runs on that side's hosts, the rest waits in the queue.
  for (const [label, side] of [['l', left], ['r', right]] as const) {
    const mine = asked.filter(a => a.side === label)
    const settled = await eventually(`side ${label}: every request runs or waits`, async () => {
      const states = await Promise.all(mine.map(async a => await vmOn(side[0]!, a.id)))
      return states.every(s => s.state === 'running' || s.state === 'queued') ? states : undefined
    })
    const running = mine.filter((_a, i) => settled[i]!.state === 'running')
    for (const [i, a] of mine.entries()) { a.state = settled[i]!.state; a.host = settled[i]!.host }
    assert.ok(running.every(a => side.some(n => n.name === a.host)), `side ${label} placed only on its own hosts: ${JSON.stringify(running)}`)
    const used = running.reduce((sum, a) => sum + a.cpus, 0)
    assert.ok(used <= side.length * HOST_CPUS, `side ${label} runs ${used} CPUs`)
    assert.ok(mine.some(a => a.state === 'queued'), `side ${label}: 12 CPUs asked of 8, something must wait: ${JSON.stringify(mine)}`)
    assert.ok(running.length > 0, `side ${label} placed nothing: ${JSON.stringify(mine)}`)
  }
  await checkCapacity('each side placed what fits and queued the rest')
  // Still cut: a few resubmission rounds of both queues to both leaders change nothing.
  await sleep(1500)
  await checkCapacity('queues resubmitted while cut')

  // The heal: one leader that all 4 recognise, and the hosts see each other alive again.
  steps.push({ time: Date.now(), text: `${new Date().toISOString().slice(17, 23)} test: heal` })
  await network.heal()
  const leader = await eventually('all 4 nodes recognise the same single leader', async () => {
    const names = await Promise.all(nodes.map(async n => await leaderOf(n)))
    const hosts = await Promise.all(nodes.map(async n => (await get(n, '/api/v1/hosts')).items))
    if (!hosts.every(list => list.filter((h: { state: string }) => h.state === 'alive').length === 4)) return undefined
    return names[0] != null && names.every(x => x === names[0]) ? names[0] : undefined
  }, 30_000)
  assert.ok(byName.has(leader))
  await checkCapacity('healed')

  // 24 CPUs asked of 16: something still waits. Make room one VM at a time (oldest running first)
  // until every request left has run; each deletion is a step.
  const deleted = new Set<string>()
  for (let round = 0; round < asked.length; round++) {
    const states = await Promise.all(asked.filter(a => !deleted.has(a.id)).map(async a => ({ a, ...(await vmOn(nodes[round % 4]!, a.id)) })))
    const queued = states.filter(s => s.state === 'queued')
    if (queued.length === 0 && states.every(s => s.state === 'running')) break
    if (queued.length > 0 && states.every(s => s.state === 'running' || s.state === 'queued')) {
      const victim = states.find(s => s.state === 'running')!
      const res = await call(nodes[(round + 1) % 4]!, 'DELETE', `/api/v1/vms/${victim.a.id}`, { token })
      assert.equal(res.status, 204, JSON.stringify(res.body))
      deleted.add(victim.a.id)
    }
    // Let the leader and the gateways' resubmissions act on the freed room: the queue shrinks
    // (or, if what waits does not fit yet, stays as it is for a few rounds).
    const settledQueue = async (): Promise<number> => {
      const now = await Promise.all(asked.filter(a => !deleted.has(a.id)).map(async a => (await vmOn(nodes[0]!, a.id)).state))
      return now.every(s => s === 'running' || s === 'queued') ? now.filter(s => s === 'queued').length : Infinity
    }
    if (queued.length > 0) await eventually('the queue shrinks', async () => await settledQueue() < queued.length ? true : undefined, 4000).catch(() => undefined)
    await eventually('every request runs or waits', async () => await settledQueue() !== Infinity ? true : undefined)
    await checkCapacity(`deleted ${deleted.size} VM(s)`)
  }
  const remaining = asked.filter(a => !deleted.has(a.id))
  await eventually('every remaining request runs', async () => {
    const states = await Promise.all(remaining.map(async a => (await vmOn(nodes[0]!, a.id)).state))
    return states.every(s => s === 'running') ? true : undefined
  })
  assert.ok(deleted.size < asked.length, 'room was made without deleting everything')

  // Exactly once: every remaining id is held by one host (asked of every host directly), the
  // hosts' own VM counts add up to them, and names are unique in every node's list.
  const holders = await Promise.all(remaining.map(async a => {
    const onHost = await Promise.all(nodes.map(async n => (await vmOn(n, a.id)).host === n.name ? n.name : undefined))
    return { name: a.name, hosts: onHost.filter(h => h != null) }
  }))
  for (const h of holders) assert.equal(h.hosts.length, 1, `${h.name} is held by ${JSON.stringify(h.hosts)}`)
  const views = await Promise.all(nodes.map(async n => await ownView(n)))
  assert.equal(views.reduce((sum, v) => sum + v.vms, 0), remaining.length, 'the hosts hold exactly the remaining requests')
  assert.equal(views.reduce((sum, v) => sum + v.allocated.cpus, 0), remaining.reduce((sum, a) => sum + a.cpus, 0))
  for (const node of nodes) {
    const names = (await get(node, '/api/v1/vms')).items.map((v: { name: string }) => v.name).sort()
    assert.deepEqual(names, remaining.map(a => a.name).sort(), `VMs listed by ${node.name}`)
  }
  // Still one leader, recognised by all.
  const finalLeaders = await Promise.all(nodes.map(async n => await leaderOf(n)))
  assert.ok(finalLeaders.every(x => x === finalLeaders[0]) && finalLeaders[0] != null, JSON.stringify(finalLeaders))
  await checkCapacity('every remaining request runs')
  await monitor.finish()
  assert.ok(monitor.polls > 10, `the monitor polled ${monitor.polls} times`)
  for (const [name, cpus] of monitor.maxCpus) assert.ok(cpus <= HOST_CPUS, `${name} peaked at ${cpus} CPUs`)
}
