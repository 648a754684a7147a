/**
 * An in-process corral node for API tests, built the way src/cli/assemble.ts builds one: store, sim
 * driver (all timings 0), auth, local images, host agent and the API on 127.0.0.1:0. One user per
 * built-in role is created and logged in, so tests can call every route as every role.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { createApiServer, type ApiServer, type RouteDef } from '../../src/api/index.ts'
import { createProxyService, type ProxyService } from '../../src/proxy/index.ts'
import { BUILTIN_ROLE_NAMES, createAuthService, type AuthService, type BuiltinRoleName } from '../../src/auth/index.ts'
import { mkdir, writeFile } from 'node:fs/promises'
import { CatalogService, LocalImages, createFolderProvider } from '../../src/catalog/index.ts'
import { MemoryRecords } from '../catalog/fixture.ts'
import { createSimDriver, type SimDriver } from '../../src/drivers/sim/index.ts'
import { HostAgent, type VmRecord } from '../../src/scheduler/index.ts'
import { createJsonStore, type Store } from '../../src/store/index.ts'
import { MemoryStore } from '../helpers/memory-store.ts'

export const PASSWORD = 'correct horse battery staple'
/** Small, so a 413 is cheap to provoke; every valid example body fits well within it. */
export const MAX_BODY_BYTES = 8192
/** No request in these tests may take longer; a hang fails the test instead of stalling the suite. */
export const REQUEST_TIMEOUT_MS = 5000
export const IMAGE = 'sim-ubuntu-24.04'
/** Host capacity: room for dozens of the default 2-CPU VMs, and a known ceiling to exceed. */
export const CAPACITY = { cpus: 64, memoryMiB: 262_144, diskMiB: 4_000_000 }
export const LOCKOUT = { maxFailures: 3, windowSeconds: 60, lockSeconds: 300 }

export type Caller = BuiltinRoleName | 'anonymous'
export const CALLERS: readonly Caller[] = [...BUILTIN_ROLE_NAMES, 'anonymous']

export interface ApiResponse {
  status: number
  headers: Headers
  /** Parsed JSON when the answer is JSON, otherwise undefined. */
  body: any
  text: string
}

export interface RequestOptions {
  /** Bearer credential (token or API key); omitted for anonymous calls. */
  token?: string
  /** Sent as JSON with Content-Type: application/json. */
  json?: unknown
  /** Sent as is, with `contentType` if given; for malformed and oversized bodies. */
  raw?: string
  contentType?: string
  headers?: Record<string, string>
}

export interface ApiFixture {
  baseUrl: string
  /** ws://127.0.0.1:port */
  wsUrl: string
  /** A token for the user of each built-in role (the user is named after the role). */
  tokens: Record<BuiltinRoleName, string>
  routes: RouteDef[]
  auth: AuthService
  host: HostAgent
  driver: SimDriver
  /** The node's catalog (folder provider in the temp dir, records in memory). */
  catalog: CatalogService
  /** A tiny qemu-style bundle folder to push. */
  catalogBundle: string
  /** Pushes a tiny image under a fresh id and returns the id. */
  catalogImage: (id: string, options?: { requiredClaims?: string[] }) => Promise<string>
  /** The reverse proxy (no mesh, no TCP listeners: the proxy's own behaviour is tested in test/proxy). */
  proxy: ProxyService
  /** Log lines at warn and above, as JSON text: a 500 leaves an error line here. */
  problems: string[]
  request: (method: string, path: string, options?: RequestOptions) => Promise<ApiResponse>
  /** Creates a VM through the API and brings it to `state` (running unless told). */
  createVm: (options?: { state?: 'running' | 'stopped' | 'suspended', name?: string, token?: string }) => Promise<VmRecord>
  /** Logs in over HTTP and returns the token. */
  login: (username: string, password?: string) => Promise<string>
  stop: () => Promise<void>
}

export interface FixtureOptions {
  /** 'json' uses the real JSON-file store in the temp dir, as a node does. Default 'memory'. */
  store?: 'memory' | 'json'
}

