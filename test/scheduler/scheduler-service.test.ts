import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { SchedulerService, SCHED_RPC } from '../../src/scheduler/cluster/scheduler-service.ts'
import type { PendingVm } from '../../src/scheduler/cluster/pending.ts'
import type { PublishedHostState } from '../../src/scheduler/cluster/published-state.ts'
import type { VmRecord } from '../../src/scheduler/host/vm-record.ts'

/**
 * The leader's scheduler against fake hosts: each host admits into its own ledger (refusing what
 * does not fit, as a real host does), but its gossip can be held back, so the tests see what the
 * leader does when its view of the cluster is behind.
 */
function cluster (hosts: Array<{ name: string, cpus: number, labels?: Record<string, string> }>) {
  const now = 1_000_000
  const self = 'leader'
  const state = new Map(hosts.map(h => [h.name, { used: 0, vms: [] as string[], version: 0, gossiped: { used: 0, version: 0 } }]))
  const status = new Map(hosts.map(h => [h.name, 'alive' as 'alive' | 'suspect' | 'dead']))
  const admitted: string[] = []
  let refused = 0
  let gossipHeld = false
  /** Hosts whose VM list the leader fetched (publisher.vms.catchUp); other VM lists are behind. */
  const fetched = new Set<string>()
  const listeners = new Map<string, (m: unknown) => void>()
  /** Requests the gateways still keep (asked with pending.get). */
  const gatewayKeeps = new Set<string>()
  /** Whether admissions answer with the host's heartbeat, as real hosts do. */
  let answerWithHeartbeat = false
  const publish = (name: string): void => {
    const s = state.get(name)!
    if (!gossipHeld) s.gossiped = { used: s.used, version: s.version }
  }
  const hostState = (h: typeof hosts[number]): PublishedHostState => {
    const g = state.get(h.name)!.gossiped
    return {
      kind: 'corral-host/2',
      host: {
        name: h.name,
        capacity: { cpus: h.cpus, memoryMiB: 1 << 20, diskMiB: 1 << 30, arch: 'x86_64', os: 'linux', driver: 'sim', labels: h.labels ?? {}, simulated: true },
        allocated: { cpus: g.used, memoryMiB: 0, diskMiB: 0 },
        free: { cpus: h.cpus - g.used, memoryMiB: 1 << 20, diskMiB: 1 << 30 },
        vms: { total: 0, running: 0 },
        state: 'alive'
      },
      vmsVersion: g.version,
      images: ['img'],
      imageInfo: [{ name: 'img', arch: 'x86_64', os: 'linux', defaultCpus: 1, defaultMemoryMiB: 64, diskMiB: 1 }],
      draining: false
    }
  }
  const mesh = {
    self: () => ({ peerId: self, nodeName: 'leader', multiaddrs: [] }),
    members: () => [
      { peerId: self, nodeName: 'leader', status: 'alive', self: true, state: undefined },
      ...hosts.map(h => ({ peerId: h.name, nodeName: h.name, status: status.get(h.name), self: false, state: hostState(h) }))
    ],
    handleRpc: () => {},
    unhandleRpc: () => {},
    on: (event: string, listener: (m: unknown) => void) => { listeners.set(event, listener) },
    off: () => {},
    request: async (peerId: string, method: string, body: { pending: PendingVm, resources: { cpus: number }, id: string }) => {
      if (method === 'pending.get') {
        await new Promise(resolve => setImmediate(resolve))
        if (!gatewayKeeps.has(body.id)) throw Object.assign(new Error('no queued VM'), { details: { remote: { name: 'VmNotFoundError' } } })
        return { id: body.id, state: 'queued' }
      }
      assert.equal(method, SCHED_RPC.admit)
      await new Promise(resolve => setImmediate(resolve))
      const h = hosts.find(x => x.name === peerId)!
      const s = state.get(peerId)!
      if (s.used + body.resources.cpus > h.cpus) { refused++; throw new Error(`${peerId} is full`) }
      s.used += body.resources.cpus
      s.vms.push(body.pending.id)
      s.version++
      admitted.push(`${body.pending.id}@${peerId}`)
      publish(peerId)
      const heartbeat = answerWithHeartbeat ? { used: s.used, version: s.version } : undefined
      return { vm: { id: body.pending.id, host: peerId } as VmRecord, vmsVersion: s.version, heartbeat }
    },
    // The fake heartbeat is the host's true figures: the leader's view of that host catches up.
    acceptHeartbeat: (from: string, heartbeat: { used: number, version: number }) => {
      state.get(from)!.gossiped = { ...heartbeat }
      return true
    }
  }
  const election = Object.assign(new EventTarget(), { isLeader: () => true, leader: () => ({ peerId: self }) })
  const publisher = {
    current: () => ({ kind: 'corral-host/2', host: { name: 'leader', capacity: { cpus: 0, memoryMiB: 0, diskMiB: 0, arch: 'x86_64', os: 'linux', driver: 'sim', labels: {}, simulated: true }, allocated: { cpus: 0, memoryMiB: 0, diskMiB: 0 }, free: { cpus: 0, memoryMiB: 0, diskMiB: 0 }, vms: { total: 0, running: 0 }, state: 'alive' }, vmsVersion: 0, images: [], imageInfo: [], draining: false }),
    vms: {
      mine: () => undefined,
      version: () => 0,
      find: (id: string) => [...state].filter(([name, s]) => fetched.has(name) && s.vms.includes(id)).map(([name]) => ({ owner: name, row: { id, host: name } })),
      catchUp: async (owner: string) => { await new Promise(resolve => setImmediate(resolve)); fetched.add(owner) }
    }
  }
  const scheduler = new SchedulerService({ mesh, election, publisher, logger: pino({ level: 'silent' }), clock: () => now } as never, 'binpack')
  let seq = 0
  const request = (cpus: number, extra: Partial<PendingVm['request']> = {}): PendingVm => ({
    id: `vm-${String(seq++).padStart(3, '0')}`,
    request: { image: 'img', cpus, memoryMiB: 64, owner: 'ci', ...extra },
    priority: 50,
    enqueuedAt: now + seq,
    deadline: now + 60_000,
    gateway: self,
    gatewayName: 'leader',
    state: 'queued'
  })
  return {
    scheduler,
    request,
    state,
    admitted,
    refused: () => refused,
    election,
    listeners,
    gatewayKeeps,
    answerWithHeartbeat: () => { answerWithHeartbeat = true },
    holdGossip: (held: boolean) => { gossipHeld = held; if (!held) for (const h of hosts) publish(h.name) },
    setStatus: (name: string, s: 'alive' | 'suspect' | 'dead') => { status.set(name, s) }
  }
}

