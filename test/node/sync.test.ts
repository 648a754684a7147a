import { test } from 'node:test'
import assert from 'node:assert/strict'
import { streamPair } from '@libp2p/utils'
import { pino } from 'pino'
import { SafeEmitter } from '../../src/node/emitter.ts'
import { MeshCounters } from '../../src/node/metrics.ts'
import { MeshRecordStore } from '../../src/node/record-store.ts'
import { syncAsInitiator, syncAsResponder } from '../../src/node/sync.ts'
import type { MeshEvents, RecordChange } from '../../src/node/types.ts'
import { MemoryStore } from '../helpers/memory-store.ts'

function recordStore (nodeId: string, clock: () => number): { records: MeshRecordStore, counters: MeshCounters, changes: RecordChange[], store: MemoryStore } {
  const log = pino({ level: 'silent' })
  const events = new SafeEmitter<MeshEvents>(log)
  const changes: RecordChange[] = []
  events.on('record:changed', ch => { changes.push(ch) })
  const counters = new MeshCounters()
  const store = new MemoryStore()
  const records = new MeshRecordStore({ nodeId, store, log, events, counters, clock, maxClockDriftMs: 60_000, publish: async () => {} })
  return { records, counters, changes, store }
}

async function sync (a: ReturnType<typeof recordStore>, b: ReturnType<typeof recordStore>): Promise<[{ sent: number, received: number }, { sent: number, received: number }]> {
  const [outbound, inbound] = await streamPair()
  const signal = AbortSignal.timeout(10_000)
  return await Promise.all([
    syncAsInitiator(outbound, { records: a.records, counters: a.counters }, signal),
    syncAsResponder(inbound, { records: b.records, counters: b.counters }, signal)
  ])
}

test('one exchange leaves both sides with the same records, tombstones included', async () => {
  let now = 1_000_000
  const clock = (): number => now
  const a = recordStore('node-a', clock)
  const b = recordStore('node-b', clock)
  await a.records.put('vms', 'only-a', { n: 1 })
  await b.records.put('vms', 'only-b', { n: 2 })
  await a.records.put('vms', 'both', { by: 'a' })
  now += 10
  await b.records.put('vms', 'both', { by: 'b' }) // newer: b wins
  await b.records.put('vms', 'gone', { n: 3 })
  now += 10
  await a.records.put('vms', 'gone', { n: 4 })
  now += 10
  await a.records.delete('vms', 'gone') // newest: the tombstone wins on b

  const [fromA, fromB] = await sync(a, b)
  for (const side of [a, b]) {
    assert.deepEqual(side.records.get('vms', 'only-a'), { n: 1 })
    assert.deepEqual(side.records.get('vms', 'only-b'), { n: 2 })
    assert.deepEqual(side.records.get('vms', 'both'), { by: 'b' })
    assert.equal(side.records.get('vms', 'gone'), undefined)
  }
  // Only differences travel: a sends only-a and the tombstone; b sends only-b and both.
  assert.deepEqual(fromA, { sent: 2, received: 2 })
  assert.deepEqual(fromB, { sent: 2, received: 2 })
  assert.ok(b.changes.some(ch => ch.id === 'gone' && ch.deleted && ch.origin === 'sync'))
  // A second exchange has nothing left to move.
  const [again] = await sync(a, b)
  assert.deepEqual(again, { sent: 0, received: 0 })
})

test('large snapshots are split into bounded frames', async () => {
  const clock = (): number => 5_000_000
  const a = recordStore('node-a', clock)
  const b = recordStore('node-b', clock)
  for (let i = 0; i < 1200; i++) await a.records.put('vms', `vm-${i}`, { pad: 'x'.repeat(2000), i })
  const [fromA] = await sync(b, a)
  assert.equal(fromA.received, 1200)
  assert.equal(b.records.list('vms').length, 1200)
  // 1200 entries of ~2 KB cannot fit one 1 MiB frame: several frames were accepted.
  assert.ok(b.counters.snapshot().accepted.sync > 3)
})

