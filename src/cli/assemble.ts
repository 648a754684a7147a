import { hostname } from 'node:os'
import { join, resolve } from 'node:path'
import { mkdir } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { Config } from '../config/index.ts'
import { createJsonStore } from '../store/index.ts'
import { createAuthService } from '../auth/index.ts'
import { CatalogPeers, CatalogService, LocalImages, createProviders } from '../catalog/index.ts'
import { asHostState } from '../scheduler/cluster/published-state.ts'
import { HostAgent } from '../scheduler/index.ts'
import { ClusterVms } from '../scheduler/cluster/cluster-vms.ts'
import { StatePublisher } from '../scheduler/cluster/state-publisher.ts'
import { registerAdmission, registerVmRpc } from '../scheduler/cluster/rpc-handlers.ts'
import { SchedulerService } from '../scheduler/cluster/scheduler-service.ts'
import { LEASE_COLLECTION, LeaderElection } from '../scheduler/leader/leader-election.ts'
import { createMeshNode, encodeJoinToken, type MeshNode } from '../node/index.ts'
import { createReplicatedStore } from '../node/replicated-store.ts'
import { memberAppears, resolveClusterIdentity } from './cluster-identity.ts'
import { createApiServer, type ApiServer } from '../api/index.ts'
import { createProxyService, grantKeyFromClusterKey, tunnelKeyFromClusterKey } from '../proxy/index.ts'
import { createDriver } from '../drivers/factory.ts'
import type { Driver } from '../drivers/types.ts'

/** Collections every node of a cluster shares (users, roles, keys and the keys that sign tokens). */
const CLUSTER_COLLECTIONS = ['users', 'roles', 'api-keys', 'jwt-keys']

export interface RunningNode {
  api: ApiServer
  driver: Driver
  mesh: MeshNode
  /** Set on the first start only, when no admin password was configured. */
  initialAdminPassword?: string
  stop: () => Promise<void>
}

/**
 * Builds one node from a validated config: store, driver, auth, images, host agent, API. Each piece
 * gets its dependencies passed in; stop() takes them down in reverse order and is safe twice.
 */
