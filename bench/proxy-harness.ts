/**
 * One corral node's proxy path for the proxy benchmarks, in its own process: mesh node, auth, the
 * API server with the proxy mounted exactly as `corral node` mounts it, and one VM
 * (BENCH_VM) whose guest port is an upstream server the bench starts (BENCH_UPSTREAM=host:port).
 * Role a runs the VM; role b reaches it from another node (BENCH_BOOTSTRAP = a's multiaddr), over
 * a direct TLS tunnel, or over libp2p streams with BENCH_TUNNEL=off. BENCH_FAST_HTTP=off: proxied
 * HTTP on Node's HTTP stack only; BENCH_LOG=info: the access log on stderr, as a node writes it;
 * BENCH_TCP_FROM: first port of its TCP route range (42000).
 * Prints one JSON line when ready: { api, tcp, peerId, multiaddrs, routes }.
 *
 *   BENCH_ROLE=a BENCH_UPSTREAM=127.0.0.1:18080 BENCH_KEY=<cluster key> node bench/proxy-harness.ts
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createApiServer } from '../src/api/index.ts'
import { createAuthService } from '../src/auth/index.ts'
import { createLogger } from '../src/cli/logger.ts'
import { LocalImages } from '../src/catalog/index.ts'
import { createSimDriver } from '../src/drivers/sim/index.ts'
import { createMeshNode, generateClusterKey } from '../src/node/index.ts'
import { createProxyService, grantKeyFromClusterKey, tunnelKeyFromClusterKey, type ProxyVm, type VmDirectory } from '../src/proxy/index.ts'
import { HostAgent } from '../src/scheduler/index.ts'
import { MemoryStore } from '../test/helpers/memory-store.ts'

export const BENCH_VM = 'vm-be0c0000be0c'
const role = process.env.BENCH_ROLE ?? 'a'

// BENCH_ROLE=upstream: the "guest" of the TCP bench, a server that sends BENCH_BYTES to each
// connection as fast as it is read (a bulk download), then ends. Prints { port }.
if (role === 'upstream') {
  const bytes = Number(process.env.BENCH_BYTES ?? 1024 * 1024 * 1024)
  const block = Buffer.alloc(256 * 1024, 0x5a)
  const server = createServer(socket => {
    let sent = 0
    socket.on('error', () => undefined)
    const pump = (): void => {
      while (sent < bytes) {
        const n = Math.min(block.length, bytes - sent)
        sent += n
        if (!socket.write(n === block.length ? block : block.subarray(0, n))) { socket.once('drain', pump); return }
      }
      socket.end()
    }
    pump()
  })
  server.listen(0, '127.0.0.1', () => { process.stdout.write(JSON.stringify({ port: (server.address() as { port: number }).port }) + '\n') })
  process.once('SIGTERM', () => process.exit(0))
  await new Promise(() => undefined)
}
const [upHost, upPort] = (process.env.BENCH_UPSTREAM ?? '127.0.0.1:18080').split(':')
const clusterKey = process.env.BENCH_KEY ?? generateClusterKey()
const ownerPeer = process.env.BENCH_OWNER ?? ''
// Logged as `corral node` logs (JSON lines on stderr); at the default level warn, no access log.
const logger = createLogger(process.env.BENCH_LOG ?? 'warn', 'json', process.stderr)
const clock = Date.now
const dataDir = await mkdtemp(join(tmpdir(), `corral-bench-proxy-${role}-`))
const store = new MemoryStore()

const mesh = await createMeshNode({ logger, store }, {
  dataDir,
  clusterKey,
  listen: ['/ip4/127.0.0.1/tcp/0'],
  bootstrap: process.env.BENCH_BOOTSTRAP != null ? [process.env.BENCH_BOOTSTRAP] : [],
  mdns: { enabled: false, serviceTag: 'corral-bench', intervalMs: 10_000 },
  nodeName: `bench-${role}`,
  gossip: { colocationWeight: 0 },
  allowAddresses: ['/ip4/127.0.0.1'],
  heartbeatMs: 500,
  suspectAfterMs: 5000,
  deadAfterMs: 15_000
})
await mesh.start()

const driver = createSimDriver({ logger, store }, { cpus: 4, memoryMiB: 8192, diskMiB: 100_000, arch: 'x86_64', labels: {}, timings: { createMs: 0, startMs: 0, stopMs: 0, deleteMs: 0, execMs: 0 } })
await driver.open()
const auth = createAuthService({ store, logger, clock }, { dataDir, adminPassword: 'bench-password', tokenTtlSeconds: 3600, lockout: { maxFailures: 5, windowSeconds: 60, lockSeconds: 60 }, passwordHashCost: 1024 })
await auth.start()
const images = new LocalImages({ driver, store, logger, clock })
const host = new HostAgent({ driver, store, images, logger, clock }, { hostName: `bench-${role}`, execTimeoutSeconds: 60, maxExecTimeoutSeconds: 600 })
await host.start()

/** The bench VM runs on node a; its guest port is the upstream server. */
const events = new EventTarget()
const vms: VmDirectory = {
  get: (id: string): ProxyVm => ({ id, name: 'bench', state: 'running', host: 'bench-a' }),
  forwardPort: async () => ({ hostAddress: upHost, hostPort: Number(upPort) }),
  locate: async () => role === 'a' ? { local: true } : { local: false, peerId: ownerPeer, nodeName: 'bench-a' },
  addEventListener: events.addEventListener.bind(events),
  removeEventListener: events.removeEventListener.bind(events)
}
const proxy = createProxyService({ vms, mesh, logger, clock }, {
  clusterDomain: '',
  // Several role-a processes side by side (the HTTP bench's variants) each take their own range.
  tcpPortRange: { from: Number(process.env.BENCH_TCP_FROM ?? 42000), to: Number(process.env.BENCH_TCP_FROM ?? 42000) + 99 },
  tcpListenHost: role === 'a' ? '127.0.0.1' : '::1',
  connectTimeoutMs: 10_000,
  signingKey: grantKeyFromClusterKey(clusterKey),
  signedUrlMaxSeconds: 3600,
  // BENCH_TUNNEL=off: bytes to the VM's node go over libp2p streams only.
  tunnel: process.env.BENCH_TUNNEL === 'off' ? undefined : { host: '127.0.0.1', port: 0, key: tunnelKeyFromClusterKey(clusterKey) },
  // BENCH_FAST_HTTP=off: proxied HTTP through Node's HTTP server and client only (the full path).
  fastHttp: process.env.BENCH_FAST_HTTP !== 'off'
})
await proxy.start()
const api = createApiServer({ auth, vms: host, images, proxy, logger, clock }, { addr: '127.0.0.1:0', maxBodyBytes: 1024 * 1024, version: 'bench' })
await api.start()

