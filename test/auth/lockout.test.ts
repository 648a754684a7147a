import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { ADMIN_PASSWORD, createFixture } from './fixture.ts'
import { LoginLockout } from '../../src/auth/lockout.ts'

// The fixture locks after 3 failures within 60 s, for 300 s.

describe('auth login lockout', () => {
  it('locks after repeated failures, refuses even the right password, and unlocks after lockSeconds', async () => {
    const fx = await createFixture()
    try {
      await assert.rejects(fx.auth.login('admin', 'wrong-1'), { name: 'InvalidCredentialsError' })
      await assert.rejects(fx.auth.login('admin', 'wrong-2'), { name: 'InvalidCredentialsError' })
      const lockedAt = fx.now()
      const retryAt = new Date(lockedAt + 300_000).toISOString()
      await assert.rejects(fx.auth.login('admin', 'wrong-3'), (err: Error & { details: Record<string, unknown> }) => {
        assert.equal(err.name, 'AccountLockedError')
        assert.equal(err.details.retryAt, retryAt)
        assert.ok(err.message.includes(retryAt), 'message says when to retry')
        return true
      })
      await assert.rejects(fx.auth.login('admin', ADMIN_PASSWORD), { name: 'AccountLockedError' })

      fx.advance(299)
      await assert.rejects(fx.auth.login('admin', ADMIN_PASSWORD), { name: 'AccountLockedError' })
      fx.advance(1)
      await fx.auth.login('admin', ADMIN_PASSWORD)
    } finally {
      await fx.cleanup()
    }
  })

  it('forgets failures older than the window and resets on success', async () => {
    const fx = await createFixture()
    try {
      await assert.rejects(fx.auth.login('admin', 'wrong-1'), { name: 'InvalidCredentialsError' })
      await assert.rejects(fx.auth.login('admin', 'wrong-2'), { name: 'InvalidCredentialsError' })
      fx.advance(61)
      await assert.rejects(fx.auth.login('admin', 'wrong-3'), { name: 'InvalidCredentialsError' })
      await assert.rejects(fx.auth.login('admin', 'wrong-4'), { name: 'InvalidCredentialsError' })
      await fx.auth.login('admin', ADMIN_PASSWORD)
      await assert.rejects(fx.auth.login('admin', 'wrong-5'), { name: 'InvalidCredentialsError' })
      await assert.rejects(fx.auth.login('admin', 'wrong-6'), { name: 'InvalidCredentialsError' })
      await fx.auth.login('admin', ADMIN_PASSWORD)
    } finally {
      await fx.cleanup()
    }
  })

  it('treats unknown usernames exactly like known ones', async () => {
    const fx = await createFixture()
    try {
      const outcomes = async (username: string): Promise<Array<{ name: string, message: string }>> => {
        const seen = []
        for (let i = 0; i < 4; i++) {
          const err = await fx.auth.login(username, 'wrong-password').then(() => undefined, (e: Error) => e)
          assert.ok(err != null)
          // Timestamps in lock messages differ only by when they happened; strip them.
          seen.push({ name: err.name, message: err.message.replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/, '<time>') })
        }
        return seen
      }
      await fx.auth.createUser({ username: 'known', password: 'known-password', roles: ['viewer'] })
      const known = await outcomes('known')
      const unknown = await outcomes('nobody-here')
      assert.deepEqual(unknown, known)
      assert.deepEqual(known.map(o => o.name), ['InvalidCredentialsError', 'InvalidCredentialsError', 'AccountLockedError', 'AccountLockedError'])
      // A lock on one username does not touch another.
      await fx.auth.login('admin', ADMIN_PASSWORD)
    } finally {
      await fx.cleanup()
    }
  })

  it('counts a wrong current password in a self-service password change', async () => {
    const fx = await createFixture()
    try {
      for (let i = 0; i < 2; i++) {
        await assert.rejects(fx.auth.changePassword('admin', 'new-password', { currentPassword: 'wrong-password' }), { name: 'InvalidCredentialsError' })
      }
      await assert.rejects(fx.auth.login('admin', 'wrong-password'), { name: 'AccountLockedError' })
    } finally {
      await fx.cleanup()
    }
  })

  it('bounds how many usernames it tracks', () => {
    let now = 0
    const lockout = new LoginLockout({ maxFailures: 2, windowSeconds: 60, lockSeconds: 60 }, () => now, 100)
    for (let i = 0; i < 1000; i++) lockout.recordFailure(`user-${i}`)
    assert.ok(lockout.size <= 100)
    now += 61_000
    assert.equal(lockout.recordFailure('user-999'), undefined, 'old failure fell out of the window')
    assert.equal(lockout.recordFailure('user-999'), now + 60_000)
    assert.equal(lockout.lockedUntil('user-999'), now + 60_000)
  })

  it('is off when maxFailures is 0', async () => {
    const fx = await createFixture({ lockout: { maxFailures: 0, windowSeconds: 60, lockSeconds: 300 } })
    try {
      for (let i = 0; i < 5; i++) {
        await assert.rejects(fx.auth.login('admin', 'wrong-password'), { name: 'InvalidCredentialsError' })
      }
      await fx.auth.login('admin', ADMIN_PASSWORD)
    } finally {
      await fx.cleanup()
    }
  })
})
