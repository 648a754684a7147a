import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { SafeEmitter } from '../../src/node/emitter.ts'
import { Membership, heartbeatInterval, MAX_HEARTBEAT_STRETCH } from '../../src/node/membership.ts'
import type { MeshEvents } from '../../src/node/types.ts'

function setup (): { membership: Membership, events: string[], advance: (ms: number) => void } {
  let now = 10_000
  const emitter = new SafeEmitter<MeshEvents>(pino({ level: 'silent' }))
  const events: string[] = []
  for (const name of ['member:join', 'member:update', 'member:suspect', 'member:dead', 'member:alive'] as const) {
    emitter.on(name, m => { events.push(`${name} ${m.nodeName} ${m.status}`) })
  }
  const membership = new Membership({ selfId: 'me', events: emitter, clock: () => now, suspectAfterMs: 300, deadAfterMs: 1000, heartbeatMs: 100 })
  return { membership, events, advance: ms => { now += ms } }
}

const hb = (version: number, extra: Partial<{ nodeName: string, state: unknown, addrs: string[] }> = {}): Parameters<Membership['onHeartbeat']>[0] =>
  ({ peerId: 'p1', nodeName: 'n1', addrs: ['/ip4/10.0.0.1/tcp/1/p2p/p1'], version, state: {}, ...extra })

test('join, update on a newer version only, and the view cannot change the member', () => {
  const { membership, events } = setup()
  assert.deepEqual(membership.onHeartbeat(hb(5)), { joined: true, updated: true, addrsChanged: true })
  assert.deepEqual(membership.onHeartbeat(hb(5, { state: { ignored: true } })), { joined: false, updated: false, addrsChanged: false })
  assert.deepEqual(membership.onHeartbeat(hb(4, { state: { older: true } })), { joined: false, updated: false, addrsChanged: false })
  assert.deepEqual(membership.onHeartbeat(hb(6, { state: { cpus: 4 } })), { joined: false, updated: true, addrsChanged: false })
  assert.deepEqual(membership.get('p1')!.state, { cpus: 4 })
  const view = membership.get('p1')!
  assert.throws(() => { (view.state as { cpus: number }).cpus = 99 }, TypeError, 'the shared state is frozen')
  view.addrs.push('/ip4/10.0.0.9/tcp/1')
  assert.deepEqual(membership.get('p1')!.state, { cpus: 4 })
  assert.equal(membership.get('p1')!.addrs.includes('/ip4/10.0.0.9/tcp/1'), false)
  assert.deepEqual(events, ['member:join n1 alive', 'member:update n1 alive'])
  assert.equal(membership.onHeartbeat({ ...hb(1), peerId: 'me' }).joined, false)
})

test('silence makes a member suspect, then dead, and a heartbeat brings it back', () => {
  const { membership, events, advance } = setup()
  membership.onHeartbeat(hb(1))
  advance(299)
  assert.deepEqual(membership.tick(), [])
  advance(1)
  assert.deepEqual(membership.tick(), ['p1'])
  advance(700)
  assert.deepEqual(membership.tick(), [])
  assert.equal(membership.get('p1')!.status, 'dead')
  membership.onHeartbeat(hb(2))
  assert.equal(membership.get('p1')!.status, 'alive')
  assert.deepEqual(events, ['member:join n1 alive', 'member:suspect n1 suspect', 'member:dead n1 dead', 'member:alive n1 alive', 'member:update n1 alive'])
})

test('a long gap still reports suspect before dead', () => {
  const { membership, events, advance } = setup()
  membership.onHeartbeat(hb(1))
  advance(5000)
  membership.tick()
  assert.deepEqual(events.slice(1), ['member:suspect n1 suspect', 'member:dead n1 dead'])
})

test('a light heartbeat (no state) keeps a member alive, never replaces its state, and introduces no stranger', () => {
  const { membership, events, advance } = setup()
  const light = (version: number, peerId = 'p1'): Parameters<Membership['onHeartbeat']>[0] => ({ peerId, nodeName: 'n1', addrs: [], version })
  assert.deepEqual(membership.onHeartbeat(light(1, 'stranger')), { joined: false, updated: false, addrsChanged: false })
  assert.equal(membership.get('stranger'), undefined)
  membership.onHeartbeat(hb(1, { state: { cpus: 2 } }))
  advance(250)
  // A newer version without its state: still here, but the state waits for the full heartbeat.
  assert.deepEqual(membership.onHeartbeat(light(2)), { joined: false, updated: false, addrsChanged: false })
  advance(250)
  assert.deepEqual(membership.tick(), [], 'the light heartbeat counted as a sign of life')
  assert.deepEqual(membership.get('p1')!.state, { cpus: 2 })
  assert.deepEqual(membership.onHeartbeat(hb(2, { state: { cpus: 3 } })).updated, true)
  assert.deepEqual(membership.get('p1')!.state, { cpus: 3 })
  assert.deepEqual(events, ['member:join n1 alive', 'member:update n1 alive'])
})

