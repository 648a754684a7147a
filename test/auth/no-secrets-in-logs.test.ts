import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createFixture } from './fixture.ts'

describe('auth logging', () => {
  it('logs subjects and outcomes but never a password, token, API key or hash', async () => {
    const fx = await createFixture({ adminPassword: undefined })
    const secrets: string[] = []
    const errorMessages: string[] = []
    const expectFailure = async (work: Promise<unknown>): Promise<void> => {
      const err = await work.then(() => undefined, (e: Error) => e)
      assert.ok(err != null, 'expected a failure')
      errorMessages.push(err.message, JSON.stringify((err as Error & { details?: unknown }).details ?? {}))
    }
    try {
      const adminPassword = fx.auth.takeInitialAdminPassword()!
      secrets.push(adminPassword)
      const adminGrant = await fx.auth.login('admin', adminPassword)
      secrets.push(adminGrant.token)
      await fx.auth.authenticate(adminGrant.token)

      secrets.push('hollis-password-1', 'hollis-password-2', 'wrong-guess-1', 'wrong-guess-2', 'wrong-guess-3')
      await fx.auth.createRole({ name: 'runner', claims: ['vm:read', 'vm:write'] })
      await fx.auth.createUser({ username: 'hollis', password: 'hollis-password-1', roles: ['ci', 'runner'] })
      const userGrant = await fx.auth.login('hollis', 'hollis-password-1')
      secrets.push(userGrant.token)
      const principal = await fx.auth.authenticate(userGrant.token)
      assert.throws(() => fx.auth.authorize(principal, 'user:write'), { name: 'ForbiddenError' })

      const key = await fx.auth.createApiKey({ username: 'hollis', name: 'pipeline' })
      secrets.push(key.apiKey, key.apiKey.split('_').slice(2).join('_'))
      const keyGrant = await fx.auth.loginWithApiKey(key.apiKey)
      secrets.push(keyGrant.token)
      await fx.auth.authenticate(key.apiKey)
      await fx.auth.authenticate(keyGrant.token)

      await fx.auth.changePassword('hollis', 'hollis-password-2', { currentPassword: 'hollis-password-1' })
      await expectFailure(fx.auth.authenticate(userGrant.token))
      await expectFailure(fx.auth.login('hollis', 'wrong-guess-1'))
      await expectFailure(fx.auth.login('hollis', 'wrong-guess-2'))
      await expectFailure(fx.auth.login('hollis', 'wrong-guess-3'))
      await expectFailure(fx.auth.login('hollis', 'hollis-password-2'))
      // A password typed into the username field must not be logged either.
      await expectFailure(fx.auth.login('hollis-password-2', 'hollis'))
      await expectFailure(fx.auth.authenticate(keyGrant.token.slice(0, -3) + 'abc'))

      await fx.auth.deleteApiKey(key.id)
      await expectFailure(fx.auth.authenticate(key.apiKey))
      await expectFailure(fx.auth.authenticate(keyGrant.token))
      await fx.auth.deleteUser('hollis')
      await fx.auth.deleteRole('runner')

      // Hashes and the signing key are secrets too.
      for (const user of fx.store.list<{ password: { hash: string, salt: string } }>('users')) {
        secrets.push(user.password.hash, user.password.salt)
      }
      secrets.push(JSON.parse(await readFile(join(fx.dataDir, 'keys', 'jwt-ed25519.json'), 'utf8')).d)
      await fx.auth.stop()

      const log = fx.logs.join('')
      assert.ok(fx.logs.length > 10, 'the scenario was logged')
      assert.match(log, /"subject":"hollis"/)
      assert.match(log, /"outcome":"failed"/)
      assert.match(log, /"outcome":"locked"/)
      for (const secret of secrets) {
        assert.ok(secret.length >= 8)
        assert.ok(!log.includes(secret), `log contains a secret (${secret.slice(0, 4)}…)`)
        for (const message of errorMessages) assert.ok(!message.includes(secret), 'an error message contains a secret')
      }
      // Nor the SHA-256 of the key secret the store holds.
      assert.ok(!log.includes('secretHash'))
    } finally {
      await fx.cleanup()
    }
  })
})
