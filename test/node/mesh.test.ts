import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { MeshFixture, eventually } from './fixture.ts'
import type { TestNode } from './fixture.ts'
import type { Member, RecordChange } from '../../src/node/index.ts'

function alivePeers (node: TestNode): string[] {
  return node.mesh.members().filter(m => m.status === 'alive').map(m => m.peerId).sort()
}

describe('three nodes joined by bootstrap', () => {
  const fixture = new MeshFixture()
  let a: TestNode, b: TestNode, c: TestNode

  before(async () => {
    a = await fixture.joined()
    b = await fixture.joined()
    c = await fixture.joined()
  })
  after(async () => { await fixture.cleanup() })

  test('each sees all three as alive members, with names and dialable addresses', async () => {
    const ids = [a, b, c].map(n => n.mesh.self().peerId).sort()
    await eventually('every node lists all three alive', () => [a, b, c].every(n => alivePeers(n).join() === ids.join()))
    const seenFromA = a.mesh.member(c.mesh.self().peerId)!
    assert.equal(seenFromA.nodeName, 'n2')
    assert.equal(seenFromA.self, false)
    assert.ok(seenFromA.addrs.every(addr => addr.endsWith(`/p2p/${c.mesh.self().peerId}`)))
    assert.equal(a.mesh.members().filter(m => m.self).length, 1)
  })

  test('local state and api address reach the others with a higher version', async () => {
    const before = a.mesh.member(b.mesh.self().peerId)!.version
    const updates: Member[] = []
    a.mesh.on('member:update', m => { updates.push(m) })
    b.mesh.setLocalState({ cpus: 8, vms: ['x'] })
    b.mesh.setApiAddress('http://127.0.0.1:7700')
    await eventually('a sees b\'s new state', () => {
      const m = a.mesh.member(b.mesh.self().peerId)
      return m?.apiAddress === 'http://127.0.0.1:7700' && JSON.stringify(m.state) === JSON.stringify({ cpus: 8, vms: ['x'] })
    })
    assert.ok(a.mesh.member(b.mesh.self().peerId)!.version > before)
    assert.ok(updates.some(m => m.peerId === b.mesh.self().peerId))
  })

  test('mesh.members describes every alive member with its state, for a joining node to catch up', async () => {
    b.mesh.setLocalState({ described: true })
    await eventually('a sees b\'s state', () => JSON.stringify(a.mesh.member(b.mesh.self().peerId)?.state) === JSON.stringify({ described: true }))
    const frames = c.mesh.requestStream<Array<{ peerId: string, state?: unknown }>, { members: number }>(a.mesh.self().peerId, 'mesh.members', {})
    const described: Array<{ peerId: string, state?: unknown }> = []
    let end: { members: number } | undefined
    for (;;) {
      const next = await frames.next()
      if (next.done === true) { end = next.value; break }
      described.push(...next.value)
    }
    assert.equal(end?.members, 3)
    assert.deepEqual(described.map(m => m.peerId).sort(), [a, b, c].map(n => n.mesh.self().peerId).sort())
    assert.deepEqual(described.find(m => m.peerId === b.mesh.self().peerId)?.state, { described: true })
  })

  test('a heartbeat handed over directly is applied at once, as if gossiped; one about another node or malformed is dropped', async () => {
    const aId = a.mesh.self().peerId
    a.mesh.setLocalState({ handed: 1 })
    await eventually('b sees a\'s state by gossip', () => JSON.stringify(b.mesh.member(aId)?.state) === JSON.stringify({ handed: 1 }))
    // A state a never gossiped: only the hand-over can bring it to b.
    const hb = a.mesh.currentHeartbeat() as { version: number, state: unknown }
    const newer = { ...hb, version: hb.version + 1, state: { handed: 2 } }
    assert.equal(b.mesh.acceptHeartbeat(aId, newer), true)
    assert.deepEqual(b.mesh.member(aId)?.state, { handed: 2 }, 'applied synchronously')
    const dropped = b.mesh.metrics().dropped.rpc ?? 0
    // Handed over by c, about a: refused, whatever it says.
    assert.equal(b.mesh.acceptHeartbeat(c.mesh.self().peerId, { ...newer, version: hb.version + 2, state: { handed: 'forged' } }), false)
    assert.equal(b.mesh.acceptHeartbeat(aId, { peerId: aId, version: 'soon' }), false)
    assert.deepEqual(b.mesh.member(aId)?.state, { handed: 2 })
    assert.equal(b.mesh.metrics().dropped.rpc ?? 0, dropped + 2)

    // The same over the wire: the receiving node serves the call and holds the state when it returns.
    const served = b.mesh.metrics().rpcServed
    a.mesh.setLocalState({ handed: 3 })
    await a.mesh.sendHeartbeatTo(b.mesh.self().peerId)
    assert.deepEqual(b.mesh.member(aId)?.state, { handed: 3 })
    assert.ok(b.mesh.metrics().rpcServed > served)
  })

  test('a record written on one node is readable on all', async () => {
    await a.mesh.records.put('vms', 'vm-1', { image: 'macos-15', cpus: 4 })
    await eventually('all nodes read vm-1', () => [a, b, c].every(n => n.mesh.records.get<{ cpus: number }>('vms', 'vm-1')?.cpus === 4))
    const [listed] = c.mesh.records.list('vms')
    assert.equal(listed?.updatedBy, a.mesh.self().peerId)
    // Durable through the Store on the receivers too.
    await eventually('c persisted vm-1', () => c.store.list('mesh-records').length > 0)
  })

  test('the last writer wins when two nodes write the same record', async () => {
    await b.mesh.records.put('vms', 'vm-2', { by: 'b' })
    // c writes after it has seen b's write, so its clock orders its write later.
    await eventually('c saw b\'s write', () => c.mesh.records.get('vms', 'vm-2') !== undefined)
    await c.mesh.records.put('vms', 'vm-2', { by: 'c' })
    await eventually('all agree on vm-2', () => {
      const values = [a, b, c].map(n => JSON.stringify(n.mesh.records.get('vms', 'vm-2')))
      return values.every(v => v === values[0]) && values[0] !== undefined
    })
    assert.deepEqual(a.mesh.records.get('vms', 'vm-2'), { by: 'c' })
  })

  test('a delete propagates as a tombstone', async () => {
    await b.mesh.records.put('images', 'img-1', { size: 1 })
    await eventually('all read img-1', () => [a, b, c].every(n => n.mesh.records.get('images', 'img-1') !== undefined))
    const changes: RecordChange[] = []
    c.mesh.on('record:changed', ch => { changes.push(ch) })
    assert.equal(await a.mesh.records.delete('images', 'img-1'), true)
    await eventually('img-1 gone everywhere', () => [a, b, c].every(n => n.mesh.records.get('images', 'img-1') === undefined))
    assert.ok(changes.some(ch => ch.id === 'img-1' && ch.deleted && ch.value === null))
    assert.deepEqual(c.mesh.records.list('images'), [])
    // The tombstone is stored, so a restart does not bring the record back.
    const stored = c.store.list<{ id: string, deleted: boolean }>('mesh-records').find(e => e.id === 'img-1')
    assert.equal(stored?.deleted, true)
    assert.equal(await a.mesh.records.delete('images', 'img-1'), false)
  })

  test('a node started later catches up by full sync, not only from new gossip', async () => {
    await a.mesh.records.put('vms', 'before-join', { n: 1 })
    await c.mesh.records.delete('vms', 'vm-1')
    await eventually('b has before-join', () => b.mesh.records.get('vms', 'before-join') !== undefined)
    const late = await fixture.node({ bootstrap: b.mesh.self().multiaddrs })
    const origins: string[] = []
    late.mesh.on('record:changed', ch => { origins.push(ch.origin) })
    await late.mesh.start()
    await eventually('the late node has every record', () =>
      late.mesh.records.get('vms', 'before-join') !== undefined &&
      late.mesh.records.get('vms', 'vm-2') !== undefined &&
      late.mesh.records.get('vms', 'vm-1') === undefined &&
      late.mesh.records.list('vms').length === a.mesh.records.list('vms').length)
    // gossipsub may also replay a message still in its cache; the old records come by sync.
    assert.ok(origins.includes('sync'))
    assert.ok(late.mesh.metrics().syncRuns > 0)
    // Leave the others in a known state for the next test: they knew the late node, now it is dead.
    await eventually('a knows the late node', () => a.mesh.member(late.mesh.self().peerId) !== undefined)
    await late.mesh.stop()
    await eventually('the late node is dead on a', () => a.mesh.member(late.mesh.self().peerId)?.status === 'dead')
  })

  test('a stopped node becomes suspect, then dead, on the others', async () => {
    const cId = c.mesh.self().peerId
    const seen: Record<string, string[]> = { a: [], b: [] }
    for (const [name, node] of [['a', a], ['b', b]] as const) {
      for (const ev of ['member:suspect', 'member:dead', 'member:alive'] as const) {
        node.mesh.on(ev, m => { if (m.peerId === cId) seen[name]!.push(ev) })
      }
    }
    await c.mesh.stop()
    await c.mesh.stop() // safe twice
    await eventually('c is dead on a and b', () => a.mesh.member(cId)?.status === 'dead' && b.mesh.member(cId)?.status === 'dead')
    for (const events of Object.values(seen)) {
      assert.ok(events.indexOf('member:suspect') >= 0, `suspect seen: ${events.join()}`)
      assert.ok(events.indexOf('member:suspect') < events.indexOf('member:dead'), `suspect before dead: ${events.join()}`)
      assert.ok(!events.slice(events.indexOf('member:dead')).includes('member:alive'))
    }
  })
})