test('many requests at once are admitted in parallel and never beyond what a host holds, even when gossip lags', async () => {
  const c = cluster([{ name: 'h1', cpus: 4 }, { name: 'h2', cpus: 4 }, { name: 'h3', cpus: 4 }])
  c.holdGossip(true) // the leader sees every host empty the whole time
  const answers = await Promise.all(Array.from({ length: 12 }, async () => await c.scheduler.submit(c.request(1))))
  assert.deepEqual(answers.map(a => a.outcome), Array(12).fill('placed'))
  for (const [name, s] of c.state) assert.equal(s.used, 4, `${name} holds exactly its 4 CPUs`)
  // A 13th finds nothing: it waits rather than being sent to a full host.
  const more = await c.scheduler.submit(c.request(1))
  assert.equal(more.outcome, 'queued')
  assert.equal(c.refused(), 0, 'no host was sent more than it holds')
})

test('one request after another while gossip lags: what each host was promised counts until its gossip shows it', async () => {
  const c = cluster([{ name: 'h1', cpus: 3 }, { name: 'h2', cpus: 3 }])
  c.holdGossip(true)
  for (let i = 0; i < 6; i++) assert.equal((await c.scheduler.submit(c.request(1))).outcome, 'placed')
  assert.equal(c.refused(), 0, 'each pass counted the admissions of the passes before it')
  c.holdGossip(false) // gossip catches up: the promises are forgotten, the free figures take over
  assert.equal((await c.scheduler.submit(c.request(1))).outcome, 'queued')
  assert.equal(c.refused(), 0)
})

