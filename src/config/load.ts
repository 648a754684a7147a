import { parse as parseYaml } from 'yaml'
import type { TSchema } from '@sinclair/typebox'
import { Errors, ValueErrorType, type ValueError } from '@sinclair/typebox/errors'
import { ConfigSchema, configKeys, type Config, type ConfigKey } from './schema.ts'
import { ConfigError } from './errors.ts'

export interface ConfigSources {
  /** Text of config/default.yaml. */
  defaultsYaml: string
  /** Text of an operator's config file, merged over the defaults. */
  fileYaml?: string
  fileName?: string
  /** The process environment (only CORRAL_* keys are read). */
  env: Record<string, string | undefined>
  /** Flag overrides by dotted key, as the command line gave them. */
  flags: Record<string, string>
}

/** Layers defaults < file < env < flags, coerces strings by schema type, and validates the result. */
export function resolveConfig (sources: ConfigSources): Config {
  const config = parseDocument(sources.defaultsYaml, 'config/default.yaml')
  if (sources.fileYaml != null) deepMerge(config, parseDocument(sources.fileYaml, sources.fileName ?? 'config file'))

  const origin = new Map<string, string>()
  for (const key of configKeys()) {
    const envName = [key.env, key.envAlias].find(name => name != null && (sources.env[name] ?? '') !== '')
    if (envName != null) {
      setPath(config, key.path, coerce(key, sources.env[envName] as string, `env ${envName}`))
      origin.set(key.dotted, `env ${envName}`)
    }
    const fromFlag = sources.flags[key.dotted]
    if (fromFlag != null) {
      setPath(config, key.path, coerce(key, fromFlag, `flag --${key.flag}`))
      origin.set(key.dotted, `flag --${key.flag}`)
    }
  }

  // TypeBox walks the schema itself. Ajv compiled it to a validator first: ~10 MB of garbage and
  // ~200 ms at every start (allErrors code for the whole schema), which set the V8 heap's peak,
  // and so the resident memory an idle node keeps (bench/mesh-idle-memory, notes/mesh.md).
  const errors = [...Errors(ConfigSchema, config)]
  if (errors.length > 0) throw new ConfigError(describeErrors(errors, config, origin))
  const checked = config as unknown as Config
  if (checked.cluster.suspectAfterMs >= checked.cluster.deadAfterMs) {
    throw new ConfigError(`config key cluster.suspectAfterMs (${checked.cluster.suspectAfterMs}) must be less than cluster.deadAfterMs (${checked.cluster.deadAfterMs})`)
  }
  if (checked.scheduler.renewMs * 2 > checked.scheduler.leaseMs) {
    throw new ConfigError(`config key scheduler.renewMs (${checked.scheduler.renewMs}) must be at most half of scheduler.leaseMs (${checked.scheduler.leaseMs}), or the lease lapses between renewals`)
  }
  if (checked.vm.execTimeoutSeconds > checked.vm.maxExecTimeoutSeconds) {
    throw new ConfigError(`config key vm.execTimeoutSeconds (${checked.vm.execTimeoutSeconds}) must not exceed vm.maxExecTimeoutSeconds (${checked.vm.maxExecTimeoutSeconds})`)
  }
  return checked
}

function parseDocument (text: string, name: string): Record<string, unknown> {
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw new ConfigError(`${name} is not valid YAML: ${(err as Error).message}`)
  }
  if (doc == null) return {}
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`${name} must be a YAML mapping of keys to values`)
  return doc as Record<string, unknown>
}

function deepMerge (target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(source)) {
    const existing = target[k]
    if (isPlainObject(v) && isPlainObject(existing) && Object.keys(existing).length > 0) deepMerge(existing, v)
    else target[k] = v
  }
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v != null && !Array.isArray(v)

function setPath (target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target
  for (const part of path.slice(0, -1)) {
    if (!isPlainObject(node[part])) node[part] = {}
    node = node[part] as Record<string, unknown>
  }
  node[path[path.length - 1]] = value
}

/** Env variables and flags are strings: turn them into the type the schema wants. */
function coerce (key: ConfigKey, raw: string, source: string): unknown {
  const s = key.schema
  if (s.type === 'integer' || s.type === 'number') {
    if (!/^-?\d+(\.\d+)?$/.test(raw.trim())) throw new ConfigError(`config key ${key.dotted} (${source}) has value "${raw}": ${allowed(s)}`)
    return Number(raw)
  }
  if (s.type === 'boolean') {
    if (raw !== 'true' && raw !== 'false') throw new ConfigError(`config key ${key.dotted} (${source}) has value "${raw}": use true or false`)
    return raw === 'true'
  }
  if (s.type === 'array') return raw.split(',').map(x => x.trim()).filter(x => x !== '')
  if (s.type === 'object') {
    const out: Record<string, string> = {}
    for (const pair of raw.split(',').map(x => x.trim()).filter(x => x !== '')) {
      const eq = pair.indexOf('=')
      if (eq <= 0) throw new ConfigError(`config key ${key.dotted} (${source}) has "${pair}": write key=value pairs separated by commas, e.g. rack=a,xcode=16`)
      out[pair.slice(0, eq)] = pair.slice(eq + 1)
    }
    return out
  }
  return raw
}

/** What a schema accepts, in words an operator can act on. */
export function allowed (s: TSchema): string {
  if (Array.isArray(s.anyOf) && s.anyOf.every((x: TSchema) => 'const' in x)) {
    return 'allowed values are ' + s.anyOf.map((x: TSchema) => String(x.const)).join(', ')
  }
  if (s.type === 'integer') {
    const lo = s.minimum ?? '-∞'
    const hi = s.maximum ?? '∞'
    return `expected a whole number from ${lo} to ${hi}`
  }
  if (typeof s.description === 'string') return `expected ${s.description}`
  if (s.type === 'string') return 'expected a string' + (s.minLength != null ? ` of at least ${s.minLength} characters` : '') + (s.maxLength != null ? ` of at most ${s.maxLength} characters` : '')
  return `expected ${String(s.type)}`
}

function describeErrors (errors: ValueError[], config: unknown, origin: Map<string, string>): string {
  const keysByPath = new Map(configKeys().map(k => [k.dotted, k]))
  const lines = new Set<string>()
  for (const e of errors) {
    // e.path is a JSON pointer; an unknown key's error points at the key itself.
    const parts = e.path.split('/').filter(Boolean).map(p => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    if (e.type === ValueErrorType.ObjectAdditionalProperties) {
      const extra = parts.pop() as string
      lines.add(`unknown config key ${[...parts, extra].join('.')}: remove it or check its spelling (corral node --help lists every key)`)
      continue
    }
    let dotted = parts.join('.')
    // Union members each report; collapse them onto the key the user set.
    const key = keysByPath.get(dotted) ?? [...keysByPath.values()].find(k => dotted.startsWith(k.dotted + '.'))
    if (key != null) dotted = key.dotted
    const value = dotted.split('.').reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], config)
    const where = origin.get(dotted) ?? 'config'
    lines.add(`config key ${dotted} (${where}) has value ${JSON.stringify(value)}: ${allowed(key != null ? key.schema : e.schema)}`)
  }
  return [...lines].join('; ')
}
