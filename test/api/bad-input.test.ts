/**
 * Requests the API must refuse. Every refusal must be a 4xx application/problem+json whose detail
 * says what to fix, must come back promptly (fetch has a timeout), and must change nothing: the GET
 * listings are compared before and after. The per-route cases are generated from the route table
 * and its schemas, so new routes and fields get them too.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import type { TSchema } from '@sinclair/typebox'
import type { RouteDef } from '../../src/api/index.ts'
import { canDo, type VmAction } from '../../src/scheduler/index.ts'
import { CAPACITY, IMAGE, MAX_BODY_BYTES, PASSWORD, snapshot, startApiFixture, type ApiFixture, type ApiResponse, type RequestOptions } from './fixture.ts'
import { examples, routeKey, unique } from './examples.ts'

let fx: ApiFixture
// The JSON-file store, as a real node has: its key and value rules are part of what must not 500.
before(async () => { fx = await startApiFixture({ store: 'json' }) })
after(async () => { await fx?.stop() })

interface Built {
  method: string
  path: string
  options: RequestOptions
  cleanup?: (res: ApiResponse) => Promise<void>
}

interface BadCase {
  name: string
  status: number
  /** What the detail must say (the field, the state, the id...). */
  detail: RegExp
  build: () => Promise<Built>
  /** Extra checks on the answer. */
  check?: (res: ApiResponse) => void
}

const admin = (): string => fx.tokens.admin

/** A valid request for the route, made by admin, that a case then spoils in one way. */
async function valid (route: RouteDef): Promise<Built> {
  const example = await examples[routeKey(route)](fx, 'admin')
  return {
    method: route.method.toUpperCase(),
    path: example.path,
    options: { token: admin(), ...(example.body !== undefined ? { json: example.body } : {}) },
    cleanup: example.cleanup
  }
}

function spoil (route: RouteDef, change: (b: Built) => Built): () => Promise<Built> {
  return async () => change(await valid(route))
}

const withBody = (b: Built, body: unknown): Built => ({ ...b, options: { ...b.options, json: body } })
const props = (schema: TSchema | undefined): Record<string, TSchema> => (schema?.properties ?? {}) as Record<string, TSchema>
const isChoice = (schema: TSchema): boolean => schema.anyOf != null || schema.enum != null || schema.const != null

/** A value of the wrong JSON type for a schema. */
function wrongType (schema: TSchema): unknown {
  switch (schema.type) {
    case 'string': return 12345
    case 'integer':
    case 'number': return 'twelve'
    case 'boolean': return 'yes'
    case 'array': return 'not-a-list'
    case 'object': return ['not', 'an', 'object']
    default: return { not: 'this' }
  }
}

/** A value of the right type that breaks a bound, when the schema has one. */
function outOfRange (schema: TSchema): unknown {
  if (typeof schema.minimum === 'number') return schema.minimum - 1
  if (typeof schema.maxLength === 'number') return 'x'.repeat(schema.maxLength + 1)
  if (typeof schema.minItems === 'number' && schema.minItems > 0) return []
  return undefined
}

/** Swaps one path parameter of a concrete example path for another value. */
function withParam (route: RouteDef, b: Built, param: string, value: string): Built {
  const template = route.path.split('/')
  const [path, query] = b.path.split('?')
  const segments = path.split('/')
  segments[template.indexOf(`:${param}`)] = encodeURIComponent(value)
  return { ...b, path: segments.join('/') + (query != null ? `?${query}` : '') }
}

