import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { parseDocument } from 'yaml'
import { resolveConfig, configKeys, ConfigError } from '../../src/config/index.ts'

const defaultsYaml = readFileSync(new URL('../../config/default.yaml', import.meta.url), 'utf8')
const base = { defaultsYaml, env: {}, flags: {} }

test('the embedded defaults are valid', () => {
  const config = resolveConfig(base)
  assert.equal(config.api.addr, '127.0.0.1:8080')
  assert.equal(config.driver, 'auto')
})

test('every key has a value in config/default.yaml (and validation rejects keys the schema lacks)', () => {
  const doc = parseDocument(defaultsYaml)
  for (const key of configKeys()) assert.ok(doc.hasIn(key.path), `config/default.yaml lacks ${key.dotted}`)
})

test('env overrides defaults and flags override env, with types coerced', () => {
  const config = resolveConfig({
    ...base,
    env: { CORRAL_DATA_DIR: '/var/lib/corral', CORRAL_API_ADDR: '0.0.0.0:9000', CORRAL_SIM_TIMINGS_START_MS: '0', CORRAL_NODE_LABELS: 'rack=a,xcode=16' },
    flags: { 'api.addr': '127.0.0.1:9001', 'qemu.imageDirs': '/a,/b' }
  })
  assert.equal(config.dataDir, '/var/lib/corral')
  assert.equal(config.api.addr, '127.0.0.1:9001')
  assert.equal(config.sim.timings.startMs, 0)
  assert.deepEqual(config.node.labels, { rack: 'a', xcode: '16' })
  assert.deepEqual(config.qemu.imageDirs, ['/a', '/b'])
})

test('a bad value names the key, the value, where it came from and what is allowed', () => {
  assert.throws(() => resolveConfig({ ...base, env: { CORRAL_DRIVER: 'vmware' } }),
    (err: Error) => err instanceof ConfigError && /driver/.test(err.message) && /CORRAL_DRIVER/.test(err.message) && /vmware/.test(err.message) && /auto, qemu, parallels, sim/.test(err.message))
  assert.throws(() => resolveConfig({ ...base, env: { CORRAL_API_ADDR: 'nonsense' } }),
    (err: Error) => /api\.addr/.test(err.message) && /host:port/.test(err.message))
  assert.throws(() => resolveConfig({ ...base, flags: { 'auth.tokenTtlSeconds': 'soon' } }),
    (err: Error) => /auth\.tokenTtlSeconds/.test(err.message) && /--auth-token-ttl-seconds/.test(err.message) && /whole number/.test(err.message))
  assert.throws(() => resolveConfig({ ...base, fileYaml: 'api:\n  adress: x\n' }),
    (err: Error) => /unknown config key api\.adress/.test(err.message))
})

test('env and flag names follow the key path', () => {
  const byPath = new Map(configKeys().map(k => [k.dotted, k]))
  assert.equal(byPath.get('dataDir')?.env, 'CORRAL_DATA_DIR')
  assert.equal(byPath.get('api.addr')?.env, 'CORRAL_API_ADDR')
  assert.equal(byPath.get('auth.adminPassword')?.env, 'CORRAL_AUTH_ADMIN_PASSWORD')
  assert.equal(byPath.get('api.addr')?.flag, 'api-addr')
  assert.equal(resolveConfig({ ...base, env: { CORRAL_ADMIN_PASSWORD: 'from-alias-123' } }).auth.adminPassword, 'from-alias-123')
})
