import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { ADMIN_PASSWORD, createFixture } from './fixture.ts'

describe('auth users', () => {
  it('creates, lists, gets and deletes users without exposing hashes', async () => {
    const fx = await createFixture()
    try {
      const created = await fx.auth.createUser({ username: 'frank', password: 'frank-password', roles: ['ci', 'viewer', 'ci'] })
      assert.deepEqual(created.roles, ['ci', 'viewer'])
      assert.deepEqual(Object.keys(created).sort(), ['createdAt', 'id', 'roles', 'updatedAt', 'username'])
      assert.deepEqual(fx.auth.listUsers().map(user => user.username), ['admin', 'frank'])
      assert.equal(fx.auth.getUser('frank').id, created.id)

      const record = fx.store.get<Record<string, any>>('users', created.id)!
      assert.equal(record.password.algorithm, 'scrypt')
      assert.equal(record.password.N, 1024)
      assert.ok(!JSON.stringify(record).includes('frank-password'))
      assert.equal(typeof record.updatedAt, 'string')

      await assert.rejects(fx.auth.createUser({ username: 'frank', password: 'other-password', roles: ['ci'] }), { name: 'UserExistsError' })
      await fx.auth.deleteUser('frank')
      assert.throws(() => fx.auth.getUser('frank'), { name: 'UserNotFoundError' })
      await assert.rejects(fx.auth.deleteUser('frank'), { name: 'UserNotFoundError' })
    } finally {
      await fx.cleanup()
    }
  })

  it('explains what to fix for bad usernames, passwords and roles', async () => {
    const fx = await createFixture()
    try {
      const cases: Array<[Record<string, unknown>, string, RegExp]> = [
        [{ username: 'Upper', password: 'long-enough', roles: ['ci'] }, 'username', /lowercase letters/],
        [{ username: 'a', password: 'long-enough', roles: ['ci'] }, 'username', /2-64 characters/],
        [{ username: '-dash', password: 'long-enough', roles: ['ci'] }, 'username', /starting with a letter or digit/],
        [{ username: 'ok-name', password: 'short', roles: ['ci'] }, 'password', /at least 8 characters/],
        [{ username: 'ok-name', password: 'long-enough', roles: ['ci', 'wizard'] }, 'roles', /Unknown role\(s\): wizard\. Existing roles: admin, operator, ci, viewer/],
        [{ username: 'ok-name', password: 'long-enough', roles: [] }, 'roles', /at least one role/]
      ]
      for (const [input, field, message] of cases) {
        await assert.rejects(fx.auth.createUser(input as any), (err: Error & { details: Record<string, unknown> }) => {
          assert.equal(err.name, 'AuthValidationError')
          assert.equal(err.details.field, field)
          assert.match(err.message, message)
          return true
        })
      }
      await assert.rejects(fx.auth.changePassword('admin', 'short'), { name: 'AuthValidationError' })
      await assert.rejects(fx.auth.setUserRoles('admin', ['wizard']), { name: 'AuthValidationError' })
      assert.equal(fx.auth.listUsers().length, 1)
    } finally {
      await fx.cleanup()
    }
  })

  it('never removes the last admin', async () => {
    const fx = await createFixture()
    try {
      await assert.rejects(fx.auth.deleteUser('admin'), { name: 'LastAdminError' })
      await assert.rejects(fx.auth.setUserRoles('admin', ['viewer']), { name: 'LastAdminError' })

      await fx.auth.createUser({ username: 'second-admin', password: 'second-password', roles: ['admin'] })
      // Both deletes race: exactly one may succeed.
      const results = await Promise.allSettled([fx.auth.deleteUser('admin'), fx.auth.deleteUser('second-admin')])
      assert.equal(results.filter(result => result.status === 'fulfilled').length, 1)
      assert.equal(fx.auth.listUsers().filter(user => user.roles.includes('admin')).length, 1)
    } finally {
      await fx.cleanup()
    }
  })

  it('lets only one of two concurrent creates of the same username win', async () => {
    const fx = await createFixture()
    try {
      const results = await Promise.allSettled([
        fx.auth.createUser({ username: 'gina', password: 'gina-password-1', roles: ['ci'] }),
        fx.auth.createUser({ username: 'gina', password: 'gina-password-2', roles: ['viewer'] })
      ])
      assert.deepEqual(results.map(result => result.status).sort(), ['fulfilled', 'rejected'])
      assert.equal(fx.auth.listUsers().filter(user => user.username === 'gina').length, 1)
    } finally {
      await fx.cleanup()
    }
  })

  it('hashes with the default scrypt cost and upgrades older hashes at login', async () => {
    const fx = await createFixture({ passwordHashCost: undefined })
    try {
      const admin = fx.auth.getUser('admin')
      assert.equal(fx.store.get<Record<string, any>>('users', admin.id)!.password.N, 16384)
      await fx.auth.stop()

      const cheaper = await fx.restart({ passwordHashCost: 1024 })
      await cheaper.login('admin', ADMIN_PASSWORD)
      assert.equal(fx.store.get<Record<string, any>>('users', admin.id)!.password.N, 1024)
      await cheaper.login('admin', ADMIN_PASSWORD)
    } finally {
      await fx.cleanup()
    }
  })
})