test('a member that heartbeats less often (a large cluster) is judged against its own interval', () => {
  const { membership, advance } = setup()
  // Ours is 100 ms with suspect after 300 and dead after 1000; it says it beats every 500 ms.
  membership.onHeartbeat({ ...hb(1), every: 500 })
  const statusAfter = (ms: number): string => { advance(ms); membership.tick(); return membership.get('p1')!.status }
  assert.equal(statusAfter(1400), 'alive', 'suspect after 5 x 300 ms, not 300 ms')
  assert.equal(statusAfter(100), 'suspect')
  assert.equal(statusAfter(3499), 'suspect', 'dead after 5 x 1000 ms')
  assert.equal(statusAfter(1), 'dead')
  // Back to the usual interval: the usual timeouts.
  membership.onHeartbeat(hb(2))
  assert.equal(statusAfter(300), 'suspect')
})

test('hearsay (a peer\'s member list) adds strangers and newer states, never revives or refreshes', () => {
  const { membership, events, advance } = setup()
  const told = (version: number, state: unknown, peerId = 'p1'): Parameters<Membership['onHeartbeat']>[0] => ({ peerId, nodeName: 'n1', addrs: [], version, state })
  assert.equal(membership.onHearsay(told(3, { cpus: 2 })).joined, true)
  assert.equal(membership.get('p1')!.status, 'alive')
  assert.equal(membership.onHearsay({ peerId: 'p2', nodeName: 'n2', addrs: [], version: 1 }).joined, false, 'no state, no member')
  assert.equal(membership.onHearsay({ ...told(1, {}), peerId: 'me' }).joined, false)
  advance(300)
  membership.tick()
  assert.equal(membership.get('p1')!.status, 'suspect', 'never heard from itself: the usual timeout')
  assert.equal(membership.onHearsay(told(4, { cpus: 4 })).updated, true)
  assert.deepEqual(membership.get('p1')!.state, { cpus: 4 })
  assert.equal(membership.get('p1')!.status, 'suspect', 'hearsay does not revive')
  assert.equal(membership.onHearsay(told(4, { cpus: 9 })).updated, false, 'not newer')
  assert.deepEqual(events, ['member:join n1 alive', 'member:suspect n1 suspect', 'member:update n1 suspect'])
})

test('a member that has not said how often it heartbeats is judged by the interval of the cluster\'s present size', () => {
  const { membership, advance } = setup()
  membership.onHearsay({ peerId: 'p1', nodeName: 'n1', addrs: [], version: 1, state: {} })
  // In a cluster where this node heartbeats every 2500 ms (25 x 100), 4 base intervals of silence are nothing.
  advance(2000)
  assert.deepEqual(membership.tick(2500), [])
  assert.equal(membership.get('p1')!.status, 'alive')
  advance(8000)
  assert.deepEqual(membership.tick(2500), ['p1'], 'suspect after 4 of those intervals')
})

test('a failed ping after a lost connection suspects at once; contact revives', () => {
  const { membership, events } = setup()
  membership.onHeartbeat(hb(1))
  membership.onUnreachable('p1')
  assert.equal(membership.get('p1')!.status, 'suspect')
  membership.onUnreachable('p1')
  membership.onContact('p1')
  membership.onContact('unknown')
  assert.equal(membership.get('p1')!.status, 'alive')
  assert.deepEqual(events.slice(1), ['member:suspect n1 suspect', 'member:alive n1 alive'])
})

test('a listener that throws does not stop the others', () => {
  const emitter = new SafeEmitter<MeshEvents>(pino({ level: 'silent' }))
  const seen: string[] = []
  emitter.on('member:join', () => { throw new Error('boom') })
  emitter.on('member:join', m => { seen.push(m.peerId) })
  const membership = new Membership({ selfId: 'me', events: emitter, clock: () => 0, suspectAfterMs: 1, deadAfterMs: 2, heartbeatMs: 1 })
  membership.onHeartbeat(hb(1))
  assert.deepEqual(seen, ['p1'])
})

test('heartbeats space out with the square of the cluster size beyond 10 members, up to a limit', () => {
  for (const n of [1, 2, 10]) assert.equal(heartbeatInterval(n, 1000), 1000)
  assert.equal(heartbeatInterval(20, 1000), 4000)
  assert.equal(heartbeatInterval(50, 1000), 25_000)
  assert.equal(heartbeatInterval(1000, 1000), MAX_HEARTBEAT_STRETCH * 1000)
  // What the cluster receives per heartbeatMs (N senders, each heard by N) stays flat beyond 10.
  const receptions = (n: number): number => n * n * 1000 / heartbeatInterval(n, 1000)
  assert.equal(receptions(20), 100)
  assert.equal(receptions(50), 100)
  assert.ok(receptions(5) < 100)
})
