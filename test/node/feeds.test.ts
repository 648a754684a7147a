import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { Feeds, type FeedChange, type FeedDelta, type FeedRow } from '../../src/node/feeds.ts'

interface Row extends FeedRow { state: string }

/**
 * An owner and a replica joined by a hand-driven wire: deltas queue up and the test decides which
 * arrive, in what order; snapshots are served from the owner at once. No timers run: flush() and
 * advance() drive the batching and the grace.
 */
function pair (options: { maxDeltaBytes?: number } = {}) {
  let now = 1_000
  const wire: FeedDelta[] = []
  const changes: FeedChange[] = []
  let fetches = 0
  const feeds: Record<string, Feeds> = {}
  const make = (selfId: string): Feeds => new Feeds({
    selfId,
    clock: () => now,
    publish: delta => { wire.push(structuredClone(delta)) },
    fetchSnapshot: async (owner, feed) => { fetches++; return structuredClone(feeds[owner].snapshot(feed)!) },
    emit: change => { if (selfId === 'replica') changes.push(change) },
    onError: err => { throw err }
  }, { batchMs: 1_000_000, maxDeltaBytes: options.maxDeltaBytes ?? 64 * 1024, graceMs: 500 })
  feeds.owner = make('owner')
  feeds.replica = make('replica')
  const owned = feeds.owner.feed<Row>('vms')
  const seen = feeds.replica.feed<Row>('vms')
  return {
    feeds,
    owned,
    seen,
    wire,
    changes,
    fetches: () => fetches,
    /** Sends what the owner batched (the batch timer's job). */
    flush: () => { feeds.owner.flush() },
    deliverAll: () => { for (const d of wire.splice(0)) feeds.replica.onDelta(d) },
    heartbeat: () => { feeds.replica.onCursors('owner', feeds.owner.cursors()) },
    advance: (ms: number) => { now += ms },
    replicaRows: () => [...seen.rowsOf('owner').values()].sort((a, b) => a.id.localeCompare(b.id)),
    ownerRows: () => owned.own().sort((a, b) => a.id.localeCompare(b.id)),
    restartOwner: () => { feeds.owner.stop(); feeds.owner = make('owner'); return feeds.owner.feed<Row>('vms') }
  }
}

const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve)) }

test('deltas carry only what changed, apply in order, and report each change', () => {
  const p = pair()
  p.owned.set({ id: 'a', state: 'creating' })
  p.owned.set({ id: 'b', state: 'creating' })
  p.flush()
  p.owned.set({ id: 'a', state: 'running' })
  p.owned.remove('b')
  p.flush()
  assert.equal(p.wire.length, 2)
  assert.deepEqual(p.wire[1].upserts, [{ id: 'a', state: 'running' }])
  assert.deepEqual(p.wire[1].removes, ['b'])
  p.deliverAll()
  assert.deepEqual(p.replicaRows(), [{ id: 'a', state: 'running' }])
  assert.deepEqual(p.seen.find('a'), [{ owner: 'owner', row: { id: 'a', state: 'running' } }])
  assert.deepEqual(p.seen.find('b'), [])
  assert.deepEqual(p.changes.flatMap(c => c.changes.map(x => `${x.id}:${(x.previous as Row | undefined)?.state ?? '-'}>${(x.row as Row | undefined)?.state ?? 'gone'}`)),
    ['a:->creating', 'b:->creating', 'a:creating>running', 'b:creating>gone'])
  assert.equal(p.fetches(), 0, 'nothing was missed, so nothing was fetched whole')
  assert.throws(() => { (p.seen.rowsOf('owner').get('a') as Row).state = 'x' }, TypeError, 'replica rows are frozen')
})

test('a lost delta is noticed at the next one and repaired by fetching the whole feed', async () => {
  const p = pair()
  p.owned.set({ id: 'a', state: 'creating' })
  p.flush()
  p.owned.set({ id: 'b', state: 'creating' })
  p.flush()
  p.wire.shift() // lost
  p.deliverAll()
  await settle()
  assert.equal(p.fetches(), 1)
  assert.deepEqual(p.replicaRows(), p.ownerRows())
})