function routeCases (route: RouteDef): BadCase[] {
  const key = routeKey(route)
  const cases: BadCase[] = []

  if (route.claim != null) {
    cases.push({
      name: `${key}: a token this node did not issue`,
      status: 401,
      detail: /invalid token/i,
      build: spoil(route, b => ({ ...b, options: { ...b.options, token: 'not.a.token' } }))
    }, {
      name: `${key}: Basic instead of Bearer`,
      status: 401,
      detail: /Bearer/,
      build: spoil(route, b => ({ ...b, options: { ...b.options, token: undefined, headers: { authorization: 'Basic YWRtaW46YWRtaW4=' } } }))
    })
  }

  if (route.body != null) {
    const body = route.body
    cases.push({
      name: `${key}: malformed JSON`,
      status: 400,
      detail: /not valid JSON/,
      build: spoil(route, b => ({ ...b, options: { token: b.options.token, raw: '{"oops": ', contentType: 'application/json' } }))
    }, {
      name: `${key}: a JSON string instead of an object`,
      status: 400,
      detail: /JSON|object/,
      build: spoil(route, b => ({ ...b, options: { token: b.options.token, raw: '"just a string"', contentType: 'application/json' } }))
    }, {
      name: `${key}: a JSON array instead of an object`,
      status: 400,
      detail: /body must be object/,
      build: spoil(route, b => ({ ...b, options: { token: b.options.token, raw: '[1, 2]', contentType: 'application/json' } }))
    }, {
      name: `${key}: JSON sent as text/plain`,
      status: 415,
      detail: /Content-Type: application\/json/,
      build: spoil(route, b => ({ ...b, options: { token: b.options.token, raw: JSON.stringify(b.options.json), contentType: 'text/plain' } }))
    }, {
      name: `${key}: no Content-Type at all`,
      status: 415,
      detail: /Content-Type: application\/json/,
      build: spoil(route, b => ({ ...b, options: { token: b.options.token, raw: JSON.stringify(b.options.json), headers: { 'content-type': '' } } }))
    }, {
      name: `${key}: an unknown field`,
      status: 400,
      detail: /unknown field body\.bogusField: remove it/,
      build: spoil(route, b => withBody(b, { ...(b.options.json as object), bogusField: true }))
    }, {
      name: `${key}: a body over api.maxBodyBytes`,
      status: 413,
      detail: /too large/,
      build: spoil(route, b => withBody(b, { ...(b.options.json as object), padding: 'x'.repeat(MAX_BODY_BYTES) }))
    })
    for (const [name, schema] of Object.entries(props(body))) {
      cases.push({
        name: `${key}: body.${name} of the wrong type`,
        status: 400,
        detail: new RegExp(`body\\.${name}\\b`),
        build: spoil(route, b => withBody(b, { ...(b.options.json as object), [name]: wrongType(schema) }))
      })
      const bad = outOfRange(schema)
      if (bad !== undefined) {
        cases.push({
          name: `${key}: body.${name} out of range`,
          status: 400,
          detail: new RegExp(`body\\.${name}\\b`),
          build: spoil(route, b => withBody(b, { ...(b.options.json as object), [name]: bad }))
        })
      }
    }
    for (const name of (body.required ?? []) as string[]) {
      cases.push({
        name: `${key}: body.${name} missing`,
        status: 400,
        detail: new RegExp(`body\\.${name} is required`),
        build: spoil(route, b => {
          const { [name]: _dropped, ...rest } = b.options.json as Record<string, unknown>
          return withBody(b, rest)
        })
      })
    }
  }

  for (const [name, schema] of Object.entries(props(route.params))) {
    if (isChoice(schema)) {
      cases.push({
        name: `${key}: path ${name} not one of the allowed values`,
        status: 400,
        detail: new RegExp(`path\\.${name}`),
        build: spoil(route, b => withParam(route, b, name, 'explode'))
      })
    } else {
      const unknown = `no-such-${name}-0000`
      cases.push({
        name: `${key}: unknown ${name}`,
        status: 404,
        detail: new RegExp(unknown),
        build: spoil(route, b => withParam(route, b, name, unknown))
      })
      if (typeof schema.maxLength === 'number') {
        cases.push({
          name: `${key}: ${name} longer than allowed`,
          status: 400,
          detail: new RegExp(`path\\.${name}`),
          build: spoil(route, b => withParam(route, b, name, 'x'.repeat((schema.maxLength as number) + 1)))
        })
      }
    }
  }

  if (route.query != null) {
    const withQuery = (b: Built, query: string): Built => ({ ...b, path: `${b.path.split('?')[0]}?${query}` })
    cases.push({
      name: `${key}: an unknown query parameter`,
      status: 400,
      detail: /query\.bogus/,
      build: spoil(route, b => withQuery(b, 'bogus=1'))
    })
    for (const [name, schema] of Object.entries(props(route.query))) {
      if (!isChoice(schema) && !['integer', 'number', 'boolean'].includes(schema.type as string)) continue
      cases.push({
        name: `${key}: query ${name} with a value it does not take`,
        status: 400,
        detail: new RegExp(`query\\.${name}`),
        build: spoil(route, b => withQuery(b, `${name}=not-a-valid-value`))
      }, {
        name: `${key}: query ${name} given twice`,
        status: 400,
        detail: new RegExp(`query\\.${name}`),
        build: spoil(route, b => withQuery(b, `${name}=true&${name}=false`))
      })
    }
  }
  return cases
}

