import type { TSchema } from '@sinclair/typebox'
import type { RouteDef } from './route.ts'
import { Problem } from './schemas.ts'

/** OpenAPI 3.1 from the route table: the schemas here are the very ones that validate requests. */
export function buildOpenApi (routes: RouteDef[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const route of routes) {
    const path = route.path.replace(/:([A-Za-z]+)/g, '{$1}')
    const parameters = [
      ...schemaParams(route.params, 'path'),
      ...schemaParams(route.query, 'query')
    ]
    const problem = { 'application/problem+json': { schema: clean(Problem) } }
    const responses: Record<string, unknown> = {
      [route.success.status]: {
        description: route.success.description,
        ...(route.success.schema != null ? { content: { 'application/json': { schema: clean(route.success.schema) } } } : {})
      },
      '4XX': { description: 'the request cannot be done as sent; detail says what to fix', content: problem }
    }
    paths[path] ??= {}
    paths[path][route.method] = {
      summary: route.summary,
      tags: [route.tag],
      operationId: `${route.method}${path.replace(/[{}]/g, '').split(/[/-]/).map(p => p.charAt(0).toUpperCase() + p.slice(1)).join('')}`,
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(route.body != null ? { requestBody: { required: true, content: { 'application/json': { schema: clean(route.body) } } } } : {}),
      responses,
      ...(route.claim != null ? { security: [{ bearer: [] }], 'x-corral-claim': route.claim } : { security: [] })
    }
  }
  return {
    openapi: '3.1.0',
    info: { title: 'corral API', version, description: 'Disposable VMs for CI across a mesh of hosts. Websockets: GET /api/v1/events and GET /api/v1/vms/{id}/exec (upgrade).' },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'a token from POST /api/v1/auth/token, or an API key' } } },
    paths
  }
}

function schemaParams (schema: TSchema | undefined, where: 'path' | 'query'): unknown[] {
  if (schema?.properties == null) return []
  const required = new Set<string>(schema.required ?? [])
  return Object.entries(schema.properties as Record<string, TSchema>).map(([name, s]) => ({
    name, in: where, required: where === 'path' || required.has(name), schema: clean(s)
  }))
}

/** TypeBox schemas are JSON Schema already; JSON round-trip drops its symbol bookkeeping. */
const clean = (schema: TSchema): unknown => JSON.parse(JSON.stringify(schema))
