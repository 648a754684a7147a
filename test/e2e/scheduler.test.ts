import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../helpers/node-process.ts'
import { eventually } from '../helpers/eventually.ts'

// Five real node processes with different capacities, architectures and labels (sim driver).
const fast = {
  CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '800', CORRAL_CLUSTER_DEAD_AFTER_MS: '2500',
  CORRAL_SCHEDULER_LEASE_MS: '1000', CORRAL_SCHEDULER_RENEW_MS: '250', CORRAL_SCHEDULER_RESUBMIT_MS: '300',
  CORRAL_SIM_TIMINGS_START_MS: '20'
}
const shapes = [
  { name: 's1', arch: 'x86_64', cpus: '8', labels: 'rack=a' },
  { name: 's2', arch: 'arm64', cpus: '8', labels: 'rack=b,xcode=16' },
  { name: 's3', arch: 'x86_64', cpus: '4', labels: 'rack=b' },
  { name: 's4', arch: 'arm64', cpus: '4', labels: 'xcode=15' },
  { name: 's5', arch: 'x86_64', cpus: '2', labels: 'rack=c' }
]
const nodes = new Map<string, NodeProcess>()
after(async () => { await Promise.all([...nodes.values()].map(async n => await n.destroy())) })


let token = ''
const any = (): NodeProcess => [...nodes.values()][0]
const leaderName = async (via: NodeProcess): Promise<string | undefined> => (await call(via.url, 'GET', '/api/v1/cluster', { token })).body.leader?.nodeName
/** A node that is not the leader: requests there exercise the gateway path. */
const nonLeader = async (): Promise<NodeProcess> => {
  const leader = await leaderName(any())
  return [...nodes.entries()].find(([name]) => name !== leader)?.[1] as NodeProcess
}
const allVms = async (): Promise<any[]> => (await call(any().url, 'GET', '/api/v1/vms', { token })).body.items

