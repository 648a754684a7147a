/**
 * An in-process node for proxy tests, built as src/cli/assemble.ts builds one minus the mesh: sim
 * driver (timings 0), auth, host agent, proxy and the API on 127.0.0.1:0. A VM's guest ports are
 * the sim driver's responders (HTTP page, raw echo), unless a test plugs its own server in for a
 * port with `serve(vm, port, server)`. Log lines are kept for access-log assertions.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { createApiServer, type ApiServer } from '../../src/api/index.ts'
import { createAuthService, type AuthService } from '../../src/auth/index.ts'
import { LocalImages } from '../../src/catalog/index.ts'
import { createSimDriver } from '../../src/drivers/sim/index.ts'
import { createProxyService, type ProxyService, type VmDirectory } from '../../src/proxy/index.ts'
import { HostAgent, type VmRecord } from '../../src/scheduler/index.ts'
import { MemoryStore } from '../helpers/memory-store.ts'

export const PASSWORD = 'proxy test password'
export const DOMAIN = 'vms.test'

export interface ProxyFixture {
  url: string
  wsUrl: string
  api: ApiServer
  auth: AuthService
  host: HostAgent
  proxy: ProxyService & { openConnections: (vm?: string) => number, fastHttpCounts: () => { requests: number, handovers: number } }
  tokens: { admin: string, ci: string, viewer: string, operator: string }
  logs: Array<Record<string, any>>
  clock: { now: number | undefined }
  createVm: () => Promise<VmRecord>
  /** From now on, port `port` of `vm` is this server (listening on loopback). */
  serve: (vm: string, port: number, server: Server | import('node:net').Server) => void
  stop: () => Promise<void>
}

export async function startProxyFixture (): Promise<ProxyFixture> {
  const dataDir = await mkdtemp(join(tmpdir(), 'corral-proxy-'))
  const logs: Array<Record<string, any>> = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => { if (logs.length < 20_000) logs.push(JSON.parse(line)) } })
  // Tests that move time set clock.now; otherwise the real clock.
  const clockState: { now: number | undefined } = { now: undefined }
  const clock = (): number => clockState.now ?? Date.now()
  const store = new MemoryStore()
  const stack: Array<() => Promise<void>> = [async () => await rm(dataDir, { recursive: true, force: true })]
  const stop = async (): Promise<void> => { while (stack.length > 0) await (stack.pop() as () => Promise<void>)() }
  try {
    const driver = createSimDriver({ logger, store }, { cpus: 64, memoryMiB: 262_144, diskMiB: 4_000_000, arch: 'x86_64', labels: {}, timings: { createMs: 0, startMs: 0, stopMs: 0, deleteMs: 0, execMs: 0 } })
    await driver.open()
    stack.push(async () => await driver.close())
    const auth = createAuthService({ store, logger, clock }, { dataDir, adminPassword: PASSWORD, tokenTtlSeconds: 3600, lockout: { maxFailures: 5, windowSeconds: 60, lockSeconds: 60 }, passwordHashCost: 1024 })
    await auth.start()
    stack.push(async () => await auth.stop())
    const images = new LocalImages({ driver, store, logger, clock })
    const host = new HostAgent({ driver, store, images, logger, clock }, { hostName: 'proxy-host', execTimeoutSeconds: 60, maxExecTimeoutSeconds: 600 })
    await host.start()
    stack.push(async () => await host.stop())

    const plugged = new Map<string, number>()
    const vms: VmDirectory = {
      get: id => host.get(id),
      forwardPort: async (id, port) => {
        const own = plugged.get(`${id}:${port}`)
        if (own != null) {
          host.get(id)
          return { hostAddress: '127.0.0.1', hostPort: own }
        }
        return await host.forwardPort(id, port)
      },
      addEventListener: host.addEventListener.bind(host),
      removeEventListener: host.removeEventListener.bind(host)
    }
    const proxy = createProxyService({ vms, logger, clock }, {
      clusterDomain: DOMAIN,
      tcpPortRange: { from: 31100, to: 31199 },
      tcpListenHost: '127.0.0.1',
      connectTimeoutMs: 2000,
      signingKey: new Uint8Array(32).fill(7),
      signedUrlMaxSeconds: 3600
    })
    await proxy.start()
    stack.push(async () => await proxy.stop())
    const api = createApiServer({ auth, vms: host, images, proxy, logger, clock }, { addr: '127.0.0.1:0', maxBodyBytes: 65536, version: 'test' })
    await api.start()
    stack.push(async () => await api.stop())

    const tokens = { admin: '', ci: '', viewer: '', operator: '' }
    for (const role of ['ci', 'viewer', 'operator'] as const) await auth.createUser({ username: role, password: PASSWORD, roles: [role] })
    for (const role of ['admin', 'ci', 'viewer', 'operator'] as const) tokens[role] = (await auth.login(role, PASSWORD)).token
    const url = `http://${api.address()}`
    let n = 0
    return {
      url,
      wsUrl: url.replace(/^http/, 'ws'),
      api,
      auth,
      host,
      proxy: proxy as ProxyFixture['proxy'],
      tokens,
      logs,
      clock: clockState,
      createVm: async () => {
        const { done } = await host.create({ image: 'sim-ubuntu-24.04', name: `proxied-${++n}`, owner: 'admin' })
        return await done
      },
      serve: (vm, port, server) => { plugged.set(`${vm}:${port}`, (server.address() as AddressInfo).port) },
      stop
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/** Listens on a free loopback port. */
export async function listen<T extends Server | import('node:net').Server> (server: T): Promise<T> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return server
}

/** Polls until check() holds (bounded). */
export async function eventually (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}