test('a host that refuses is passed over and the next one takes the request', async () => {
  const c = cluster([{ name: 'h1', cpus: 4 }, { name: 'h2', cpus: 4 }])
  // h1 is secretly full (someone else's VMs the leader has not heard of).
  c.state.get('h1')!.used = 4
  const answer = await c.scheduler.submit(c.request(2))
  assert.equal(answer.outcome, 'placed')
  assert.equal(answer.outcome === 'placed' ? answer.host : '', 'h2')
})

test('a request only an unreachable host could take waits for it instead of being refused', async () => {
  const c = cluster([{ name: 'small', cpus: 2 }, { name: 'big', cpus: 16, labels: { gpu: 'yes' } }])
  c.setStatus('big', 'suspect')
  const waits = await c.scheduler.submit(c.request(8))
  assert.equal(waits.outcome, 'queued')
  const labelled = await c.scheduler.submit(c.request(1, { labels: { gpu: 'yes' } }))
  assert.equal(labelled.outcome, 'queued')
  // What no host could ever take is still refused at once.
  const never = await c.scheduler.submit(c.request(64))
  assert.equal(never.outcome, 'rejected')
})

test('a new leader fetches the hosts\' VM lists before it places: a VM the old leader placed is not placed again', async () => {
  const c = cluster([{ name: 'h1', cpus: 4 }, { name: 'h2', cpus: 4 }])
  // The old leader placed this one on h1 and died before the gateway heard; h1's VM list has not
  // reached this node yet, and the gateway re-submits it here.
  const inFlight = c.request(1)
  const h1 = c.state.get('h1')!
  h1.used = 1
  h1.vms.push(inFlight.id)
  c.scheduler.start()
  try {
    c.election.dispatchEvent(new CustomEvent('leader', { detail: { peerId: 'leader' } }))
    const answer = await c.scheduler.submit(inFlight)
    assert.equal(answer.outcome, 'placed')
    assert.equal(answer.outcome === 'placed' ? answer.peerId : '', 'h1', 'found where the old leader put it')
    assert.deepEqual(c.admitted, [], 'no host was asked to admit it a second time')
  } finally {
    c.scheduler.stop()
  }
})

test('the host\'s state in an admission\'s answer is the leader\'s view of it at once, gossip or not', async () => {
  const c = cluster([{ name: 'h1', cpus: 4 }, { name: 'h2', cpus: 4 }])
  c.answerWithHeartbeat()
  // The leader hears h1 holds 2 CPUs, so binpack prefers it; then h1 takes a third it does not hear of.
  c.state.get('h1')!.used = 2
  c.holdGossip(false)
  c.holdGossip(true)
  c.state.get('h1')!.used = 3
  assert.equal((await c.scheduler.submit(c.request(1))).outcome, 'placed')
  // The answer said h1 is now full, so the next goes to h2 without asking h1 first.
  const next = await c.scheduler.submit(c.request(1))
  assert.equal(next.outcome === 'placed' ? next.peerId : '', 'h2')
  assert.equal(c.refused(), 0, 'the leader did not send h1 a request it could not hold')
})

test('after a partition heals, a gateway\'s request is placed only if the gateway still keeps it', async () => {
  const c = cluster([{ name: 'h1', cpus: 4 }, { name: 'h2', cpus: 4 }])
  c.scheduler.start()
  try {
    // h2 (a gateway too) is back from the other side of a partition.
    c.listeners.get('member:alive')?.({ peerId: 'h2' })
    const stale = { ...c.request(1), gateway: 'h2' } // sent into the cut, placed there meanwhile
    const wanted = { ...c.request(1), gateway: 'h2' }
    c.gatewayKeeps.add(wanted.id)
    await c.scheduler.submit(stale)
    // Its gateway hears where it went in the answer to this very submission, not a round later.
    assert.equal((await c.scheduler.submit(wanted)).outcome, 'placed')
    for (let i = 0; i < 20 && c.admitted.length === 0; i++) await new Promise(resolve => setImmediate(resolve))
    assert.deepEqual(c.admitted.map(a => a.split('@')[0]), [wanted.id], 'only the request its gateway still keeps')
    for (let i = 0; i < 10; i++) await new Promise(resolve => setImmediate(resolve))
    assert.equal((await c.scheduler.submit(stale)).outcome, 'queued', 'the stale one is not placed on a second submit either')
    assert.equal(c.admitted.length, 1)
  } finally {
    c.scheduler.stop()
  }
})