test('a replica that missed the last delta catches up from the heartbeat cursor after the grace', async () => {
  const p = pair()
  p.owned.set({ id: 'a', state: 'creating' })
  p.flush()
  p.deliverAll()
  p.owned.set({ id: 'a', state: 'running' })
  p.flush()
  p.wire.length = 0 // lost, and nothing follows it
  p.heartbeat()
  p.feeds.replica.tick()
  await settle()
  assert.equal(p.fetches(), 0, 'within the grace the delta may still be on its way')
  p.advance(600)
  p.feeds.replica.tick()
  await settle()
  assert.equal(p.fetches(), 1)
  assert.deepEqual(p.replicaRows(), [{ id: 'a', state: 'running' }])
})

test('an owner met for the first time with rows already, or back from a cut, is fetched at once', async () => {
  const p = pair()
  p.owned.set({ id: 'a', state: 'running' })
  p.flush()
  p.wire.length = 0 // published before the replica listened
  p.heartbeat()
  await settle()
  assert.equal(p.fetches(), 1, 'another epoch: no delta in flight could help, so no grace')
  assert.deepEqual(p.replicaRows(), [{ id: 'a', state: 'running' }])
  p.owned.set({ id: 'b', state: 'running' })
  p.flush()
  p.wire.length = 0 // lost while the owner was cut off
  p.feeds.replica.refresh('owner')
  await settle()
  assert.equal(p.fetches(), 2)
  assert.deepEqual(p.replicaRows(), p.ownerRows())
})

test('a restarted owner (new epoch) replaces the replica; rows it no longer has are reported gone', async () => {
  const p = pair()
  p.owned.set({ id: 'a', state: 'running' })
  p.owned.set({ id: 'b', state: 'running' })
  p.flush()
  p.deliverAll()
  const again = p.restartOwner()
  again.set({ id: 'b', state: 'stopped' })
  p.flush()
  p.deliverAll()
  await settle()
  assert.deepEqual(p.replicaRows(), [{ id: 'b', state: 'stopped' }])
  const last = p.changes.flatMap(c => c.changes).slice(-2)
  assert.deepEqual(last.map(c => [c.id, (c.row as Row | undefined)?.state ?? 'gone']).sort(), [['a', 'gone'], ['b', 'stopped']])
})

test('a batch bigger than one message is split into parts that apply in order', () => {
  const p = pair({ maxDeltaBytes: 200 })
  for (let i = 0; i < 20; i++) p.owned.set({ id: `vm-${i}`, state: 'x'.repeat(40) })
  p.flush()
  assert.ok(p.wire.length > 3)
  for (let i = 1; i < p.wire.length; i++) assert.equal(p.wire[i].from, p.wire[i - 1].to)
  p.deliverAll()
  assert.equal(p.fetches(), 0)
  assert.deepEqual(p.replicaRows(), p.ownerRows())
})

test('whatever is lost or reordered, the replica ends equal to the owner once cursors are heard', async () => {
  await fc.assert(fc.asyncProperty(
    fc.array(fc.record({ op: fc.constantFrom('set', 'remove', 'flush'), id: fc.integer({ min: 0, max: 6 }), state: fc.constantFrom('a', 'b', 'c') }), { maxLength: 60 }),
    fc.array(fc.constantFrom('deliver', 'drop', 'swap'), { maxLength: 40 }),
    async (ops, fates) => {
      const p = pair()
      let f = 0
      for (const op of ops) {
        if (op.op === 'set') p.owned.set({ id: `vm-${op.id}`, state: op.state })
        else if (op.op === 'remove') p.owned.remove(`vm-${op.id}`)
        else p.flush()
        while (p.wire.length > 0) {
          const fate = fates[f++ % Math.max(1, fates.length)] ?? 'deliver'
          if (fate === 'drop') p.wire.shift()
          else if (fate === 'swap' && p.wire.length > 1) p.wire.push(p.wire.shift()!)
          else p.feeds.replica.onDelta(p.wire.shift()!)
        }
      }
      p.flush()
      p.deliverAll()
      await settle()
      p.heartbeat()
      p.advance(600)
      p.feeds.replica.tick()
      await settle()
      assert.deepEqual(p.replicaRows(), p.ownerRows())
    }), { numRuns: 200, seed: 7 })
})