export async function startApiFixture (options: FixtureOptions = {}): Promise<ApiFixture> {
  const clock = Date.now
  const dataDir = await mkdtemp(join(tmpdir(), 'corral-api-'))
  const problems: string[] = []
  const logger = pino({ level: 'warn' }, { write: (line: string) => { problems.push(line) } })
  const stack: Array<() => Promise<void>> = []
  const stop = async (): Promise<void> => {
    while (stack.length > 0) await (stack.pop() as () => Promise<void>)()
  }
  stack.push(async () => await rm(dataDir, { recursive: true, force: true }))

  try {
    let store: Store
    if (options.store === 'json') {
      const json = createJsonStore({ logger }, { dataDir })
      await json.start()
      stack.push(async () => await json.stop())
      store = json
    } else {
      store = new MemoryStore()
    }

    const driver = createSimDriver({ logger, store }, {
      ...CAPACITY,
      arch: 'x86_64',
      labels: {},
      timings: { createMs: 0, startMs: 0, stopMs: 0, deleteMs: 0, execMs: 0 }
    })
    await driver.open()
    stack.push(async () => await driver.close())

    const auth = createAuthService({ store, logger, clock }, {
      dataDir,
      adminPassword: PASSWORD,
      tokenTtlSeconds: 3600,
      lockout: LOCKOUT,
      // Cheap hashes: logins happen in nearly every test.
      passwordHashCost: 1024
    })
    await auth.start()
    stack.push(async () => await auth.stop())

    const catalog = new CatalogService({ logger, records: new MemoryRecords(), clock, hostArch: async () => 'x86_64' }, {
      cacheDir: join(dataDir, 'catalog'), cacheMaxBytes: 1024 * 1024 * 1024, concurrency: 2,
      providers: { folder: createFolderProvider({ path: join(dataDir, 'bucket') }) }
    })
    await catalog.start()
    stack.push(async () => await catalog.stop())
    const bundle = join(dataDir, 'bundle')
    await mkdir(bundle, { recursive: true })
    await writeFile(join(bundle, 'image.json'), JSON.stringify({ name: 'tiny', arch: 'x86_64', os: 'linux', kernel: 'k', defaultCpus: 1, defaultMemoryMiB: 64, agent: 'none' }))
    await writeFile(join(bundle, 'k'), 'not really a kernel')
    const catalogImage = async (id: string, options: { requiredClaims?: string[] } = {}): Promise<string> => {
      await catalog.push({ path: bundle, image: id, version: '1.0', ...options }, 'admin')
      return id
    }

    const images = new LocalImages({ driver, store, logger, clock, catalog })
    const host = new HostAgent({ driver, store, images, logger, clock }, {
      hostName: 'test-host', execTimeoutSeconds: 60, maxExecTimeoutSeconds: 600
    })
    await host.start()
    stack.push(async () => await host.stop())

    const proxy = createProxyService({ vms: host, logger, clock }, {
      clusterDomain: '', tcpPortRange: { from: 30000, to: 30999 }, tcpListenHost: 'off', connectTimeoutMs: 2000,
      signingKey: new Uint8Array(32), signedUrlMaxSeconds: 3600
    })
    await proxy.start()
    stack.push(async () => await proxy.stop())

    // A stand-in for the mesh: the cluster routes' own behaviour is tested with real nodes in test/e2e.
    const cluster = {
      self: () => ({ peerId: '12D3KooWFixture', nodeName: 'fixture', multiaddrs: ['/ip4/127.0.0.1/tcp/7946/p2p/12D3KooWFixture'] }),
      members: () => [{ peerId: '12D3KooWFixture', nodeName: 'fixture', status: 'alive', addrs: [], lastSeen: Date.now(), self: true }],
      joinToken: () => 'fixture-join-token'
    }
    // Prefetch needs the mesh; its own behaviour is tested with real nodes in test/e2e.
    const prefetch = async (ref: string): Promise<{ ref: string, hosts: [] }> => ({ ref, hosts: [] })
    const api: ApiServer = createApiServer({ auth, vms: host, images, proxy, logger, clock, cluster, catalog: { service: catalog, prefetch } }, {
      addr: '127.0.0.1:0', maxBodyBytes: MAX_BODY_BYTES, version: '0.0.0-test'
    })
    await api.start()
    stack.push(async () => await api.stop())

    const baseUrl = `http://${api.address()}`
    const request = async (method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse> => {
      const headers: Record<string, string> = { ...opts.headers }
      if (opts.token != null) headers.authorization = `Bearer ${opts.token}`
      let body: string | undefined
      if (opts.json !== undefined) {
        body = JSON.stringify(opts.json)
        headers['content-type'] = opts.contentType ?? 'application/json'
      } else if (opts.raw !== undefined) {
        body = opts.raw
        if (opts.contentType != null) headers['content-type'] = opts.contentType
      }
      const res = await fetch(baseUrl + path, { method, headers, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
      const text = await res.text()
      const type = res.headers.get('content-type') ?? ''
      return { status: res.status, headers: res.headers, text, body: /json/.test(type) && text !== '' ? JSON.parse(text) : undefined }
    }

    const login = async (username: string, password = PASSWORD): Promise<string> => {
      const res = await request('POST', '/api/v1/auth/token', { json: { username, password } })
      if (res.status !== 200) throw new Error(`login as ${username} failed: ${res.status} ${res.text}`)
      return res.body.token as string
    }

    const tokens = {} as Record<BuiltinRoleName, string>
    for (const role of BUILTIN_ROLE_NAMES) {
      if (role !== 'admin') await auth.createUser({ username: role, password: PASSWORD, roles: [role] })
      tokens[role] = await login(role)
    }

    const createVm: ApiFixture['createVm'] = async ({ state = 'running', name, token = tokens.admin } = {}) => {
      const created = await request('POST', '/api/v1/vms?wait=true', { token, json: { image: IMAGE, ...(name != null ? { name } : {}), start: state !== 'stopped' } })
      if (created.status !== 201) throw new Error(`creating a VM failed: ${created.status} ${created.text}`)
      let vm = created.body as VmRecord
      if (state === 'suspended') {
        const suspended = await request('POST', `/api/v1/vms/${vm.id}/suspend`, { token })
        if (suspended.status !== 200) throw new Error(`suspending a VM failed: ${suspended.status} ${suspended.text}`)
        vm = suspended.body as VmRecord
      }
      if (vm.state !== state) throw new Error(`the new VM is ${vm.state}, not ${state}`)
      return vm
    }

    return {
      baseUrl,
      wsUrl: baseUrl.replace(/^http/, 'ws'),
      tokens,
      routes: api.routes,
      auth,
      host,
      driver,
      catalog,
      proxy,
      catalogBundle: bundle,
      catalogImage,
      problems,
      request,
      createVm,
      login,
      stop
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/** What every caller sees of the node's state: the GET listings, as admin. */
export async function snapshot (fx: ApiFixture): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  for (const path of ['/api/v1/users', '/api/v1/roles', '/api/v1/api-keys', '/api/v1/images', '/api/v1/vms', '/api/v1/hosts', '/api/v1/catalog', '/api/v1/proxy/routes']) {
    const res = await fx.request('GET', path, { token: fx.tokens.admin })
    if (res.status !== 200) throw new Error(`GET ${path} as admin failed: ${res.status} ${res.text}`)
    out[path] = res.body
  }
  return out
}
