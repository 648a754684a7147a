/**
 * GET /api/openapi.json describes exactly the route table, with the very schemas that validate
 * requests: what the document accepts and rejects, the server accepts and rejects.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { Ajv } from 'ajv'
import addFormats from 'ajv-formats'
import type { TSchema } from '@sinclair/typebox'
import { startApiFixture, type ApiFixture } from './fixture.ts'
import { examples, routeKey } from './examples.ts'

let fx: ApiFixture
let doc: any
before(async () => {
  fx = await startApiFixture()
  const res = await fx.request('GET', '/api/openapi.json')
  assert.equal(res.status, 200)
  doc = res.body
})
after(async () => { await fx?.stop() })

const openApiPath = (path: string): string => path.replace(/:([A-Za-z]+)/g, '{$1}')
const plain = (schema: TSchema): unknown => JSON.parse(JSON.stringify(schema))

test('it is OpenAPI 3.1 with a bearer scheme', () => {
  assert.equal(doc.openapi, '3.1.0')
  assert.equal(doc.info.version, '0.0.0-test')
  assert.equal(typeof doc.info.title, 'string')
  assert.deepEqual(doc.components.securitySchemes.bearer, { ...doc.components.securitySchemes.bearer, type: 'http', scheme: 'bearer' })
})

test('it lists every route of the table, and nothing else', () => {
  const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, operations]) => Object.keys(operations).map(method => `${method.toUpperCase()} ${path}`)).sort()
  const table = fx.routes.map(route => `${route.method.toUpperCase()} ${openApiPath(route.path)}`).sort()
  assert.deepEqual(documented, table)
  const ids = Object.values(doc.paths as Record<string, Record<string, any>>).flatMap(ops => Object.values(ops).map(op => op.operationId))
  assert.equal(new Set(ids).size, ids.length, 'operationIds must be unique')
})

test('each operation carries the route\'s claim, schemas, parameters and answers', async (t) => {
  for (const route of fx.routes) {
    await t.test(routeKey(route), () => {
      const op = doc.paths[openApiPath(route.path)][route.method]
      assert.equal(op.summary, route.summary)
      if (route.claim == null) {
        assert.deepEqual(op.security, [])
      } else {
        assert.deepEqual(op.security, [{ bearer: [] }])
        assert.equal(op['x-corral-claim'], route.claim)
      }

      if (route.body != null) {
        assert.equal(op.requestBody.required, true)
        assert.deepEqual(op.requestBody.content['application/json'].schema, plain(route.body))
      } else {
        assert.equal(op.requestBody, undefined)
      }

      const parameters: any[] = op.parameters ?? []
      const templateNames = [...route.path.matchAll(/:([A-Za-z]+)/g)].map(m => m[1])
      const pathParams = parameters.filter(p => p.in === 'path')
      assert.deepEqual(pathParams.map(p => p.name).sort(), [...templateNames].sort())
      for (const p of pathParams) {
        assert.equal(p.required, true)
        assert.deepEqual(p.schema, plain((route.params as TSchema).properties[p.name]))
      }
      const queryParams = parameters.filter(p => p.in === 'query')
      assert.deepEqual(queryParams.map(p => p.name).sort(), Object.keys(route.query?.properties ?? {}).sort())
      for (const p of queryParams) assert.deepEqual(p.schema, plain((route.query as TSchema).properties[p.name]))

      const success = op.responses[String(route.success.status)]
      assert.ok(success != null, `no ${route.success.status} answer documented`)
      if (route.success.schema != null) assert.deepEqual(success.content['application/json'].schema, plain(route.success.schema))
      assert.ok(op.responses['4XX'].content['application/problem+json'] != null)
    })
  }
})

test('what the published request schemas reject, the server rejects, naming the same fields', async (t) => {
  const ajv = new Ajv({ allErrors: true, strict: false })
  addFormats.default(ajv)
  for (const route of fx.routes.filter(r => r.body != null)) {
    await t.test(routeKey(route), async () => {
      const schema = doc.paths[openApiPath(route.path)][route.method].requestBody.content['application/json'].schema
      const check = ajv.compile(schema)
      const example = await examples[routeKey(route)](fx, 'admin')
      try {
        assert.ok(check(example.body), `the published schema refuses the example: ${ajv.errorsText(check.errors)}`)
        const spoiled = { ...(example.body as object), notInTheSchema: 1 }
        assert.equal(check(spoiled), false)
        const res = await fx.request(route.method.toUpperCase(), example.path, { token: fx.tokens.admin, json: spoiled })
        assert.equal(res.status, 400, res.text)
        assert.match(res.body.detail, /body\.notInTheSchema/)
      } finally {
        await example.cleanup?.({ status: 0, headers: new Headers(), body: undefined, text: '' })
      }
    })
  }
})
