import { test } from 'node:test'
import assert from 'node:assert/strict'
import { decideLeader, leaseTimings, renewalDue } from '../../src/scheduler/leader/lease.ts'

const alive = (...ids: string[]) => ids.map(peerId => ({ peerId, status: 'alive' as const }))

test('with no lease the lowest alive peer takes it in term 1, others wait', () => {
  assert.deepEqual(decideLeader('a', alive('a', 'b', 'c'), undefined, 1000, 2000), { leader: 'a', term: 1, write: { leader: 'a', term: 1, expiresAt: 3000 } })
  assert.deepEqual(decideLeader('b', alive('a', 'b', 'c'), undefined, 1000, 2000), { leader: undefined, term: 0 })
})

test('a valid lease is respected even by a lower peer id; its holder renews it', () => {
  const lease = { leader: 'b', term: 4, expiresAt: 5000 }
  assert.deepEqual(decideLeader('a', alive('a', 'b'), lease, 1000, 2000), { leader: 'b', term: 4 })
  assert.deepEqual(decideLeader('b', alive('a', 'b'), lease, 1000, 2000), { leader: 'b', term: 4, write: { leader: 'b', term: 4, expiresAt: 3000 } })
})

test('a lease whose holder is suspect, dead or expired is taken over in the next term', () => {
  const lease = { leader: 'a', term: 2, expiresAt: 5000 }
  const view = [{ peerId: 'a', status: 'suspect' as const }, ...alive('b', 'c')]
  assert.deepEqual(decideLeader('b', view, lease, 1000, 2000).write, { leader: 'b', term: 3, expiresAt: 3000 })
  assert.deepEqual(decideLeader('c', view, lease, 1000, 2000).leader, undefined)
  assert.equal(decideLeader('a', alive('a', 'b'), lease, 6000, 2000).write?.term, 3, 'an expired lease starts a new term')
  assert.equal(decideLeader('b', alive('a', 'b'), lease, 6000, 2000).write, undefined, 'and the lowest id takes it')
})

test('lease timings stay as configured up to 10 members, then stretch as heartbeats do', () => {
  assert.deepEqual(leaseTimings(3, 2000, 500), { leaseMs: 2000, renewMs: 500 })
  assert.deepEqual(leaseTimings(10, 2000, 500), { leaseMs: 2000, renewMs: 500 })
  assert.deepEqual(leaseTimings(20, 2000, 500), { leaseMs: 8000, renewMs: 2000 })
  assert.deepEqual(leaseTimings(50, 2000, 500), { leaseMs: 50_000, renewMs: 12_500 })
})

test('the holder renews once renewMs has passed since the last renewal, half a tick early', () => {
  const lease = { leader: 'a', term: 3, expiresAt: 12_000 }
  // Renewed at 10000 with a 2000 ms lease and 500 ms renewals, asked every 500 ms.
  assert.equal(renewalDue(lease, 10_200, 2000, 500, 500), false)
  assert.equal(renewalDue(lease, 10_250, 2000, 500, 500), true)
  // Stretched (50 members): renewed at 10000 with a 10 s lease, every 2.5 s.
  const long = { leader: 'a', term: 3, expiresAt: 20_000 }
  assert.equal(renewalDue(long, 12_000, 10_000, 2500, 500), false)
  assert.equal(renewalDue(long, 12_250, 10_000, 2500, 500), true)
})
