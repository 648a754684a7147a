import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { ADMIN_PASSWORD, createFixture } from './fixture.ts'
import { BUILTIN_ROLE_CLAIMS, CLAIMS } from '../../src/auth/index.ts'
import type { Claim } from '../../src/auth/index.ts'

const sorted = (claims: Iterable<Claim>): string[] => [...claims].sort()

describe('auth roles and claims', () => {
  it('defines the claim list and the built-in roles exactly as specified', () => {
    assert.deepEqual([...CLAIMS], [
      'vm:read', 'vm:write', 'vm:exec', 'image:read', 'image:write', 'host:read', 'events:read',
      'user:read', 'user:write', 'role:read', 'role:write', 'apikey:read', 'apikey:write', 'cluster:read', 'cluster:write',
      'catalog:read', 'catalog:write', 'catalog:admin', 'proxy:read', 'proxy:write'
    ])
    assert.deepEqual(sorted(BUILTIN_ROLE_CLAIMS.admin), sorted(CLAIMS))
    assert.deepEqual(sorted(BUILTIN_ROLE_CLAIMS.operator), sorted(CLAIMS.filter(c => c !== 'user:write' && c !== 'role:write')))
    assert.deepEqual(sorted(BUILTIN_ROLE_CLAIMS.ci),
      ['catalog:read', 'events:read', 'host:read', 'image:read', 'proxy:read', 'vm:exec', 'vm:read', 'vm:write'])
    assert.deepEqual(sorted(BUILTIN_ROLE_CLAIMS.viewer),
      ['catalog:read', 'cluster:read', 'events:read', 'host:read', 'image:read', 'proxy:read', 'vm:read'])
  })

  it('lists built-in roles first and marks them', async () => {
    const fx = await createFixture()
    try {
      const roles = fx.auth.listRoles()
      assert.deepEqual(roles.map(role => role.name), ['admin', 'operator', 'ci', 'viewer'])
      assert.ok(roles.every(role => role.builtin))
      assert.deepEqual(sorted(fx.auth.getRole('ci').claims), sorted(BUILTIN_ROLE_CLAIMS.ci))
      assert.throws(() => fx.auth.getRole('nope'), { name: 'RoleNotFoundError' })
    } finally {
      await fx.cleanup()
    }
  })

  it("gives a principal the union of its roles' claims and authorize names the missing claim", async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createRole({ name: 'image-publisher', claims: ['image:write', 'catalog:write'], description: 'pushes images' })
      await fx.auth.createUser({ username: 'dana', password: 'dana-password', roles: ['viewer', 'image-publisher'] })
      const principal = await fx.auth.authenticate((await fx.auth.login('dana', 'dana-password')).token)
      assert.deepEqual(sorted(principal.claims), sorted([...BUILTIN_ROLE_CLAIMS.viewer, 'image:write', 'catalog:write']))
      assert.deepEqual(principal.roles, ['image-publisher', 'viewer'])

      fx.auth.authorize(principal, 'image:write')
      assert.throws(() => fx.auth.authorize(principal, 'vm:exec'), (err: Error & { details: Record<string, unknown> }) => {
        assert.equal(err.name, 'ForbiddenError')
        assert.match(err.message, /"vm:exec"/)
        assert.match(err.message, /dana/)
        assert.equal(err.details.claim, 'vm:exec')
        return true
      })
    } finally {
      await fx.cleanup()
    }
  })

  it('creates and deletes custom roles; refuses built-ins, duplicates, unknown claims and roles in use', async () => {
    const fx = await createFixture()
    try {
      const role = await fx.auth.createRole({ name: 'vm-reader', claims: ['vm:read', 'vm:read', 'host:read'] })
      assert.deepEqual(role.claims, ['vm:read', 'host:read'])
      assert.equal(role.builtin, false)
      assert.equal(typeof (fx.store.get<{ updatedAt: string }>('roles', 'vm-reader')?.updatedAt), 'string')

      await assert.rejects(fx.auth.createRole({ name: 'vm-reader', claims: ['vm:read'] }), { name: 'RoleExistsError' })
      await assert.rejects(fx.auth.createRole({ name: 'admin', claims: ['vm:read'] }), { name: 'BuiltinRoleError' })
      await assert.rejects(fx.auth.createRole({ name: 'x', claims: ['vm:read'] }), { name: 'AuthValidationError' })
      await assert.rejects(fx.auth.createRole({ name: 'bad-claims', claims: ['vm:read', 'vm:fly'] }), (err: Error) => {
        assert.equal(err.name, 'AuthValidationError')
        assert.match(err.message, /Unknown claim\(s\): vm:fly/)
        assert.match(err.message, /Known claims: vm:read/)
        return true
      })
      await assert.rejects(fx.auth.createRole({ name: 'empty', claims: [] }), { name: 'AuthValidationError' })

      for (const builtin of ['admin', 'operator', 'ci', 'viewer']) {
        await assert.rejects(fx.auth.deleteRole(builtin), { name: 'BuiltinRoleError' })
      }

      await fx.auth.createUser({ username: 'erin', password: 'erin-password', roles: ['vm-reader'] })
      await assert.rejects(fx.auth.deleteRole('vm-reader'), (err: Error) => {
        assert.equal(err.name, 'RoleInUseError')
        assert.match(err.message, /erin/)
        return true
      })
      await fx.auth.setUserRoles('erin', ['viewer'])
      await fx.auth.deleteRole('vm-reader')
      assert.throws(() => fx.auth.getRole('vm-reader'), { name: 'RoleNotFoundError' })
      await assert.rejects(fx.auth.deleteRole('vm-reader'), { name: 'RoleNotFoundError' })
    } finally {
      await fx.cleanup()
    }
  })

  it('counts API keys holding a role as in use', async () => {
    const fx = await createFixture()
    try {
      await fx.auth.createRole({ name: 'vm-reader', claims: ['vm:read'] })
      const key = await fx.auth.createApiKey({ username: 'admin', roles: ['vm-reader'] })
      await assert.rejects(fx.auth.deleteRole('vm-reader'), { name: 'RoleInUseError' })
      await fx.auth.deleteApiKey(key.id)
      await fx.auth.deleteRole('vm-reader')
    } finally {
      await fx.cleanup()
    }
  })

  it('restores a built-in role changed in the store on the next start', async () => {
    const fx = await createFixture()
    try {
      const stored = fx.store.get<Record<string, unknown>>('roles', 'ci')!
      await fx.store.put('roles', 'ci', { ...stored, claims: ['vm:read', 'user:write'] })
      const again = await fx.restart()
      assert.deepEqual(sorted(again.getRole('ci').claims), sorted(BUILTIN_ROLE_CLAIMS.ci))
      await again.login('admin', ADMIN_PASSWORD)
    } finally {
      await fx.cleanup()
    }
  })
})
