import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { createFixture } from './fixture.ts'

describe('auth API keys', () => {
  it('creates a crl_<id>_<secret> key shown once, stored only as a hash, listed without secrets', async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createUser({ username: 'ci-bot', password: 'ci-bot-password', roles: ['ci'] })
      const created = await fx.auth.createApiKey({ username: 'ci-bot', name: 'github actions' })
      assert.match(created.apiKey, /^crl_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/)
      assert.equal(created.apiKey.split('_')[1], created.id)
      assert.deepEqual(created.roles, ['ci'], 'defaults to the user roles')
      assert.equal(created.username, 'ci-bot')
      assert.equal(created.name, 'github actions')

      const secret = created.apiKey.slice(`crl_${created.id}_`.length)
      const stored = JSON.stringify(fx.store.get('api-keys', created.id))
      assert.ok(!stored.includes(secret), 'secret not stored')
      assert.ok(stored.includes(createHash('sha256').update(secret).digest('hex')), 'SHA-256 of the secret is')
      assert.match(stored, /"updatedAt"/)

      const listed = fx.auth.listApiKeys()
      assert.equal(listed.length, 1)
      assert.deepEqual(Object.keys(listed[0]).sort(), ['createdAt', 'id', 'name', 'roles', 'updatedAt', 'userId', 'username'])
      assert.deepEqual(fx.auth.listApiKeys({ username: 'admin' }), [])
      assert.equal(fx.auth.getApiKey(created.id).id, created.id)
    } finally {
      await fx.cleanup()
    }
  })

  it('authenticates a raw key and a token from loginWithApiKey; revocation stops both', async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createUser({ username: 'ci-bot', password: 'ci-bot-password', roles: ['ci'] })
      const { apiKey, id } = await fx.auth.createApiKey({ username: 'ci-bot' })

      const direct = await fx.auth.authenticate(apiKey)
      assert.equal(direct.kind, 'apikey')
      assert.equal(direct.subject, 'ci-bot')
      assert.equal(direct.apiKeyId, id)
      assert.ok(direct.claims.has('vm:exec'))
      assert.ok(!direct.claims.has('image:write'))

      const { token } = await fx.auth.loginWithApiKey(apiKey)
      const viaToken = await fx.auth.authenticate(token)
      assert.equal(viaToken.kind, 'apikey')
      assert.equal(viaToken.apiKeyId, id)

      await fx.auth.deleteApiKey(id)
      await assert.rejects(fx.auth.authenticate(apiKey), { name: 'UnauthenticatedError' })
      await assert.rejects(fx.auth.authenticate(token), { name: 'UnauthenticatedError' })
      await assert.rejects(fx.auth.loginWithApiKey(apiKey), { name: 'InvalidCredentialsError' })
      await assert.rejects(fx.auth.deleteApiKey(id), { name: 'ApiKeyNotFoundError' })
      assert.throws(() => fx.auth.getApiKey('../../etc/passwd'), { name: 'ApiKeyNotFoundError' })
    } finally {
      await fx.cleanup()
    }
  })

  it('rejects a known id with the wrong secret and malformed keys', async () => {
    const fx = await createFixture()
    try {
      const { apiKey, id } = await fx.auth.createApiKey({ username: 'admin' })
      const wrongSecret = `crl_${id}_${'A'.repeat(43)}`
      for (const bad of [wrongSecret, apiKey + 'x', apiKey.slice(0, -1), 'crl_', 'crl_zz_zz']) {
        await assert.rejects(fx.auth.authenticate(bad), { name: 'UnauthenticatedError' })
        await assert.rejects(fx.auth.loginWithApiKey(bad), { name: 'InvalidCredentialsError' })
      }
    } finally {
      await fx.cleanup()
    }
  })

  it('refuses roles wider than the owner holds and unknown roles', async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createUser({ username: 'ci-bot', password: 'ci-bot-password', roles: ['ci'] })
      await assert.rejects(fx.auth.createApiKey({ username: 'ci-bot', roles: ['operator'] }), (err: Error & { details: Record<string, unknown> }) => {
        assert.equal(err.name, 'AuthValidationError')
        assert.match(err.message, /cannot grant more than its user holds/)
        assert.ok((err.details.claims as string[]).includes('image:write'))
        return true
      })
      await assert.rejects(fx.auth.createApiKey({ username: 'ci-bot', roles: ['nope'] }), { name: 'AuthValidationError' })
      await assert.rejects(fx.auth.createApiKey({ username: 'ghost' }), { name: 'UserNotFoundError' })

      // Not every "smaller" role fits: viewer has cluster:read, which ci lacks. A custom subset does.
      await assert.rejects(fx.auth.createApiKey({ username: 'ci-bot', roles: ['viewer'] }), { name: 'AuthValidationError' })
      await fx.auth.createRole({ name: 'read-vms', claims: ['vm:read'] })
      const narrow = await fx.auth.createApiKey({ username: 'ci-bot', roles: ['read-vms'] })
      const principal = await fx.auth.authenticate(narrow.apiKey)
      assert.deepEqual([...principal.claims], ['vm:read'])
    } finally {
      await fx.cleanup()
    }
  })

  it("narrows a key's claims when its owner loses roles, and deletes keys with their user", async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createUser({ username: 'ops', password: 'ops-password', roles: ['operator'] })
      const { apiKey, id } = await fx.auth.createApiKey({ username: 'ops', roles: ['operator'] })
      assert.ok((await fx.auth.authenticate(apiKey)).claims.has('image:write'))

      await fx.auth.setUserRoles('ops', ['ci'])
      const narrowed = await fx.auth.authenticate(apiKey)
      assert.deepEqual(narrowed.roles, ['operator'])
      assert.ok(!narrowed.claims.has('image:write'))
      assert.ok(narrowed.claims.has('vm:exec'))

      await fx.auth.deleteUser('ops')
      await assert.rejects(fx.auth.authenticate(apiKey), { name: 'UnauthenticatedError' })
      assert.equal(fx.store.get('api-keys', id), undefined)
    } finally {
      await fx.cleanup()
    }
  })
})
