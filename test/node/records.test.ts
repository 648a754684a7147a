import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { canonicalJson, expiredTombstones, makeEntry, makeTombstone, mergeEntry, mergeSnapshots, recordKey, wins } from '../../src/node/records.ts'
import type { RecordEntry, RecordSnapshot } from '../../src/node/records.ts'

// Few collections, ids, nodes and walls so the generated snapshots collide often.
const entryArb: fc.Arbitrary<RecordEntry> = fc.record({
  collection: fc.constantFrom('vms', 'images'),
  id: fc.constantFrom('a', 'b', 'c'),
  deleted: fc.boolean(),
  value: fc.oneof(fc.constant(null), fc.integer(), fc.string({ maxLength: 3 }), fc.dictionary(fc.constantFrom('x', 'y'), fc.integer())),
  hlc: fc.record({ wall: fc.integer({ min: 0, max: 3 }), counter: fc.integer({ min: 0, max: 2 }), node: fc.constantFrom('n1', 'n2') })
}).map(e => e.deleted ? makeTombstone(e.collection, e.id, e.hlc) : makeEntry(e.collection, e.id, e.value, e.hlc))

const snapshotArb: fc.Arbitrary<RecordSnapshot> = fc.array(entryArb, { maxLength: 12 }).map(entries => {
  let snap = new Map<string, RecordEntry>()
  for (const e of entries) snap = mergeSnapshots(snap, new Map([[recordKey(e.collection, e.id), e]]))
  return snap
})

function same (a: RecordSnapshot, b: RecordSnapshot): void {
  const norm = (s: RecordSnapshot): string[] => [...s.entries()].sort(([x], [y]) => x < y ? -1 : x > y ? 1 : 0).map(([k, v]) => `${k}=${canonicalJson(v)}`)
  assert.deepEqual(norm(a), norm(b))
}

test('merge is commutative', () => {
  fc.assert(fc.property(snapshotArb, snapshotArb, (a, b) => same(mergeSnapshots(a, b), mergeSnapshots(b, a))), { numRuns: 500 })
})

test('merge is associative', () => {
  fc.assert(fc.property(snapshotArb, snapshotArb, snapshotArb, (a, b, c) => {
    same(mergeSnapshots(mergeSnapshots(a, b), c), mergeSnapshots(a, mergeSnapshots(b, c)))
  }), { numRuns: 500 })
})

test('merge is idempotent', () => {
  fc.assert(fc.property(snapshotArb, snapshotArb, (a, b) => {
    same(mergeSnapshots(a, a), a)
    const ab = mergeSnapshots(a, b)
    same(mergeSnapshots(ab, b), ab)
  }), { numRuns: 500 })
})

test('entries applied one by one in any order give the same result', () => {
  fc.assert(fc.property(fc.array(entryArb, { maxLength: 10 }).chain(es => fc.tuple(fc.constant(es), fc.shuffledSubarray(es, { minLength: es.length, maxLength: es.length }))), ([xs, ys]) => {
    const apply = (es: RecordEntry[]): Map<string, RecordEntry> => {
      const m = new Map<string, RecordEntry>()
      for (const e of es) m.set(recordKey(e.collection, e.id), mergeEntry(m.get(recordKey(e.collection, e.id)), e))
      return m
    }
    same(apply(xs), apply(ys))
  }))
})

test('a later tombstone beats a write and an older one does not', () => {
  const write = makeEntry('vms', 'a', { n: 1 }, { wall: 10, counter: 0, node: 'n1' })
  const laterDelete = makeTombstone('vms', 'a', { wall: 11, counter: 0, node: 'n2' })
  const olderDelete = makeTombstone('vms', 'a', { wall: 9, counter: 5, node: 'n2' })
  assert.equal(mergeEntry(write, laterDelete), laterDelete)
  assert.equal(mergeEntry(write, olderDelete), write)
  assert.equal(wins(write, write), false)
  assert.deepEqual(expiredTombstones(new Map([['k', laterDelete], ['w', write]]), 12), ['k'])
})