test('over real gossip: rows reach every node as deltas, and a node that joins late gets them whole', async () => {
  const { MeshFixture, eventually } = await import('./fixture.ts')
  const fixture = new MeshFixture()
  try {
    const a = await fixture.joined()
    const b = await fixture.joined()
    const owner = a.mesh.self().peerId
    const feed = a.mesh.feed<Row>('vms')
    const changes: string[] = []
    b.mesh.on('feed:change', change => { for (const c of change.changes) changes.push(`${c.id}:${(c.row as Row | undefined)?.state ?? 'gone'}`) })
    await eventually('b knows a', () => b.mesh.member(owner)?.status === 'alive')
    for (let i = 0; i < 50; i++) feed.set({ id: `vm-${i}`, state: 'running' })
    feed.remove('vm-0')
    const rows = (n: typeof b): string[] => [...n.mesh.feed<Row>('vms').rowsOf(owner).keys()].sort()
    await eventually('b has a\'s 49 rows', () => rows(b).length === 49)
    assert.equal(b.mesh.feed<Row>('vms').find('vm-7')[0]?.owner, owner)
    assert.ok(changes.includes('vm-7:running'))
    assert.equal(b.mesh.metrics().feedSnapshotsFetched, 0, 'a node that was there all along follows by deltas alone')
    assert.ok(b.mesh.metrics().feedDeltasApplied > 0)
    const late = await fixture.joined()
    await eventually('a node that joined later has them all, from a snapshot', () => rows(late).length === 49)
    assert.deepEqual(rows(late), rows(b))
    assert.ok(late.mesh.metrics().feedSnapshotsFetched > 0)
    assert.equal(b.mesh.metrics().dropped.gossip ?? 0, 0)
  } finally {
    await fixture.cleanup()
  }
})

test('a quiet feed sends after batchMs; a busy one at most once per minGapMs, nothing lost', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 10_000 })
  const sent: Array<{ at: number, to: number, ids: string[] }> = []
  const feeds = new Feeds({
    selfId: 'owner',
    clock: () => Date.now(),
    publish: delta => { sent.push({ at: Date.now(), to: delta.to, ids: delta.upserts.map(r => r.id) }) },
    fetchSnapshot: async () => { throw new Error('not used') },
    emit: () => {},
    onError: err => { throw err }
  }, { batchMs: 20, minGapMs: 100, maxDeltaBytes: 64 * 1024, graceMs: 500 })
  const vms = feeds.feed<Row>('vms')
  vms.set({ id: 'a', state: 'creating' })
  t.mock.timers.tick(20)
  assert.deepEqual(sent, [{ at: 10_020, to: 1, ids: ['a'] }], 'the first change after a quiet spell waits only batchMs')
  // Busy: changes 10 ms after that delta wait until 100 ms after it, and go out together.
  t.mock.timers.tick(10)
  vms.set({ id: 'b', state: 'creating' })
  t.mock.timers.tick(30)
  vms.set({ id: 'c', state: 'creating' })
  t.mock.timers.tick(59)
  assert.equal(sent.length, 1)
  t.mock.timers.tick(1)
  assert.deepEqual(sent[1], { at: 10_120, to: 3, ids: ['b', 'c'] })
  // Quiet again: back to batchMs.
  t.mock.timers.tick(500)
  vms.set({ id: 'd', state: 'creating' })
  t.mock.timers.tick(20)
  assert.deepEqual(sent[2], { at: 10_640, to: 4, ids: ['d'] })
  feeds.stop()
})

test('deferred (a large cluster), changes wait for flush() whatever the timers; back to timers when it is not', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 10_000 })
  const sent: Array<{ from: number, to: number, ids: string[] }> = []
  let deferred = true
  const feeds = new Feeds({
    selfId: 'owner',
    clock: () => Date.now(),
    publish: delta => { sent.push({ from: delta.from, to: delta.to, ids: delta.upserts.map(r => r.id) }) },
    fetchSnapshot: async () => { throw new Error('not used') },
    emit: () => {},
    onError: err => { throw err }
  }, { batchMs: 20, minGapMs: 100, deferred: () => deferred, maxDeltaBytes: 64 * 1024, graceMs: 500 })
  const vms = feeds.feed<Row>('vms')
  vms.set({ id: 'a', state: 'creating' })
  vms.set({ id: 'b', state: 'creating' })
  t.mock.timers.tick(10_000)
  assert.deepEqual(sent, [], 'no timer sends a deferred change')
  assert.deepEqual(feeds.cursors().vms?.[1], 0, 'and the heartbeat does not advertise it yet')
  feeds.flush()
  assert.deepEqual(sent, [{ from: 0, to: 2, ids: ['a', 'b'] }])
  assert.deepEqual(feeds.cursors().vms?.[1], 2)
  deferred = false
  vms.set({ id: 'c', state: 'creating' })
  t.mock.timers.tick(100)
  assert.deepEqual(sent[1], { from: 2, to: 3, ids: ['c'] })
  feeds.stop()
})