/** Actions refused in each settled state, straight from the state machine. */
function illegalTransitionCases (): BadCase[] {
  const cases: BadCase[] = []
  for (const state of ['running', 'stopped', 'suspended'] as const) {
    for (const action of ['start', 'stop', 'suspend', 'resume', 'restart', 'exec'] as VmAction[]) {
      if (canDo(action, state)) continue
      cases.push({
        name: `${action} a ${state} VM`,
        status: 409,
        detail: new RegExp(`cannot ${action} VM vm-[0-9a-f]+ while it is ${state}`),
        build: async () => {
          const vm = await fx.createVm({ state })
          const exec = action === 'exec'
          return {
            method: 'POST',
            path: `/api/v1/vms/${vm.id}/${action}`,
            options: { token: admin(), ...(exec ? { json: { command: ['uname', '-a'] } } : {}) },
            cleanup: async () => { await fx.host.delete(vm.id) }
          }
        },
        check: res => {
          assert.equal(res.body.state, state)
          assert.equal(res.body.action, action)
        }
      })
    }
  }
  return cases
}

const createVm = (body: Record<string, unknown>, token = admin()): () => Promise<Built> =>
  async () => ({ method: 'POST', path: '/api/v1/vms', options: { token, json: { image: IMAGE, ...body } } })

function capacityCases (): BadCase[] {
  return [{
    name: 'more CPUs than the host has free',
    status: 409,
    detail: new RegExp(`cpus short by 1 \\(asked ${CAPACITY.cpus + 1}, free ${CAPACITY.cpus}\\).*ask for less`),
    build: createVm({ cpus: CAPACITY.cpus + 1 }),
    check: res => assert.deepEqual(res.body.short, { cpus: 1 })
  }, {
    name: 'more memory and CPUs than the host has free',
    status: 409,
    detail: /cpus short by .*memoryMiB short by /,
    build: createVm({ cpus: CAPACITY.cpus * 2, memoryMiB: CAPACITY.memoryMiB * 2 }),
    check: res => assert.deepEqual(Object.keys(res.body.short).sort(), ['cpus', 'memoryMiB'])
  }, {
    name: 'a VM that fits only once the others are gone',
    status: 409,
    detail: /cpus short by 1/,
    build: async () => {
      // ?wait=true: the cleanup deletes it, and a VM still being created cannot be deleted yet.
      const hog = await fx.request('POST', '/api/v1/vms?wait=true', { token: admin(), json: { image: IMAGE, cpus: CAPACITY.cpus - 1, start: false } })
      assert.equal(hog.status, 201, hog.text)
      return {
        method: 'POST',
        path: '/api/v1/vms?wait=true',
        options: { token: admin(), json: { image: IMAGE, cpus: 2 } },
        cleanup: async () => { await fx.host.delete(hog.body.id) }
      }
    }
  }]
}

