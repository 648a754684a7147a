import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { TSchema } from '@sinclair/typebox'
import { RequestValidationError } from './errors.ts'

// verbose: errors carry their parentSchema, whose description says in words what a pattern wants.
// validateSchema: false: the schemas are ours (TypeBox). Checking each against JSON Schema's
// meta-schema compiled that meta-schema first: over half of the CPU of a node's first requests.
const ajv = new Ajv({ allErrors: true, strict: false, verbose: true, validateSchema: false })
addFormats.default(ajv)
const compiled = new WeakMap<TSchema, ValidateFunction>()

/** Checks `value` against `schema`, or throws one error that names every field to fix. */
export function validateInput<T> (schema: TSchema, value: unknown, where: 'body' | 'query' | 'path'): T {
  let check = compiled.get(schema)
  if (check == null) {
    check = ajv.compile(schema)
    compiled.set(schema, check)
  }
  if (check(value)) return value as T
  const problems = [...new Set((check.errors ?? []).map(e => describe(e, where)))]
  throw new RequestValidationError(`invalid request ${where}: ${problems.join('; ')}`, { errors: problems })
}

function describe (e: ErrorObject, where: string): string {
  const field = [where, ...e.instancePath.split('/').filter(Boolean)].join('.')
  const params = e.params as Record<string, unknown>
  switch (e.keyword) {
    case 'additionalProperties': {
      // A map (labels, env) whose keys must match a pattern: the key is malformed, not unknown.
      const keyPatterns = Object.keys((e.parentSchema as TSchema | undefined)?.patternProperties ?? {})
      if (keyPatterns.length > 0) return `${field} has a key ${JSON.stringify(params.additionalProperty)} that does not match ${keyPatterns.join(' or ')}: rename it`
      return `unknown field ${field}.${String(params.additionalProperty)}: remove it`
    }
    case 'required':
      return `${field}.${String(params.missingProperty)} is required`
    case 'type':
      return `${field} must be ${String(params.type)}`
    case 'enum':
    case 'const':
      return `${field} must be one of ${JSON.stringify(params.allowedValues ?? params.allowedValue)}`
    case 'pattern': {
      const description = (e.parentSchema as TSchema | undefined)?.description
      return `${field} ${description != null ? `must be ${description}` : `must match ${String(params.pattern)}`}`
    }
    case 'anyOf': return `${field} is not one of the allowed values`
    default:
      return `${field} ${e.message ?? 'is not allowed'}`
  }
}
