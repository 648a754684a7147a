/**
 * Every route in the table, called as every built-in role and as anonymous. The expected answer is
 * computed from the route's claim and the role's claims, so a new route is covered as soon as it is
 * declared (and fails here until it has an example request in examples.ts).
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Ajv } from 'ajv'
import addFormats from 'ajv-formats'
import type { RouteDef } from '../../src/api/index.ts'
import { BUILTIN_ROLE_CLAIMS } from '../../src/auth/index.ts'
import { CALLERS, snapshot, startApiFixture, type ApiFixture, type ApiResponse, type Caller } from './fixture.ts'
import { examples, routeKey } from './examples.ts'

const ajv = new Ajv({ allErrors: true, strict: false })
addFormats.default(ajv)

let fx: ApiFixture
before(async () => { fx = await startApiFixture() })
after(async () => { await fx?.stop() })

/** The status a caller must get for a valid request to the route. */
function expectedStatus (route: RouteDef, caller: Caller): number {
  if (route.claim == null) return route.success.status
  if (caller === 'anonymous') return 401
  if (!BUILTIN_ROLE_CLAIMS[caller].includes(route.claim)) return 403
  return route.success.status
}

function assertProblem (res: ApiResponse, status: number): void {
  assert.equal(res.status, status, res.text)
  assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/)
  assert.equal(res.body.status, status)
  assert.equal(typeof res.body.type, 'string')
  assert.ok(typeof res.body.detail === 'string' && res.body.detail.length > 20, `detail should say what to fix: ${res.text}`)
}

test('the route table has an example request for every route, and no stale ones', () => {
  const keys = fx.routes.map(routeKey)
  assert.equal(new Set(keys).size, keys.length, 'a route is declared twice')
  const missing = keys.filter(key => examples[key] == null)
  assert.deepEqual(missing, [], `add an example request to test/api/examples.ts for: ${missing.join(', ')}`)
  const stale = Object.keys(examples).filter(key => !keys.includes(key))
  assert.deepEqual(stale, [], `examples for routes that no longer exist: ${stale.join(', ')}`)
})

test('every route as every role and as anonymous', async (t) => {
  let calls = 0
  for (const route of fx.routes) {
    const example = examples[routeKey(route)]
    assert.ok(example != null, `no example for ${routeKey(route)}`)
    for (const caller of CALLERS) {
      const expected = expectedStatus(route, caller)
      await t.test(`${routeKey(route)} as ${caller} -> ${expected}`, async () => {
        const request = await example(fx, caller)
        const token = caller === 'anonymous' ? undefined : fx.tokens[caller]
        const before = expected >= 400 ? await snapshot(fx) : undefined
        let res: ApiResponse | undefined
        try {
          res = await fx.request(route.method.toUpperCase(), request.path, { token, ...(request.body !== undefined ? { json: request.body } : {}) })
          calls++
          if (expected === 401) {
            assertProblem(res, 401)
            assert.match(res.body.detail, /token/i)
          } else if (expected === 403) {
            assertProblem(res, 403)
            assert.equal(res.body.claim, route.claim)
            assert.ok(res.body.detail.includes(route.claim as string), res.body.detail)
          } else {
            assert.equal(res.status, expected, res.text)
            if (route.success.schema != null) {
              const check = ajv.compile(route.success.schema)
              assert.ok(check(res.body), `the answer does not match the route's success schema: ${ajv.errorsText(check.errors)}; got ${res.text}`)
            } else {
              assert.equal(res.text, '')
            }
          }
          if (before != null) assert.deepEqual(await snapshot(fx), before, 'a refused request changed something')
        } finally {
          await request.cleanup?.(res ?? { status: 0, headers: new Headers(), body: undefined, text: '' })
        }
      })
    }
  }
  assert.equal(calls, fx.routes.length * CALLERS.length)
})

test('what the successful examples did really happened', async () => {
  const vm = await fx.createVm()
  const stopped = await fx.request('POST', `/api/v1/vms/${vm.id}/stop`, { token: fx.tokens.ci })
  assert.equal(stopped.body.state, 'stopped')
  assert.equal((await fx.request('GET', `/api/v1/vms/${vm.id}`, { token: fx.tokens.viewer })).body.state, 'stopped')
  assert.equal((await fx.request('DELETE', `/api/v1/vms/${vm.id}`, { token: fx.tokens.ci })).status, 204)
  assert.equal((await fx.request('GET', `/api/v1/vms/${vm.id}`, { token: fx.tokens.viewer })).status, 404)
})

test('every lifecycle action answers with the VM in its new state', async () => {
  const vm = await fx.createVm()
  const steps: Array<[string, string]> = [['suspend', 'suspended'], ['resume', 'running'], ['restart', 'running'], ['stop', 'stopped'], ['start', 'running']]
  for (const [action, state] of steps) {
    const res = await fx.request('POST', `/api/v1/vms/${vm.id}/${action}`, { token: fx.tokens.operator })
    assert.equal(res.status, 200, `${action}: ${res.text}`)
    assert.equal(res.body.state, state, action)
  }
  const exec = await fx.request('POST', `/api/v1/vms/${vm.id}/exec`, { token: fx.tokens.ci, json: { command: ['env'], env: { GREETING: 'hi' } } })
  assert.deepEqual(exec.body, { exitCode: 0, stdout: 'GREETING=hi\n', stderr: '' })
  assert.equal((await fx.request('DELETE', `/api/v1/vms/${vm.id}`, { token: fx.tokens.ci })).status, 204)
})

test('GET /health needs no token', async () => {
  const res = await fx.request('GET', '/health')
  assert.equal(res.status, 200)
  assert.deepEqual(res.body, { status: 'ok', version: '0.0.0-test' })
})

test('GET /api/openapi.json needs no token', async () => {
  const res = await fx.request('GET', '/api/openapi.json')
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/)
  assert.equal(res.body.openapi, '3.1.0')
})

test('no request ended in an internal error', () => {
  assert.deepEqual(fx.problems.filter(line => line.includes('"request failed"')), [])
})