function semanticCases (): BadCase[] {
  const post = (path: string, json: unknown, token = admin()): () => Promise<Built> => async () => ({ method: 'POST', path, options: { token, json } })
  const del = (path: string, token = admin()): () => Promise<Built> => async () => ({ method: 'DELETE', path, options: { token } })
  return [
    { name: 'a VM from an unknown image', status: 404, detail: /no image named "no-such-image".*known images: .*sim-ubuntu-24\.04/, build: createVm({ image: 'no-such-image' }) },
    {
      name: 'a VM name that is taken',
      status: 409,
      detail: /a VM named "taken-name" already exists/,
      build: async () => {
        const vm = await fx.createVm({ name: 'taken-name', state: 'stopped' })
        return { ...await createVm({ name: 'taken-name' })(), cleanup: async () => { await fx.host.delete(vm.id) } }
      }
    },
    { name: 'a VM name with a space', status: 400, detail: /body\.name must be letters, digits/, build: createVm({ name: 'has space' }) },
    { name: 'a label with a bad key', status: 400, detail: /body\.labels has a key "bad key!" that does not match/, build: createVm({ labels: { 'bad key!': 'x' } }) },
    {
      name: 'an exec timeout above the node maximum',
      status: 400,
      detail: /timeoutSeconds 601 is above this node's maximum of 600/,
      build: async () => {
        const vm = await fx.createVm()
        return { method: 'POST', path: `/api/v1/vms/${vm.id}/exec`, options: { token: admin(), json: { command: ['true'], timeoutSeconds: 601 } }, cleanup: async () => { await fx.host.delete(vm.id) } }
      }
    },
    { name: 'exec with an env name that is not one', status: 400, detail: /body\.env has a key "NOT-A-NAME" that does not match/, build: post('/api/v1/vms/whatever/exec', { command: ['env'], env: { 'NOT-A-NAME': 'x' } }) },
    { name: 'exec with an empty command', status: 400, detail: /body\.command/, build: post('/api/v1/vms/whatever/exec', { command: [] }) },
    { name: 'an image name that exists', status: 409, detail: /an image named "sim-ubuntu-24\.04" already exists/, build: post('/api/v1/images', { name: IMAGE, path: '/images/x.qcow2' }) },
    { name: 'an image with a blank path', status: 400, detail: /path is empty/, build: post('/api/v1/images', { name: 'blank-path', path: '   ' }) },
    { name: 'a user that exists', status: 409, detail: /User "viewer" already exists/, build: post('/api/v1/users', { username: 'viewer', password: PASSWORD }) },
    { name: 'a username with capitals and spaces', status: 400, detail: /username/i, build: post('/api/v1/users', { username: 'Not Valid', password: PASSWORD }) },
    { name: 'a user with an unknown role', status: 400, detail: /no-such-role/, build: post('/api/v1/users', { username: unique('role-less'), password: PASSWORD, roles: ['no-such-role'] }) },
    { name: 'a password shorter than 8', status: 400, detail: /body\.password/, build: post('/api/v1/users', { username: unique('short-pw'), password: 'short' }) },
    { name: 'deleting the last admin', status: 409, detail: /last user with the admin role/, build: del('/api/v1/users/admin') },
    { name: 'a role named like a built-in one', status: 409, detail: /"admin" is a built-in role/, build: post('/api/v1/roles', { name: 'admin', claims: ['vm:read'] }) },
    { name: 'a role with an unknown claim', status: 400, detail: /vm:fly/, build: post('/api/v1/roles', { name: unique('flyer'), claims: ['vm:fly'] }) },
    { name: 'deleting a built-in role', status: 409, detail: /"viewer" is a built-in role and cannot be deleted/, build: del('/api/v1/roles/viewer') },
    {
      name: 'deleting a role someone holds',
      status: 409,
      detail: /is still held by users/,
      build: async () => {
        const role = unique('held')
        const user = unique('holder')
        await fx.auth.createRole({ name: role, claims: ['vm:read'] })
        await fx.auth.createUser({ username: user, password: PASSWORD, roles: [role] })
        return {
          ...await del(`/api/v1/roles/${role}`)(),
          cleanup: async () => { await fx.auth.deleteUser(user); await fx.auth.deleteRole(role) }
        }
      }
    },
    { name: 'an API key with more rights than its user', status: 400, detail: /cannot grant more than its user holds/, build: post('/api/v1/api-keys', { roles: ['admin'] }, fx.tokens.operator) },
    { name: 'an API key for another user without user:write', status: 403, detail: /"user:write"/, build: async () => ({ method: 'POST', path: '/api/v1/api-keys', options: { token: fx.tokens.operator, json: { username: 'ci' } } }) },
    { name: 'an API key for a user that does not exist', status: 404, detail: /No user "ghost"/, build: post('/api/v1/api-keys', { username: 'ghost' }) },
    {
      name: "revoking another user's API key without user:write",
      status: 403,
      detail: /"user:write"/,
      build: async () => {
        const key = await fx.auth.createApiKey({ username: 'ci', name: 'not-yours' })
        return { ...await del(`/api/v1/api-keys/${key.id}`, fx.tokens.operator)(), cleanup: async () => { await fx.auth.deleteApiKey(key.id) } }
      }
    },
    { name: 'a token request with both a password and an API key', status: 400, detail: /either .*username.*password.* or .*apiKey/, build: post('/api/v1/auth/token', { username: 'ci', password: PASSWORD, apiKey: 'crl_x' }) },
    { name: 'a token request with a username only', status: 400, detail: /either .*username.*password.* or .*apiKey/, build: post('/api/v1/auth/token', { username: 'ci' }) },
    { name: 'a token request with an empty body', status: 400, detail: /either .*username.*password.* or .*apiKey/, build: post('/api/v1/auth/token', {}) },
    { name: 'a wrong password', status: 401, detail: /Wrong username or password/, build: post('/api/v1/auth/token', { username: 'nobody-at-all', password: 'wrong password' }) },
    { name: 'an unknown API key', status: 401, detail: /Unknown or revoked API key/, build: post('/api/v1/auth/token', { apiKey: 'crl_0123456789abcdef_nope' }) }
  ]
}

