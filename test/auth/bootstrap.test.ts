import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ADMIN_PASSWORD, createFixture } from './fixture.ts'

describe('auth bootstrap', () => {
  it('creates admin with a generated password that is handed out once and not again on restart', async () => {
    const fx = await createFixture({ adminPassword: undefined })
    try {
      const password = fx.auth.takeInitialAdminPassword()
      assert.equal(typeof password, 'string')
      assert.ok(password!.length >= 20, 'generated password is long')
      assert.equal(fx.auth.takeInitialAdminPassword(), undefined, 'only once')

      const admin = fx.auth.getUser('admin')
      assert.deepEqual(admin.roles, ['admin'])
      const grant = await fx.auth.login('admin', password!)
      const principal = await fx.auth.authenticate(grant.token)
      assert.equal(principal.subject, 'admin')

      await fx.auth.stop()
      const again = await fx.restart()
      assert.equal(again.takeInitialAdminPassword(), undefined, 'second start generates nothing')
      assert.equal(again.listUsers().length, 1)
      await again.login('admin', password!)
    } finally {
      await fx.cleanup()
    }
  })

  it('uses the adminPassword option and returns no generated password', async () => {
    const fx = await createFixture()
    try {
      assert.equal(fx.auth.takeInitialAdminPassword(), undefined)
      await fx.auth.login('admin', ADMIN_PASSWORD)
      // On a later start the option does not reset an existing admin.
      const again = await fx.restart({ adminPassword: 'a different password' })
      await again.login('admin', ADMIN_PASSWORD)
      await assert.rejects(again.login('admin', 'a different password'), { name: 'InvalidCredentialsError' })
    } finally {
      await fx.cleanup()
    }
  })

  it('refuses a too-short adminPassword at start', async () => {
    const fx = await createFixture({ start: false, adminPassword: 'short' })
    try {
      await assert.rejects(fx.auth.start(), (err: Error) => {
        assert.equal(err.name, 'AuthValidationError')
        assert.match(err.message, /at least 8 characters/)
        return true
      })
      assert.equal(fx.store.list('users').length, 0)
    } finally {
      await fx.cleanup()
    }
  })

  it('stores the built-in roles', async () => {
    const fx = await createFixture()
    try {
      assert.deepEqual(fx.store.list<{ name: string }>('roles').map(role => role.name).sort(), ['admin', 'ci', 'operator', 'viewer'])
      for (const role of fx.store.list<{ updatedAt: string, builtin: boolean }>('roles')) {
        assert.equal(role.builtin, true)
        assert.equal(typeof role.updatedAt, 'string')
      }
    } finally {
      await fx.cleanup()
    }
  })

  it('creates the JWT key file with mode 0600 and reuses it across restarts', async () => {
    const fx = await createFixture()
    try {
      const path = join(fx.dataDir, 'keys', 'jwt-ed25519.json')
      const info = await stat(path)
      assert.equal(info.mode & 0o777, 0o600)
      const jwk = JSON.parse(await readFile(path, 'utf8'))
      assert.equal(jwk.kty, 'OKP')
      assert.equal(jwk.crv, 'Ed25519')
      assert.equal(typeof jwk.d, 'string')
      const before = await readFile(path, 'utf8')

      const grant = await fx.auth.login('admin', ADMIN_PASSWORD)
      await fx.auth.stop()
      const again = await fx.restart()
      assert.equal(await readFile(path, 'utf8'), before, 'key file unchanged')
      const principal = await again.authenticate(grant.token)
      assert.equal(principal.subject, 'admin', 'a token from before the restart still verifies')
    } finally {
      await fx.cleanup()
    }
  })

  it('refuses to start on a damaged key file and says how to fix it', async () => {
    const fx = await createFixture()
    try {
      await fx.auth.stop()
      await writeFile(join(fx.dataDir, 'keys', 'jwt-ed25519.json'), '{"kty":"oct"}')
      await assert.rejects(fx.restart(), (err: Error) => {
        assert.equal(err.name, 'AuthKeyFileError')
        assert.match(err.message, /delete it/)
        return true
      })
    } finally {
      await fx.cleanup()
    }
  })

  it('answers AuthNotStartedError before start and after stop; stop is safe twice', async () => {
    const fx = await createFixture({ start: false })
    try {
      await assert.rejects(fx.auth.login('admin', ADMIN_PASSWORD), { name: 'AuthNotStartedError' })
      await fx.auth.start()
      await fx.auth.stop()
      await fx.auth.stop()
      await assert.rejects(fx.auth.authenticate('x'), { name: 'AuthNotStartedError' })
    } finally {
      await fx.cleanup()
    }
  })
})