export async function startNode (config: Config, driverName: Driver['name'], logger: Logger, version: string): Promise<RunningNode> {
  const clock = Date.now
  const dataDir = resolve(config.dataDir)
  await mkdir(dataDir, { recursive: true })
  const stack: Array<() => Promise<void>> = []
  const stop = async (): Promise<void> => {
    while (stack.length > 0) await (stack.pop() as () => Promise<void>)().catch((err: Error) => logger.error({ err: err.message }, 'error while stopping'))
  }
  try {
    const store = createJsonStore({ logger: logger.child({ component: 'store' }) }, { dataDir })
    await store.start()
    stack.push(async () => await store.stop())

    const hostName = config.node.name !== '' ? config.node.name : hostname()
    const cluster = await resolveClusterIdentity(config, dataDir)
    const mesh = await createMeshNode({ logger: logger.child({ component: 'mesh' }), store, clock }, {
      dataDir,
      clusterKey: cluster.key,
      listen: config.cluster.listen,
      bootstrap: cluster.bootstrap,
      mdns: { enabled: config.cluster.mdns, serviceTag: `corral-${cluster.fingerprint.slice(0, 8)}`, intervalMs: config.cluster.mdnsIntervalMs },
      nodeName: hostName,
      gossip: { colocationWeight: config.cluster.colocationWeight },
      heartbeatMs: config.cluster.heartbeatMs,
      suspectAfterMs: config.cluster.suspectAfterMs,
      deadAfterMs: config.cluster.deadAfterMs,
      // Renewed twice a second; after a restart an old lease is as good as the last one (expired).
      volatileCollections: [LEASE_COLLECTION]
    })
    await mesh.start()
    stack.push(async () => await mesh.stop())
    let founding = cluster.founding
    if (founding && config.cluster.key !== '' && config.cluster.mdns) {
      const waitMs = 2 * config.cluster.mdnsIntervalMs + 2 * config.cluster.heartbeatMs
      logger.info({ waitMs }, 'looking for this cluster on the LAN (mDNS) before deciding to found it')
      if (await memberAppears(mesh, waitMs)) {
        founding = false
        logger.info('found a member of this cluster by mDNS: joining it, so no admin user is created here')
      }
    }
    const shared = createReplicatedStore(store, mesh.records, CLUSTER_COLLECTIONS)

    const driver = await createDriver(driverName, { logger: logger.child({ component: 'driver' }), store }, config, dataDir)
    await driver.open()
    stack.push(async () => await driver.close())

    const auth = createAuthService({ store: shared, logger, clock }, {
      dataDir,
      adminPassword: config.auth.adminPassword === '' ? undefined : config.auth.adminPassword,
      tokenTtlSeconds: config.auth.tokenTtlSeconds,
      lockout: config.auth.lockout,
      bootstrapAdmin: founding,
      adminUserId: `admin-${cluster.fingerprint}`
    })
    await auth.start()
    stack.push(async () => await auth.stop())

    // The catalog: metadata in cluster-wide records, images cached under the data folder.
    const hostArch = (await driver.capacity()).arch
    const agent: { host?: HostAgent } = {}
    const catalog = new CatalogService({
      logger: logger.child({ component: 'catalog' }), records: mesh.records, clock, hostArch: async () => hostArch,
      inUse: () => new Set((agent.host?.list() ?? []).map(vm => vm.image))
    }, {
      cacheDir: config.catalog.cacheDir !== '' ? resolve(config.catalog.cacheDir) : join(dataDir, 'catalog'),
      cacheMaxBytes: config.catalog.cacheMaxMiB * 1048576,
      providers: await createProviders(config.catalog, config.catalog.concurrency),
      defaultProvider: config.catalog.defaultProvider === '' ? undefined : config.catalog.defaultProvider,
      concurrency: config.catalog.concurrency,
      zstdLevel: config.catalog.zstdLevel
    })
    await catalog.start()
    stack.push(async () => await catalog.stop())

    const images = new LocalImages({ driver, store, logger: logger.child({ component: 'images' }), clock, catalog })
    const host = new HostAgent({ driver, store, images, logger: logger.child({ component: 'host' }), clock }, {
      hostName,
      execTimeoutSeconds: config.vm.execTimeoutSeconds,
      maxExecTimeoutSeconds: config.vm.maxExecTimeoutSeconds
    })
    await host.start()
    stack.push(async () => await host.stop())

    agent.host = host
    registerVmRpc(mesh, host, logger.child({ component: 'rpc' }))
    const publisher = new StatePublisher({ host, images, mesh, logger })
    await publisher.start()
    stack.push(async () => await publisher.stop())
    catalog.addEventListener('changed', () => publisher.changed())
    // Chunks between nodes: a host fetches from peers that hold them (or fetch them once for all).
    const catalogPeers = new CatalogPeers({
      mesh, service: catalog, logger: logger.child({ component: 'catalog-p2p' }), clock,
      hosts: () => mesh.members().filter(m => m.status === 'alive').flatMap(m => {
        const state = asHostState(m.state)
        return state == null ? [] : [{ peerId: m.peerId, name: m.nodeName, labels: state.host.capacity.labels, arch: state.host.capacity.arch }]
      })
    }, { shareChunks: config.catalog.peers })
    await catalogPeers.start()
    stack.push(async () => await catalogPeers.stop())
    mesh.on('record:changed', change => { if (change.collection === 'catalog' || change.collection === 'catalog-versions') publisher.changed() })
    registerAdmission(mesh, host, publisher, logger.child({ component: 'admission' }))
    const election = new LeaderElection({ mesh, logger: logger.child({ component: 'election' }), clock }, { leaseMs: config.scheduler.leaseMs, renewMs: config.scheduler.renewMs })
    await election.start()
    stack.push(async () => await election.stop())
    publisher.followLeader(() => election.leader()?.peerId)
    const scheduler = new SchedulerService({ mesh, election, publisher, logger: logger.child({ component: 'scheduler' }), clock }, config.scheduler.policy)
    scheduler.start()
    stack.push(async () => scheduler.stop())
    const vms = new ClusterVms({ host, images, mesh, logger, election, scheduler, publisher, store, clock }, {
      policy: config.scheduler.policy, resubmitMs: config.scheduler.resubmitMs, queueTimeoutSeconds: config.scheduler.queueTimeoutSeconds
    })
    vms.start()
    stack.push(async () => vms.stop())

    // Any node reaches any VM port: locally through the driver's forward, else over the mesh.
    const proxy = createProxyService({ vms, mesh, logger: logger.child({ component: 'proxy' }), clock }, {
      ...config.proxy,
      signingKey: grantKeyFromClusterKey(cluster.key),
      tunnel: config.proxy.directTunnel ? { host: listenHostOf(config.cluster.listen[0]), port: config.proxy.tunnelPort, key: tunnelKeyFromClusterKey(cluster.key) } : undefined
    })
    await proxy.start()
    stack.push(async () => await proxy.stop())

    const api = createApiServer({
      auth, vms, images, proxy, logger: logger.child({ component: 'api' }), clock,
      catalog: { service: catalog, prefetch: async (ref, options, user) => await catalogPeers.prefetch(ref, options, user), collectHolders: async dryRun => await catalogPeers.collectHolders(dryRun) },
      cluster: {
        self: () => mesh.self(),
        members: () => mesh.members(),
        leader: () => election.leader(),
        metrics: () => ({ ...mesh.metrics(), connectedPeers: mesh.connectedPeers().length }),
        joinToken: () => encodeJoinToken({ clusterKey: cluster.key, bootstrap: mesh.self().multiaddrs })
      }
    }, {
      addr: config.api.addr, maxBodyBytes: config.api.maxBodyBytes, version
    })
    await api.start()
    stack.push(async () => await api.stop())
    mesh.setApiAddress(`http://${api.address()}`)

    return { api, driver, mesh, initialAdminPassword: auth.takeInitialAdminPassword(), stop }
  } catch (err) {
    await stop()
    throw err
  }
}

/** The address part of a mesh listen multiaddr (/ip4/0.0.0.0/tcp/7946 -> 0.0.0.0): where direct proxy tunnels listen too. */
function listenHostOf (multiaddr: string | undefined): string {
  const match = /^\/(ip4|ip6)\/([^/]+)\//.exec(multiaddr ?? '')
  return match?.[2] ?? '127.0.0.1'
}