describe('a member lost by its only peer', () => {
  const fixture = new MeshFixture()
  after(async () => { await fixture.cleanup() })

  test('is reported to the others, who find it unreachable long before its silence would tell them', async () => {
    // a - b - c in a chain (one link each, none added): a never talks to c directly, and a would
    // take ten minutes of silence to suspect anyone, so only b's report can make c suspect on a.
    const chain = { targetPeers: 1 }
    const a = await fixture.joined({ ...chain, suspectAfterMs: 600_000, deadAfterMs: 1_200_000 })
    const b = await fixture.joined({ ...chain, bootstrap: a.mesh.self().multiaddrs })
    const c = await fixture.joined({ ...chain, bootstrap: b.mesh.self().multiaddrs })
    const cId = c.mesh.self().peerId
    await eventually('a knows c (through b) and c is alive', () => a.mesh.member(cId)?.status === 'alive')
    assert.ok(!a.mesh.connectedPeers().includes(cId), 'a and c are not directly connected')
    await c.mesh.stop()
    await eventually('c is suspect on a', () => a.mesh.member(cId)?.status === 'suspect', 60_000)
    assert.ok(!a.mesh.connectedPeers().includes(cId), 'a found out without a connection to c')
  })
})

describe('a node that restarts', () => {
  const fixture = new MeshFixture()
  after(async () => { await fixture.cleanup() })

  test('keeps its peer id and records, and the others see it come back alive', async () => {
    const a = await fixture.joined()
    const b = await fixture.joined()
    const bId = b.mesh.self().peerId
    await eventually('a knows b', () => a.mesh.member(bId)?.status === 'alive')
    await b.mesh.records.put('vms', 'kept', { n: 1 })
    await b.mesh.stop()
    await eventually('b is dead on a', () => a.mesh.member(bId)?.status === 'dead')
    // While b is away the cluster moves on; b catches up when it returns.
    await a.mesh.records.put('vms', 'while-away', { n: 2 })

    const revived: Member[] = []
    a.mesh.on('member:alive', m => { if (m.peerId === bId) revived.push(m) })
    const again = await fixture.node({ dataDir: b.dataDir, store: b.store, nodeName: 'n1', bootstrap: a.mesh.self().multiaddrs })
    assert.equal(again.mesh.self().peerId, bId)
    await again.mesh.start()
    assert.deepEqual(again.mesh.records.get('vms', 'kept'), { n: 1 }, 'loaded from the store at start')
    await eventually('a sees b alive again', () => a.mesh.member(bId)?.status === 'alive' && revived.length > 0)
    await eventually('b caught up', () => again.mesh.records.get('vms', 'while-away') !== undefined)
  })
})