if (role === 'a') {
  await proxy.createRoute({ vm: BENCH_VM, port: 80, protocol: 'http', public: true }, 'bench')
  await proxy.createRoute({ vm: BENCH_VM, port: 80, protocol: 'tcp', public: true }, 'bench')
}
// b learns the routes from a's records (by gossip or sync).
for (let i = 0; i < 200 && proxy.listRoutes().length < 2; i++) await new Promise(resolve => setTimeout(resolve, 50))
let tcp: string | undefined
for (let i = 0; i < 200 && tcp == null; i++) {
  tcp = proxy.listRoutes().find(r => r.protocol === 'tcp')?.listening?.address
  if (tcp == null) await new Promise(resolve => setTimeout(resolve, 50))
}
const token = (await auth.login('admin', 'bench-password')).token
process.stdout.write(JSON.stringify({ api: api.address(), tcp, peerId: mesh.self().peerId, multiaddrs: mesh.self().multiaddrs, token }) + '\n')

const shutdown = async (): Promise<void> => {
  await api.stop()
  await proxy.stop()
  await host.stop()
  await auth.stop()
  await driver.close()
  await mesh.stop()
  await rm(dataDir, { recursive: true, force: true })
  process.exit(0)
}
process.once('SIGTERM', () => { void shutdown() })
process.once('SIGINT', () => { void shutdown() })