/** Every [method, concrete path] the table does not serve although the path exists. */
function wrongMethodCases (routes: RouteDef[]): BadCase[] {
  const concrete = (path: string): string => path.replace(/:id\b/, 'some-id').replace(/:action\b/, 'stop').replace(/:[A-Za-z]+/g, 'some-name')
  const matcher = (path: string): RegExp => new RegExp(`^${path.replace(/:[A-Za-z]+/g, '[^/]+')}$`)
  const paths = new Set(['/health', '/api/openapi.json', ...routes.map(r => concrete(r.path))])
  const cases: BadCase[] = []
  for (const path of paths) {
    const allowed = new Set(routes.filter(r => matcher(r.path).test(path)).map(r => r.method.toUpperCase()))
    if (path === '/health' || path === '/api/openapi.json') allowed.add('GET')
    for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']) {
      if (allowed.has(method)) continue
      cases.push({
        name: `${method} ${path}`,
        status: 405,
        detail: new RegExp(`^${path} does not take ${method}; it takes `),
        build: async () => ({ method, path, options: { token: admin() } }),
        check: res => {
          const allow = (res.headers.get('allow') ?? '').split(/,\s*/)
          for (const m of allowed) assert.ok(allow.includes(m), `Allow header "${res.headers.get('allow') ?? ''}" should list ${m}`)
        }
      })
    }
  }
  return cases
}

function unknownRouteCases (): BadCase[] {
  const get = (path: string, token: string | undefined = admin()): () => Promise<Built> => async () => ({ method: 'GET', path, options: { token } })
  return [
    { name: 'GET /nope', status: 404, detail: /no route GET \/nope.*openapi/, build: get('/nope') },
    { name: 'GET /api/v1/nope without a token', status: 404, detail: /no route GET \/api\/v1\/nope/, build: get('/api/v1/nope') },
    { name: 'GET /api/v2/vms', status: 404, detail: /no route/, build: get('/api/v2/vms') },
    { name: 'POST /api/v1/vms/a/b/c', status: 404, detail: /no route/, build: async () => ({ method: 'POST', path: '/api/v1/vms/a/b/c', options: { token: admin(), json: {} } }) },
    { name: 'GET /api/v1/vms/ with a broken percent-escape', status: 404, detail: /no VM with id/, build: get('/api/v1/vms/%E0%A4%A') }
  ]
}

async function runCase (c: BadCase): Promise<void> {
  const built = await c.build()
  const failuresBefore = fx.problems.filter(line => line.includes('"request failed"')).length
  const before = await snapshot(fx)
  let res: ApiResponse | undefined
  try {
    res = await fx.request(built.method, built.path, built.options)
    assert.equal(res.status, c.status, `${built.method} ${built.path}: ${res.text}`)
    assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/)
    assert.equal(res.body.status, c.status)
    assert.match(res.body.type, /^urn:corral:problem:/)
    assert.equal(typeof res.body.title, 'string')
    assert.ok(typeof res.body.detail === 'string' && res.body.detail.length > 20, `detail should say what to fix: ${res.text}`)
    assert.match(res.body.detail, c.detail)
    c.check?.(res)
    assert.deepEqual(await snapshot(fx), before, 'the refused request changed something')
    assert.equal(fx.problems.filter(line => line.includes('"request failed"')).length, failuresBefore, 'the node logged an internal error')
  } finally {
    if (built.cleanup != null && res != null) await built.cleanup(res)
  }
}

test('bad input to every route', async (t) => {
  const cases = fx.routes.flatMap(routeCases)
  const covered = new Set(cases.map(c => c.name.split(': ')[0]))
  for (const route of fx.routes) assert.ok(covered.has(routeKey(route)), `no bad-input case for ${routeKey(route)}`)
  for (const c of cases) await t.test(c.name, async () => { await runCase(c) })
})

test('illegal VM state transitions answer 409 naming the state', async (t) => {
  const cases = illegalTransitionCases()
  assert.ok(cases.length >= 8)
  for (const c of cases) await t.test(c.name, async () => { await runCase(c) })
})

test('capacity exhaustion answers 409 saying what is short', async (t) => {
  for (const c of capacityCases()) await t.test(c.name, async () => { await runCase(c) })
})

test('requests that break a rule of the service', async (t) => {
  for (const c of semanticCases()) await t.test(c.name, async () => { await runCase(c) })
})

test('unknown routes answer 404', async (t) => {
  for (const c of unknownRouteCases()) await t.test(c.name, async () => { await runCase(c) })
})

test('methods a path does not take answer 405 with Allow', async (t) => {
  for (const c of wrongMethodCases(fx.routes)) await t.test(c.name, async () => { await runCase(c) })
})

test('the host still admits VMs after all that', async () => {
  const vm = await fx.createVm()
  const host = await fx.request('GET', '/api/v1/hosts', { token: admin() })
  assert.deepEqual(host.body.items[0].allocated, { cpus: vm.cpus, memoryMiB: vm.memoryMiB, diskMiB: vm.diskMiB })
  assert.equal((await fx.request('DELETE', `/api/v1/vms/${vm.id}`, { token: admin() })).status, 204)
})