test('entries from a clock far in the future are refused', async () => {
  let now = 1_000_000
  const a = recordStore('node-a', () => now + 3_600_000)
  const b = recordStore('node-b', () => now)
  await a.records.put('vms', 'future', { n: 1 })
  now += 1
  await sync(b, a)
  assert.equal(b.records.get('vms', 'future'), undefined)
  assert.equal(b.counters.snapshot().dropReasons['sync.clock-drift'], 1)
})

test('records survive a restart through the Store, and the clock never goes back', async () => {
  let now = 2_000_000
  const a = recordStore('node-a', () => now)
  await a.records.put('vms', 'x', { n: 1 })
  await a.records.delete('vms', 'x')
  await a.records.put('vms', 'y', { n: 2 })
  now -= 60_000 // the wall clock steps back across the restart
  const log = pino({ level: 'silent' })
  const restarted = new MeshRecordStore({
    nodeId: 'node-a', store: a.store, log, events: new SafeEmitter<MeshEvents>(log), counters: new MeshCounters(), clock: () => now, maxClockDriftMs: 120_000, publish: async () => {}
  })
  restarted.load()
  assert.equal(restarted.get('vms', 'x'), undefined)
  assert.deepEqual(restarted.get('vms', 'y'), { n: 2 })
  await restarted.put('vms', 'y', { n: 3 })
  assert.ok(restarted.entry('vms', 'y')!.hlc.wall >= 2_000_000, 'new writes still order after the old ones')
})

test('local writes are checked before anything changes', async () => {
  const a = recordStore('node-a', () => 1)
  await assert.rejects(a.records.put('VMs', 'x', {}), { name: 'RecordInvalidError' })
  await assert.rejects(a.records.put('vms', '', {}), { name: 'RecordInvalidError' })
  await assert.rejects(a.records.put('vms', 'x'.repeat(129), {}), { name: 'RecordInvalidError' })
  await assert.rejects(a.records.put('vms', 'x', { big: 'x'.repeat(70_000) }), { name: 'RecordInvalidError' })
  await assert.rejects(a.records.put('vms', 'x', () => 1), { name: 'RecordInvalidError' })
  assert.equal(a.records.size(), 0)
})

test('a volatile collection is written to the store on flush, not on each change; others at once', async () => {
  const log = pino({ level: 'silent' })
  const store = new MemoryStore()
  const records = new MeshRecordStore({
    nodeId: 'node-a', store, log, events: new SafeEmitter<MeshEvents>(log), counters: new MeshCounters(), clock: () => 1_000_000,
    maxClockDriftMs: 60_000, publish: async () => {}, volatileCollections: ['lease']
  })
  await records.put('lease', 'leader', { term: 1 })
  await records.put('lease', 'leader', { term: 2 })
  await records.put('users', 'alice', { name: 'alice' })
  const stored = (): string[] => store.list<{ collection: string, value: unknown }>('mesh-records').map(e => `${e.collection}:${JSON.stringify(e.value)}`).sort()
  assert.deepEqual(stored(), ['users:{"name":"alice"}'])
  assert.deepEqual(records.get('lease', 'leader'), { term: 2 }, 'readable at once all the same')
  await records.flush()
  assert.deepEqual(stored(), ['lease:{"term":2}', 'users:{"name":"alice"}'])
  // A restart loads what was flushed.
  const reloaded = new MeshRecordStore({
    nodeId: 'node-a', store, log, events: new SafeEmitter<MeshEvents>(log), counters: new MeshCounters(), clock: () => 1_000_000,
    maxClockDriftMs: 60_000, publish: async () => {}, volatileCollections: ['lease']
  })
  reloaded.load()
  assert.deepEqual(reloaded.get('lease', 'leader'), { term: 2 })
})
