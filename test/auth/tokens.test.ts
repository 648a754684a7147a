import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { ADMIN_PASSWORD, createFixture } from './fixture.ts'
import { CLAIMS } from '../../src/auth/index.ts'

function tamperPayload (token: string, change: (payload: Record<string, unknown>) => void): string {
  const [header, payload, signature] = token.split('.')
  const decoded = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
  change(decoded)
  return [header, Buffer.from(JSON.stringify(decoded)).toString('base64url'), signature].join('.')
}

describe('auth tokens', () => {
  it('round-trips login and authenticate with EdDSA, expiry, issuer and audience', async () => {
    const fx = await createFixture()
    try {
      const grant = await fx.auth.login('admin', ADMIN_PASSWORD)
      assert.equal(grant.expiresAt, new Date(fx.now() + 900_000).toISOString())
      const header = decodeProtectedHeader(grant.token)
      assert.equal(header.alg, 'EdDSA')
      assert.equal(typeof header.kid, 'string')
      const claims = decodeJwt(grant.token)
      assert.equal(claims.iss, 'corral')
      assert.equal(claims.aud, 'corral-api')
      assert.equal(claims.exp, Math.floor(fx.now() / 1000) + 900)

      const principal = await fx.auth.authenticate(grant.token)
      assert.equal(principal.subject, 'admin')
      assert.equal(principal.kind, 'user')
      assert.deepEqual(principal.roles, ['admin'])
      assert.deepEqual([...principal.claims].sort(), [...CLAIMS].sort())
    } finally {
      await fx.cleanup()
    }
  })

  it('rejects an expired token and accepts it just before expiry', async () => {
    const fx = await createFixture({ tokenTtlSeconds: 60 })
    try {
      const { token } = await fx.auth.login('admin', ADMIN_PASSWORD)
      fx.advance(59)
      await fx.auth.authenticate(token)
      fx.advance(2)
      await assert.rejects(fx.auth.authenticate(token), (err: Error) => {
        assert.equal(err.name, 'UnauthenticatedError')
        assert.match(err.message, /expired; log in again/)
        return true
      })
    } finally {
      await fx.cleanup()
    }
  })

  it('rejects tampered tokens, foreign tokens and garbage', async () => {
    const fx = await createFixture()
    const other = await createFixture()
    try {
      const { token } = await fx.auth.login('admin', ADMIN_PASSWORD)
      const later = tamperPayload(token, payload => { payload.exp = (payload.exp as number) + 3600 })
      const [h, p, s] = token.split('.')
      const flipped = [h, p, s.slice(0, -2) + (s.endsWith('AA') ? 'BB' : 'AA')].join('.')
      const unsigned = [Buffer.from('{"alg":"none"}').toString('base64url'), p, ''].join('.')
      // Same username and issuer, but signed by another node's key.
      const foreign = (await other.auth.login('admin', ADMIN_PASSWORD)).token

      for (const bad of [later, flipped, unsigned, foreign, 'not-a-token', 'a.b.c']) {
        await assert.rejects(fx.auth.authenticate(bad), { name: 'UnauthenticatedError' })
      }
      await assert.rejects(fx.auth.authenticate(''), (err: Error) => {
        assert.equal(err.name, 'UnauthenticatedError')
        assert.match(err.message, /Authorization: Bearer/)
        return true
      })
    } finally {
      await fx.cleanup()
      await other.cleanup()
    }
  })

  it('rejects tokens for another issuer or audience', async () => {
    const fx = await createFixture({ issuer: 'corral-a' })
    try {
      const { token } = await fx.auth.login('admin', ADMIN_PASSWORD)
      const otherAudience = await fx.restart({ issuer: 'corral-a', audience: 'something-else' })
      await assert.rejects(otherAudience.authenticate(token), { name: 'UnauthenticatedError' })
      const otherIssuer = await fx.restart({ issuer: 'corral-b' })
      await assert.rejects(otherIssuer.authenticate(token), { name: 'UnauthenticatedError' })
    } finally {
      await fx.cleanup()
    }
  })

  it("stops accepting a deleted user's token, even if the username is created again", async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createUser({ username: 'alice', password: 'alice-password', roles: ['operator'] })
      const { token } = await fx.auth.login('alice', 'alice-password')
      assert.equal((await fx.auth.authenticate(token)).subject, 'alice')

      await fx.auth.deleteUser('alice')
      await assert.rejects(fx.auth.authenticate(token), (err: Error) => {
        assert.equal(err.name, 'UnauthenticatedError')
        assert.match(err.message, /no longer exists/)
        return true
      })
      await fx.auth.createUser({ username: 'alice', password: 'another-password', roles: ['viewer'] })
      await assert.rejects(fx.auth.authenticate(token), { name: 'UnauthenticatedError' })
    } finally {
      await fx.cleanup()
    }
  })

  it('revokes earlier tokens when the password changes', async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createUser({ username: 'bob', password: 'bob-password-1', roles: ['ci'] })
      const { token } = await fx.auth.login('bob', 'bob-password-1')
      await assert.rejects(fx.auth.changePassword('bob', 'bob-password-2', { currentPassword: 'wrong-password' }), { name: 'InvalidCredentialsError' })
      await fx.auth.authenticate(token)

      await fx.auth.changePassword('bob', 'bob-password-2', { currentPassword: 'bob-password-1' })
      await assert.rejects(fx.auth.authenticate(token), { name: 'UnauthenticatedError' })
      await assert.rejects(fx.auth.login('bob', 'bob-password-1'), { name: 'InvalidCredentialsError' })
      const fresh = await fx.auth.login('bob', 'bob-password-2')
      assert.equal((await fx.auth.authenticate(fresh.token)).subject, 'bob')

      // An admin reset needs no current password.
      await fx.auth.changePassword('bob', 'bob-password-3')
      await fx.auth.login('bob', 'bob-password-3')
    } finally {
      await fx.cleanup()
    }
  })

  it('computes claims from current roles, not from the token', async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createUser({ username: 'carol', password: 'carol-password', roles: ['viewer'] })
      const { token } = await fx.auth.login('carol', 'carol-password')
      assert.equal((await fx.auth.authenticate(token)).claims.has('vm:write'), false)
      await fx.auth.setUserRoles('carol', ['ci'])
      const principal = await fx.auth.authenticate(token)
      assert.deepEqual(principal.roles, ['ci'])
      assert.equal(principal.claims.has('vm:write'), true)
    } finally {
      await fx.cleanup()
    }
  })
})

