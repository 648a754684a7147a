import { test } from 'node:test'
import assert from 'node:assert/strict'
import { decideLeader } from '../../src/scheduler/leader/lease.ts'

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
