/**
 * Auth as an HTTP client meets it: tokens from a password or an API key, API keys used directly,
 * lockout after repeated failures (429 saying when to retry), and credentials that stop working the
 * moment their key is revoked or their user deleted.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { IMAGE, LOCKOUT, PASSWORD, startApiFixture, type ApiFixture } from './fixture.ts'
import { unique } from './examples.ts'

let fx: ApiFixture
before(async () => { fx = await startApiFixture() })
after(async () => { await fx?.stop() })

const token = (json: unknown): ReturnType<ApiFixture['request']> => fx.request('POST', '/api/v1/auth/token', { json })
const listVms = (credential: string, header: 'bearer' | 'x-api-key' = 'bearer'): ReturnType<ApiFixture['request']> =>
  fx.request('GET', '/api/v1/vms', header === 'bearer' ? { token: credential } : { headers: { 'x-api-key': credential } })

function assertProblem (res: Awaited<ReturnType<ApiFixture['request']>>, status: number, detail: RegExp): void {
  assert.equal(res.status, status, res.text)
  assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/)
  assert.match(res.body.detail, detail)
}

test('a username and password give a token that works', async () => {
  const res = await token({ username: 'ci', password: PASSWORD })
  assert.equal(res.status, 200)
  assert.equal(typeof res.body.token, 'string')
  assert.ok(Date.parse(res.body.expiresAt) > Date.now(), res.body.expiresAt)
  assert.equal((await listVms(res.body.token)).status, 200)
})

test('a wrong password gets 401 that gives nothing away', async () => {
  const wrong = await token({ username: 'viewer', password: 'not the password' })
  const nobody = await token({ username: 'nobody-by-that-name', password: 'not the password' })
  assertProblem(wrong, 401, /^Wrong username or password\.$/)
  assert.deepEqual(nobody.body, wrong.body)
})

test('an API key, exchanged for a token or sent as is, acts with its roles', async () => {
  const created = await fx.request('POST', '/api/v1/api-keys', { token: fx.tokens.operator, json: { name: 'pipeline' } })
  assert.equal(created.status, 201, created.text)
  const apiKey: string = created.body.apiKey
  assert.match(apiKey, /^crl_/)
  assert.deepEqual(created.body.roles, ['operator'])

  const exchanged = await token({ apiKey })
  assert.equal(exchanged.status, 200, exchanged.text)
  for (const credential of [exchanged.body.token, apiKey]) {
    assert.equal((await listVms(credential)).status, 200)
    assertProblem(await fx.request('POST', '/api/v1/users', { token: credential, json: { username: unique('nope'), password: PASSWORD } }), 403, /"user:write"/)
  }
  assert.equal((await listVms(apiKey, 'x-api-key')).status, 200)

  // A key may carry fewer rights than its owner: a viewer key of an operator cannot create VMs.
  const narrow = await fx.request('POST', '/api/v1/api-keys', { token: fx.tokens.operator, json: { name: 'read-only', roles: ['viewer'] } })
  assert.equal(narrow.status, 201, narrow.text)
  assertProblem(await fx.request('POST', '/api/v1/vms', { token: narrow.body.apiKey, json: { image: IMAGE } }), 403, /"vm:write"/)
  assert.equal((await listVms(narrow.body.apiKey)).status, 200)
})

test('an altered token is refused', async () => {
  const [header, payload, signature] = fx.tokens.viewer.split('.')
  // Flip the first signature character: the last one partly encodes padding bits a decoder may ignore.
  const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1)
  assertProblem(await listVms([header, payload, flipped].join('.')), 401, /Invalid token/)
  // Another subject in the payload, under viewer's signature.
  const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), sub: 'someone-else' })).toString('base64url')
  assertProblem(await listVms([header, forged, signature].join('.')), 401, /Invalid token/)
  assertProblem(await listVms(`${header}.${payload}.`), 401, /Invalid token/)
})

test('repeated failures lock the username: 429 saying when to retry', async () => {
  const username = unique('guessed')
  await fx.auth.createUser({ username, password: PASSWORD, roles: ['viewer'] })
  for (let i = 1; i < LOCKOUT.maxFailures; i++) {
    assertProblem(await token({ username, password: `guess ${i}` }), 401, /Wrong username or password/)
  }
  const locking = await token({ username, password: 'last guess' })
  assertProblem(locking, 429, /locked until \d{4}-\d\d-\d\dT[\d:.]+Z\. Try again after that\./)
  const retryAt = Date.parse(locking.body.retryAt)
  assert.ok(retryAt > Date.now() && retryAt <= Date.now() + LOCKOUT.lockSeconds * 1000, locking.body.retryAt)
  const retryAfter = Number(locking.headers.get('retry-after'))
  assert.ok(retryAfter > 0 && retryAfter <= LOCKOUT.lockSeconds, `Retry-After: ${String(locking.headers.get('retry-after'))}`)

  // Locked means locked: the right password is refused too, and says the same.
  const right = await token({ username, password: PASSWORD })
  assertProblem(right, 429, /locked until/)
  assert.equal(right.body.retryAt, locking.body.retryAt)

  // Other usernames are not affected.
  assert.equal((await token({ username: 'viewer', password: PASSWORD })).status, 200)
})

test('an unknown username locks the same way, so a lock says nothing about existence', async () => {
  const username = unique('never-existed')
  for (let i = 1; i < LOCKOUT.maxFailures; i++) assert.equal((await token({ username, password: 'guess' })).status, 401)
  assertProblem(await token({ username, password: 'guess' }), 429, /locked until/)
})

test('a revoked API key stops working at once, as do tokens made from it', async () => {
  const created = await fx.request('POST', '/api/v1/api-keys', { token: fx.tokens.admin, json: { username: 'ci', name: 'to-revoke' } })
  assert.equal(created.status, 201, created.text)
  const { id, apiKey } = created.body
  const fromKey = (await token({ apiKey })).body.token
  assert.equal((await listVms(apiKey)).status, 200)
  assert.equal((await listVms(fromKey)).status, 200)

  assert.equal((await fx.request('DELETE', `/api/v1/api-keys/${id}`, { token: fx.tokens.admin })).status, 204)
  assertProblem(await listVms(apiKey), 401, /Unknown or revoked API key/)
  assertProblem(await listVms(apiKey, 'x-api-key'), 401, /Unknown or revoked API key/)
  assertProblem(await listVms(fromKey), 401, /revoked/)
  assertProblem(await token({ apiKey }), 401, /Unknown or revoked API key/)
  const keys = await fx.request('GET', '/api/v1/api-keys', { token: fx.tokens.admin })
  assert.ok(!keys.body.items.some((k: { id: string }) => k.id === id))
})

test("a deleted user's token and API keys stop working at once", async () => {
  const username = unique('leaver')
  const made = await fx.request('POST', '/api/v1/users', { token: fx.tokens.admin, json: { username, password: PASSWORD, roles: ['ci'] } })
  assert.equal(made.status, 201, made.text)
  const userToken = await fx.login(username)
  const key = await fx.request('POST', '/api/v1/api-keys', { token: fx.tokens.admin, json: { username, name: 'theirs' } })
  assert.equal(key.status, 201, key.text)
  assert.equal((await listVms(userToken)).status, 200)
  assert.equal((await listVms(key.body.apiKey)).status, 200)

  assert.equal((await fx.request('DELETE', `/api/v1/users/${username}`, { token: fx.tokens.admin })).status, 204)
  assertProblem(await listVms(userToken), 401, /no longer exists/)
  assertProblem(await listVms(key.body.apiKey), 401, /Unknown or revoked API key/)
  assertProblem(await token({ username, password: PASSWORD }), 401, /Wrong username or password/)
  assertProblem(await fx.request('GET', `/api/v1/users/${username}`, { token: fx.tokens.admin }), 404, new RegExp(`No user "${username}"`))
})