it('a token issued by another node of the cluster verifies through its published key', async () => {
  const { createAuthService } = await import('../../src/auth/index.ts')
  const { MemoryStore } = await import('../helpers/memory-store.ts')
  const { mkdtemp, rm } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { pino } = await import('pino')
  // One shared store stands in for the replicated collections; each node has its own data folder and key.
  const shared = new MemoryStore()
  const dirs = [await mkdtemp(join(tmpdir(), 'auth-a-')), await mkdtemp(join(tmpdir(), 'auth-b-'))]
  const init = { tokenTtlSeconds: 600, lockout: { maxFailures: 5, windowSeconds: 60, lockSeconds: 60 }, passwordHashCost: 1024 }
  const a = createAuthService({ store: shared, logger: pino({ level: 'silent' }) }, { ...init, dataDir: dirs[0], adminPassword: 'first-node-password' })
  const b = createAuthService({ store: shared, logger: pino({ level: 'silent' }) }, { ...init, dataDir: dirs[1], bootstrapAdmin: false })
  try {
    await a.start()
    await b.start()
    assert.equal(shared.list('users').length, 1, 'the joining node made no second admin')
    const { token } = await a.login('admin', 'first-node-password')
    assert.equal((await b.authenticate(token)).subject, 'admin')
    const other = await b.login('admin', 'first-node-password')
    assert.equal((await a.authenticate(other.token)).subject, 'admin')
  } finally {
    await a.stop()
    await b.stop()
    for (const d of dirs) await rm(d, { recursive: true, force: true })
  }
})