test('5 hosts: VMs created through non-leaders land only on hosts that satisfy every constraint', { timeout: 180_000 }, async () => {
  const [first, ...rest] = shapes
  const env = (s: typeof first): Record<string, string> => ({ ...fast, CORRAL_NODE_NAME: s.name, CORRAL_SIM_ARCH: s.arch, CORRAL_SIM_CPUS: s.cpus, CORRAL_NODE_LABELS: s.labels })
  nodes.set(first.name, await startNodeProcess(env(first)))
  token = (await call(any().url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
  const join = (await call(any().url, 'GET', '/api/v1/cluster/join-token', { token })).body.token as string
  for (const s of rest) nodes.set(s.name, await startNodeProcess({ ...env(s), CORRAL_JOIN_TOKEN: join, CORRAL_ADMIN_PASSWORD: '' }))
  await eventually('every node sees 5 alive hosts and one leader', async () => {
    const leaders = new Set<string | undefined>()
    for (const node of nodes.values()) {
      const hosts = (await call(node.url, 'GET', '/api/v1/hosts', { token })).body.items
      if (hosts.filter((h: { state: string }) => h.state === 'alive').length !== 5) return undefined
      leaders.add(await leaderName(node))
    }
    return leaders.size === 1 && !leaders.has(undefined) ? true : undefined
  })

  const gateway = await nonLeader()
  // A dry run explains, for every host, why it was or was not chosen.
  const dry = await call(gateway.url, 'POST', '/api/v1/vms', { token, body: { image: 'sim-ubuntu-24.04', arch: 'arm64', hostLabels: { rack: 'b' }, dryRun: true } })
  assert.equal(dry.status, 200)
  assert.equal(dry.body.host.name, 's2')
  assert.equal(dry.body.rejected.length, 4)
  assert.ok(dry.body.rejected.every((r: { reasons: string[] }) => r.reasons.length > 0))
  const asks = [
    { body: { image: 'sim-macos-15', arch: 'arm64', hostLabels: { xcode: '16' }, cpus: 2 }, ok: (h: string) => h === 's2' },
    { body: { image: 'sim-ubuntu-24.04', arch: 'x86_64', hostLabels: { rack: 'b' }, cpus: 2 }, ok: (h: string) => h === 's3' },
    { body: { image: 'sim-ubuntu-24.04', arch: 'arm64', hostLabelsNot: { xcode: '16' }, cpus: 1 }, ok: (h: string) => h === 's4' },
    { body: { image: 'sim-windows-11', cpus: 6 }, ok: (h: string) => h === 's1' || h === 's2' }
  ]
  for (const ask of asks) {
    const res = await call(gateway.url, 'POST', '/api/v1/vms?wait=true', { token, body: ask.body })
    assert.equal(res.status, 201, JSON.stringify(res.body))
    assert.equal(res.body.state, 'running')
    assert.ok(ask.ok(res.body.host), `${JSON.stringify(ask.body)} landed on ${res.body.host as string}`)
  }
  // A request no host could ever take is refused at once, with the reason.
  const never = await call(gateway.url, 'POST', '/api/v1/vms', { token, body: { image: 'sim-ubuntu-24.04', cpus: 64 } })
  assert.equal(never.status, 409)
  assert.match(never.body.detail, /CPU/)
  for (const vm of await allVms()) assert.equal((await call(gateway.url, 'DELETE', `/api/v1/vms/${vm.id as string}`, { token })).status, 204)
})

test('a full cluster queues requests and places them in priority order as VMs are deleted', { timeout: 180_000 }, async () => {
  const gateway = await nonLeader()
  // Fill every x86_64 host completely (8 + 4 + 2 CPUs) with VMs pinned by arch.
  const fillers: string[] = []
  for (const [cpus, label] of [[8, 'a'], [4, 'b'], [2, 'c']] as const) {
    const res = await call(gateway.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04', arch: 'x86_64', cpus, hostLabels: { rack: label } } })
    assert.equal(res.body.state, 'running', JSON.stringify(res.body))
    fillers.push(res.body.id)
  }
  const queued: Array<{ id: string, priority: number, name: string }> = []
  for (const [i, priority] of [10, 90, 50].entries()) {
    const res = await call(gateway.url, 'POST', '/api/v1/vms', { token, body: { image: 'sim-ubuntu-24.04', arch: 'x86_64', cpus: 2, priority, name: `q${i}-p${priority}` } })
    assert.equal(res.status, 201)
    assert.equal(res.body.state, 'queued', JSON.stringify(res.body))
    queued.push({ id: res.body.id, priority, name: res.body.name })
  }
  // Positions follow priority, not arrival: 90 first, then 50, then 10.
  await eventually('queue positions follow priority', async () => {
    const got = await Promise.all(queued.map(async q => (await call(any().url, 'GET', `/api/v1/vms/${q.id}`, { token })).body))
    return got.every(v => v.state === 'queued') && JSON.stringify(got.map(v => v.queuePosition)) === '[3,1,2]' ? true : undefined
  })

  // Free the 2-CPU host: exactly one slot, which goes to the highest priority.
  assert.equal((await call(gateway.url, 'DELETE', `/api/v1/vms/${fillers[2]}`, { token })).status, 204)
  const placedFirst = await eventually('one queued request is placed', async () => {
    const states = await Promise.all(queued.map(async q => (await call(any().url, 'GET', `/api/v1/vms/${q.id}`, { token })).body.state))
    const placed = queued.filter((_q, i) => states[i] !== 'queued')
    return placed.length > 0 ? placed : undefined
  })
  assert.deepEqual(placedFirst.map(q => q.priority), [90])
  // Free the 4-CPU host: the other two follow.
  assert.equal((await call(gateway.url, 'DELETE', `/api/v1/vms/${fillers[1]}`, { token })).status, 204)
  await eventually('all queued requests run', async () => {
    const states = await Promise.all(queued.map(async q => (await call(any().url, 'GET', `/api/v1/vms/${q.id}`, { token })).body.state))
    return states.every(s => s === 'running') ? true : undefined
  })
  for (const vm of await allVms()) await call(gateway.url, 'DELETE', `/api/v1/vms/${vm.id as string}`, { token })
})

test('kill -9 the leader with requests queued and in flight: a new leader, every request exactly once', { timeout: 180_000 }, async () => {
  const oldLeader = await leaderName(any()) as string
  const gateways = [...nodes.entries()].filter(([name]) => name !== oldLeader).map(([, n]) => n)
  // Make the x86_64 hosts that survive full, so some requests must queue.
  const filler = await call(gateways[0].url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04', arch: 'x86_64', cpus: 8, hostLabels: { rack: 'a' } } })
  const filler2 = await call(gateways[0].url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04', arch: 'x86_64', cpus: 4, hostLabels: { rack: 'b' } } })
  assert.equal(filler.body.state, 'running')
  assert.equal(filler2.body.state, 'running')
  const names = Array.from({ length: 6 }, (_v, i) => `failover-${i}`)
  const requests = names.map(async (name, i) => await call(gateways[i % gateways.length].url, 'POST', '/api/v1/vms', { token, body: { image: 'sim-ubuntu-24.04', arch: 'x86_64', cpus: 1, name } }))
  const killed = nodes.get(oldLeader) as NodeProcess
  await killed.stop('SIGKILL')
  nodes.delete(oldLeader)
  const answers = await Promise.all(requests)
  for (const a of answers) assert.equal(a.status, 201, JSON.stringify(a.body))

  const newLeader = await eventually('a new leader', async () => {
    const name = await leaderName(any())
    return name != null && name !== oldLeader ? name : undefined
  }, 15_000)
  assert.notEqual(newLeader, oldLeader)
  // Free room; every request then runs exactly once.
  await call(any().url, 'DELETE', `/api/v1/vms/${filler.body.id as string}`, { token }).catch(() => undefined)
  await call(any().url, 'DELETE', `/api/v1/vms/${filler2.body.id as string}`, { token }).catch(() => undefined)
  await eventually('every request runs exactly once', async () => {
    const vms = await allVms()
    // A request the old leader's own host had already taken died with that host; every other one
    // (queued on a gateway, or placed elsewhere) must run, and none twice.
    const expected = names.filter(n => answers.find(a => a.body.name === n)?.body.host !== oldLeader)
    const counts = expected.map(n => vms.filter(v => v.name === n).length)
    if (counts.some(c => c > 1)) throw new Error(`a request ran twice: ${JSON.stringify(counts)}`)
    return expected.every(n => vms.some(v => v.name === n && v.state === 'running')) ? true : undefined
  }, 30_000)
})
