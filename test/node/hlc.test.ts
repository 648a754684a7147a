import { test } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { HybridClock, compareTimestamps, receive, tick } from '../../src/node/hlc.ts'
import type { Timestamp } from '../../src/node/hlc.ts'

const timestampArb = fc.record({
  wall: fc.integer({ min: 0, max: 2_000_000_000_000 }),
  counter: fc.integer({ min: 0, max: 1000 }),
  node: fc.constantFrom('a', 'b', 'c')
})

test('the order is total, antisymmetric and transitive', () => {
  fc.assert(fc.property(timestampArb, timestampArb, timestampArb, (a, b, c) => {
    assert.equal(Math.sign(compareTimestamps(a, b)), -Math.sign(compareTimestamps(b, a)))
    if (compareTimestamps(a, b) === 0) assert.deepEqual(a, b)
    if (compareTimestamps(a, b) < 0 && compareTimestamps(b, c) < 0) assert.ok(compareTimestamps(a, c) < 0)
  }))
})

test('tick and receive always move forward, past the remote and the wall clock', () => {
  fc.assert(fc.property(timestampArb, timestampArb, fc.integer({ min: 0, max: 2_000_000_000_000 }), (last, remote, now) => {
    const local = { ...last, node: 'x' }
    const t = tick(local, now)
    assert.ok(compareTimestamps(t, local) > 0)
    assert.ok(t.wall >= now)
    const r = receive(local, remote, now)
    assert.ok(r.wall > remote.wall || (r.wall === remote.wall && r.counter > remote.counter))
    assert.ok(compareTimestamps(r, local) > 0)
    assert.ok(r.wall >= now)
  }))
})

test('a clock that stands still still issues increasing timestamps', () => {
  const clock = new HybridClock({ node: 'n1', now: () => 1000 })
  const seen: Timestamp[] = []
  for (let i = 0; i < 5; i++) seen.push(clock.now())
  for (let i = 1; i < seen.length; i++) assert.ok(compareTimestamps(seen[i - 1]!, seen[i]!) < 0)
})

test('a timestamp too far in the future is refused and changes nothing', () => {
  const clock = new HybridClock({ node: 'n1', now: () => 1000, maxDriftMs: 500 })
  const before = clock.now()
  assert.equal(clock.update({ wall: 10_000, counter: 0, node: 'n2' }), false)
  assert.equal(clock.now().wall, before.wall)
  assert.equal(clock.update({ wall: 1400, counter: 3, node: 'n2' }), true)
  const after = clock.now()
  assert.equal(after.wall, 1400)
  assert.ok(after.counter > 3)
})
