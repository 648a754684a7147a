/**
 * The mesh node: one libp2p host (TCP, private network, noise, yamux, identify, ping, gossipsub,
 * optional mDNS) and the corral services on top of it — membership, records, sync and rpc. This
 * file wires them together and runs the one timer; each service lives in its own module.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub, StrictSign, TopicValidatorResult } from '@libp2p/gossipsub'
import type { GossipSub, Message } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { mdns } from '@libp2p/mdns'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import type { Ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import type { Connection, Libp2p, PeerDiscovery, PeerId, PeerInfo, PrivateKey, Stream } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import type { Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import type { Logger } from 'pino'
import type { Duplex } from 'node:stream'
import { BootstrapDialer } from './bootstrap.ts'
import { streamDuplex } from './byte-stream.ts'
import { clusterKeySecret } from './cluster-key.ts'
import {
  DEFAULTS, FEED_SNAPSHOT_METHOD, MEMBERS_METHOD, FEEDS_TOPIC, HEARTBEAT_TOPIC, MAX_FEED_DELTA_BYTES, MAX_GOSSIP_RPC_BYTES, MAX_HEARTBEAT_BYTES,
  MAX_RECORDS_MESSAGE_BYTES, MAX_RPC_FRAME_BYTES, RECORDS_TOPIC, RPC_MUX_PROTOCOL, RPC_PROTOCOL, SYNC_PROTOCOL
} from './constants.ts'
import { Feeds, type Feed, type FeedDelta, type FeedRow, type FeedSnapshot } from './feeds.ts'
import { SafeEmitter } from './emitter.ts'
import { deepFreeze } from './freeze.ts'
import { MeshNotRunningError, NodeStateInvalidError, PeerUnavailableError, RpcProtocolError } from './errors.ts'
import { Membership, heartbeatInterval } from './membership.ts'
import { MeshCounters } from './metrics.ts'
import { ConnectionLiveness, type PingableConnection } from './connection-liveness.ts'
import { loadOrCreatePeerKey } from './peer-key.ts'
import { clusterKeyProtector, MismatchLogLimiter } from './protector.ts'
import { MeshRecordStore } from './record-store.ts'
import type { RecordEntry } from './records.ts'
import { RpcService } from './rpc.ts'
import { syncAsInitiator, syncAsResponder } from './sync.ts'
import type {
  BootstrapRetryOptions, Member, MeshEventName, MeshEvents, MeshMetrics, MeshNode, MeshNodeComponents, MeshNodeInit,
  RecordStore, RequestOptions, RpcHandler, SelfInfo, StreamHandler, StreamProtocolOptions
} from './types.ts'
import './yamux-window.ts'
import { decodeFeedDelta, decodeHeartbeat, decodeRecordsGossip, encodeJson, isFeedSnapshotEnd, isFeedSnapshotFrame, isHeartbeat, jsonSize } from './wire.ts'
import type { FeedDeltaMessage, HeartbeatMessage, RecordsGossipMessage } from './wire.ts'

type MeshServices = {
  identify: unknown
  ping: Ping
  pubsub: GossipSub
  mdns?: PeerDiscovery
}

/** A whole sync exchange, however large, must finish within this. */
const SYNC_TIMEOUT_MS = 60_000
/** With no connection at all, retry the bootstrap list this often. */
const REBOOTSTRAP_MS = 10_000
/** Members that answer a join with an extra heartbeat, on average (all of them in small clusters). */
const JOIN_RESPONDERS = 8
/** Dials started per tick to reach targetPeers: joins spread out instead of storming. */
const TOP_UP_DIALS_PER_TICK = 2
/**
 * Gossipsub mesh degrees, below libp2p's (D 6, 4..12, lazy 6), which suit a public network that
 * must survive hostile peers. Here every peer holds the cluster key, and a node's own messages go
 * to every connected peer first (flood publish), so the mesh only carries them on to nodes that
 * lack a direct connection; each extra degree is one more duplicate of every message that every
 * node receives, decrypts and drops. With D 3 a cluster of N nodes moves ~4N copies of a message
 * instead of ~8N-12N.
 */
const GOSSIP_DEGREES = { D: 3, Dlo: 2, Dhi: 5, Dout: 1, Dscore: 1, Dlazy: 1 } as const
/**
 * Gossipsub's own housekeeping (mesh upkeep, and IHAVE announcements of recent message ids to Dlazy
 * peers outside the mesh) every 2 s rather than 1 s, to one lazy peer rather than 3. IHAVE is the
 * repair path for a message the mesh failed to bring; with flood publish and D 3 on a LAN it is
 * rarely needed, and each announcement is a message every receiver decrypts.
 */
const GOSSIP_HEARTBEAT_MS = 2_000
/** Lost members one heartbeat reports (the schema's limit), and the spread of report times. */
const MAX_LOST_PER_HEARTBEAT = 16
const LOST_REPORT_JITTER_MS = 200
/** A full heartbeat (with the node's state) at least every this many heartbeats. */
const FULL_HEARTBEAT_EVERY = 4
/** Feed changes within this window go out as one delta. */
const FEED_BATCH_MS = 20
/** A busy feed sends at most ten deltas a second (up to 10 members; see broadcastsDeferred). */
const FEED_MIN_GAP_MS = 100
/** The rpc method a member sends its heartbeat straight to one node with (see sendHeartbeatTo). */
const HEARTBEAT_METHOD = 'mesh.heartbeat'
/** A replica trailing an owner's advertised cursor this long fetches the whole feed. */
const FEED_GRACE_MS = 1_500
/** Rows per frame of a feed snapshot. */
const FEED_SNAPSHOT_ROWS = 500
/** Members per mesh.members frame (each up to a heartbeat's size), and frames a caller accepts. */
const MEMBERS_PER_FRAME = 50
const MAX_MEMBER_FRAMES = 200
/** A new node asks a newly connected peer for its members at most this often. */
const MEMBERS_FETCH_EVERY_MS = 10_000
/** How long a node counts as new: it heartbeats in full and asks peers for their members. */
const NEW_NODE_MS = 30_000
/** Leaves room in a heartbeat for everything but the caller's state. */
const MAX_STATE_BYTES = MAX_HEARTBEAT_BYTES - 16 * 1024

interface ResolvedInit extends MeshNodeInit {
  syncIntervalMs: number
  targetPeers: number
  bootstrapRetry: BootstrapRetryOptions
  rpcTimeoutMs: number
  tombstoneTtlMs: number
}

/**
 * Build a mesh node: loads (or creates) the peer identity key and prepares libp2p without
 * opening any socket. Throws ClusterKeyInvalidError for a bad key and RangeError for timings that
 * make no sense; call start() to join.
 */
export async function createMeshNode (components: MeshNodeComponents, init: MeshNodeInit): Promise<MeshNode> {
  const resolved = resolveInit(init)
  const psk = clusterKeySecret(init.clusterKey)
  const log = components.logger.child({ component: 'mesh' })
  const privateKey = await loadOrCreatePeerKey(init.dataDir, log)
  const node = new MeshNodeImpl(components, resolved, log, privateKey)
  await node.build(psk)
  return node
}

function resolveInit (init: MeshNodeInit): ResolvedInit {
  if (!(init.heartbeatMs > 0)) throw new RangeError('heartbeatMs must be positive')
  if (!(init.suspectAfterMs > init.heartbeatMs)) throw new RangeError('suspectAfterMs must exceed heartbeatMs, or every member flaps to suspect')
  if (!(init.deadAfterMs > init.suspectAfterMs)) throw new RangeError('deadAfterMs must exceed suspectAfterMs')
  if (init.nodeName.length === 0 || init.nodeName.length > 128) throw new RangeError('nodeName must be 1 to 128 characters')
  return {
    ...init,
    syncIntervalMs: init.syncIntervalMs ?? DEFAULTS.syncIntervalMs,
    targetPeers: init.targetPeers ?? DEFAULTS.targetPeers,
    bootstrapRetry: init.bootstrapRetry ?? { ...DEFAULTS.bootstrap },
    rpcTimeoutMs: init.rpcTimeoutMs ?? DEFAULTS.rpcTimeoutMs,
    tombstoneTtlMs: init.tombstoneTtlMs ?? DEFAULTS.tombstoneTtlMs
  }
}

class MeshNodeImpl implements MeshNode {
  private readonly init: ResolvedInit
  private readonly components: MeshNodeComponents
  private readonly log: Logger
  private readonly clock: () => number
  private readonly selfId: string
  private readonly privateKey: PrivateKey
  private readonly events: SafeEmitter<MeshEvents>
  private readonly counters = new MeshCounters()
  private readonly membership: Membership
  private readonly recordStore: MeshRecordStore
  private readonly rpc: RpcService
  private readonly bootstrap: BootstrapDialer
  private libp2p!: Libp2p<MeshServices>

  private phase: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new'
  private stopping: Promise<void> | undefined
  private lifecycle: AbortController | undefined
  private timer: NodeJS.Timeout | undefined
  private heartbeatSoon: NodeJS.Timeout | undefined
  private lastExtraHeartbeatAt = 0
  /** Members this node lost itself (connection gone, ping failed), for the next heartbeat to report. */
  private readonly lostToReport = new Set<string>()
  private reportSoon: NodeJS.Timeout | undefined
  private lastHeartbeatAt = 0
  private lastMembersFetch = -Infinity
  /** The version the last full heartbeat carried, and light ones sent since. */
  private lastFullVersion = -1
  private lightSinceFull = 0
  private startedAt = 0

  // This node's own NodeState.
  private localState: unknown = {}
  private localStateJson = '{}'
  private apiAddress: string | undefined
  private version = 0
  private announcedAddrs: string[] = []
  /** libp2p rebuilds its address list on every call (~0.2 ms); hot paths ask for it per request. */
  private addrsCache: string[] | undefined

  // Housekeeping.
  private readonly pinging = new Set<string>()
  private liveness?: ConnectionLiveness
  private readonly onConnectionOpen = (evt: CustomEvent<unknown>): void => { this.liveness?.check(evt.detail as PingableConnection) }
  private readonly syncing = new Set<string>()
  /** Peers to sync with once more when the sync under way ends (it began before what it must carry). */
  private readonly resyncAfter = new Set<string>()
  private readonly lastRedial = new Map<string, number>()
  private lastPeriodicSync = 0
  private lastBootstrap = 0
  private lastPurge = 0
  /** Validated gossip payloads, handed from the topic validator to the message listener. */
  private readonly decoded = new WeakMap<Message, HeartbeatMessage | RecordsGossipMessage | FeedDeltaMessage>()
  private readonly feeds: Feeds
  private readonly mismatchLog: MismatchLogLimiter
  /** Streams at once per connection for each raw protocol served (handleStream). */
  private readonly streamLimits = new Map<string, number>()

  readonly records: RecordStore

  constructor (components: MeshNodeComponents, init: ResolvedInit, log: Logger, privateKey: PrivateKey) {
    this.components = components
    this.init = init
    this.log = log
    this.clock = components.clock ?? Date.now
    this.privateKey = privateKey
    this.selfId = peerIdFromPrivateKey(privateKey).toString()
    this.events = new SafeEmitter<MeshEvents>(log)
    this.apiAddress = init.apiAddress
    this.version = this.clock()
    this.mismatchLog = new MismatchLogLimiter(60_000, this.clock)
    this.membership = new Membership({
      selfId: this.selfId,
      events: this.events,
      clock: this.clock,
      suspectAfterMs: init.suspectAfterMs,
      deadAfterMs: init.deadAfterMs,
      heartbeatMs: init.heartbeatMs
    })
    this.recordStore = new MeshRecordStore({
      nodeId: this.selfId,
      store: components.store,
      log,
      events: this.events,
      counters: this.counters,
      clock: this.clock,
      maxClockDriftMs: DEFAULTS.maxClockDriftMs,
      publish: async entries => { await this.publishRecords(entries) },
      volatileCollections: init.volatileCollections
    })
    this.records = this.guardedRecords()
    // What ops look for first when a host goes missing.
    this.events.on('member:join', m => { log.info({ peer: m.peerId, nodeName: m.nodeName }, 'member joined') })
    this.events.on('member:dead', m => { log.warn({ peer: m.peerId, nodeName: m.nodeName }, 'member is dead (unheard of, unreachable)') })
    this.events.on('member:alive', m => { log.info({ peer: m.peerId, nodeName: m.nodeName }, 'member is back') })
    // A newcomer should learn the others (and get direct links) now, not a heartbeat later.
    this.events.on('member:join', () => {
      // Every member answering every join costs N² deliveries per join in a large cluster; about
      // JOIN_RESPONDERS answering lets the newcomer learn members at once, the rest within a heartbeat.
      // A new node answers nobody: the members it meets now are ones it learned of (mesh.members),
      // and an early extra heartbeat would hold back, by the spacing, the one its first peers need.
      const alive = Math.max(1, this.membership.ids('alive').length)
      if (!this.isNew() && Math.random() < JOIN_RESPONDERS / alive) this.heartbeatNow()
      if (this.phase === 'running') this.maintainConnections()
    })
    // A member back from suspect or dead (a healed partition) missed the gossip of that time, and we
    // missed its: sync now, not at the next periodic sync up to syncIntervalMs later.
    this.events.on('member:alive', member => {
      this.scheduleSync(member.peerId, 'revived', true)
      this.feeds.refresh(member.peerId)
    })
    this.feeds = new Feeds({
      selfId: this.selfId,
      clock: this.clock,
      publish: delta => { this.publishFeedDelta(delta) },
      fetchSnapshot: async (owner, feed) => await this.fetchFeedSnapshot(owner, feed),
      emit: change => { this.events.emit('feed:change', change) },
      count: what => { this.counters.inc(what === 'delta' ? 'feedDeltasApplied' : 'feedSnapshotsFetched') },
      onError: (err, owner, feed) => { this.log.debug({ err, peer: owner, feed }, 'could not fetch a feed; the next heartbeat retries') }
    }, { batchMs: FEED_BATCH_MS, minGapMs: FEED_MIN_GAP_MS, deferred: () => this.broadcastsDeferred(), maxDeltaBytes: MAX_FEED_DELTA_BYTES - 4096, graceMs: FEED_GRACE_MS })
    this.rpc = new RpcService({
      selfId: this.selfId,
      log,
      counters: this.counters,
      defaultTimeoutMs: init.rpcTimeoutMs,
      describe: id => this.describe(id),
      reachability: id => this.reachability(id),
      // Streaming calls only (unary ones share a channel). negotiateFully: false asks for the
      // protocol name to go out with the request, a round trip less; the multistream-select of
      // this libp2p version negotiates in full anyway, so it costs nothing and may help later.
      dialProtocol: async (id, signal) => await this.libp2p.dialProtocol(peerIdFromString(id), RPC_PROTOCOL, { signal, negotiateFully: false }),
      // Once per channel. A peer without channels (an older corral) fails the negotiation and is called as above.
      dialChannel: async (id, signal) => await this.libp2p.dialProtocol(peerIdFromString(id), RPC_MUX_PROTOCOL, { signal }),
      lifecycle: () => this.lifecycle?.signal
    })
    this.bootstrap = new BootstrapDialer({
      addrs: init.bootstrap,
      selfId: this.selfId,
      retry: init.bootstrapRetry,
      log,
      dial: async (addr, signal) => {
        await this.libp2p.dial(multiaddr(addr), { signal: AbortSignal.any([signal, AbortSignal.timeout(DEFAULTS.dialTimeoutMs)]) })
      }
    })
  }

  async build (psk: Uint8Array): Promise<void> {
    const services: Record<string, unknown> = {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        globalSignaturePolicy: StrictSign,
        allowPublishToZeroTopicPeers: true,
        fallbackToFloodsub: false,
        emitSelf: false,
        allowedTopics: [HEARTBEAT_TOPIC, RECORDS_TOPIC, FEEDS_TOPIC],
        maxInboundDataLength: MAX_GOSSIP_RPC_BYTES,
        // IDONTWANT (gossipsub 1.2) saves bandwidth only on large messages; on heartbeat-sized ones
        // it is one more control message to every mesh peer for each message received.
        idontwantMinDataSize: 16 * 1024,
        // Runs on every inbound message before gossipsub's own checks: the one place to count
        // unsigned messages, which StrictSign drops before any topic validator sees them. The id
        // (sender + sequence number) is what gossipsub derives for signed messages anyway.
        fastMsgIdFn: msg => {
          if (msg.signature == null || msg.from == null || msg.seqno == null) {
            this.counters.drop('gossip', 'unsigned')
            return 'unsigned'
          }
          return `${Buffer.from(msg.from).toString('base64')}:${Buffer.from(msg.seqno).toString('hex')}`
        },
        scoreParams: { IPColocationFactorWeight: this.init.gossip.colocationWeight },
        heartbeatInterval: GOSSIP_HEARTBEAT_MS,
        ...GOSSIP_DEGREES
      })
    }
    if (this.init.mdns.enabled) {
      services.mdns = mdns({ serviceTag: this.init.mdns.serviceTag, interval: this.init.mdns.intervalMs })
    }
    this.libp2p = await createLibp2p<MeshServices>({
      start: false,
      privateKey: this.privateKey,
      addresses: { listen: this.init.listen, ...(this.init.announce !== undefined ? { announce: this.init.announce } : {}) },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      // Its keep-alive pings but never acts on a missing answer; ConnectionLiveness pings and does.
      streamMuxers: [yamux({ enableKeepAlive: false })],
      connectionProtector: clusterKeyProtector({
        psk,
        timeoutMs: DEFAULTS.privateNetworkTimeoutMs,
        onMismatch: (remote, direction) => {
          this.counters.inc('privateNetworkRejected')
          if (this.mismatchLog.shouldLog(remote)) {
            this.log.warn({ remote, direction }, `peer ${remote} failed the private-network handshake: the cluster keys differ. ` +
              'Every node needs the same cluster key (see `corral cluster init` and --join).')
          }
        }
      }),
      // libp2p's connection monitor opens a new ping stream per connection per round; yamux's ping
      // frame does the same job for a fraction of the cost (ConnectionLiveness, started below).
      connectionMonitor: { enabled: false },
      connectionManager: {
        dialTimeout: DEFAULTS.dialTimeoutMs,
        ...(this.init.allowAddresses !== undefined ? { allow: this.init.allowAddresses } : {})
      },
      services: services as never
    })
  }

  async start (): Promise<void> {
    if (this.phase === 'running' || this.phase === 'starting') return
    if (this.phase !== 'new') throw new MeshNotRunningError('This mesh node was stopped and cannot be started again; create a new one.')
    this.phase = 'starting'
    this.recordStore.load()
    this.lifecycle = new AbortController()
    const node = this.libp2p
    await node.handle(SYNC_PROTOCOL, (stream, connection) => this.onSyncStream(stream, connection), { maxInboundStreams: 2, maxOutboundStreams: 2 })
    await node.handle(RPC_PROTOCOL, (stream, connection) => this.rpc.onStream(stream, connection), { maxInboundStreams: 256, maxOutboundStreams: 256 })
    // One channel per peer and direction; a few more let a replacement open while a dying one closes.
    await node.handle(RPC_MUX_PROTOCOL, (stream, connection) => { this.rpc.onChannel(stream, connection) }, { maxInboundStreams: 4, maxOutboundStreams: 4 })
    const pubsub = node.services.pubsub
    pubsub.topicValidators.set(HEARTBEAT_TOPIC, (_peer, msg) => this.validateGossip(HEARTBEAT_TOPIC, msg))
    pubsub.topicValidators.set(RECORDS_TOPIC, (_peer, msg) => this.validateGossip(RECORDS_TOPIC, msg))
    pubsub.topicValidators.set(FEEDS_TOPIC, (_peer, msg) => this.validateGossip(FEEDS_TOPIC, msg))
    this.rpc.handle(FEED_SNAPSHOT_METHOD, async ({ feed }: { feed: string }, ctx) => {
      // In frames: a host with thousands of VMs would not fit one rpc frame.
      const snapshot = this.feeds.snapshot(String(feed))
      if (snapshot == null) throw new RangeError(`this node has no feed named "${String(feed)}"`)
      const { epoch, version, rows } = snapshot
      for (let i = 0; i < rows.length; i += FEED_SNAPSHOT_ROWS) await ctx.send({ rows: rows.slice(i, i + FEED_SNAPSHOT_ROWS) })
      return { epoch, version }
    })
    this.rpc.handle(HEARTBEAT_METHOD, (body: unknown, ctx) => {
      if (!this.acceptHeartbeat(ctx.peerId, body)) throw new RpcProtocolError(`a malformed heartbeat, or not the sender's own (${this.describe(ctx.peerId)})`)
      return {}
    })
    this.rpc.handle(MEMBERS_METHOD, async (_body: unknown, ctx) => {
      const described: HeartbeatMessage[] = [this.heartbeat(), ...this.membership.list().filter(m => m.status === 'alive').map(m => {
        const hb: HeartbeatMessage = { peerId: m.peerId, nodeName: m.nodeName, addrs: m.addrs, version: m.version, state: m.state }
        if (m.apiAddress !== undefined) hb.apiAddress = m.apiAddress
        return hb
      })]
      // Frames bounded by count and bytes: a state may be up to a heartbeat's size.
      let frame: HeartbeatMessage[] = []
      let bytes = 0
      for (const hb of described) {
        const size = jsonSize(hb) ?? 0
        if (frame.length > 0 && (frame.length >= MEMBERS_PER_FRAME || bytes + size > MAX_RPC_FRAME_BYTES / 2)) {
          await ctx.send(frame)
          frame = []
          bytes = 0
        }
        frame.push(hb)
        bytes += size
      }
      if (frame.length > 0) await ctx.send(frame)
      return { members: described.length }
    })
    pubsub.addEventListener('message', this.onGossip)
    pubsub.addEventListener('subscription-change', this.onSubscriptionChange)
    node.addEventListener('peer:connect', this.onPeerConnect)
    node.addEventListener('peer:disconnect', this.onPeerDisconnect)
    node.addEventListener('self:peer:update', this.onSelfUpdate)
    node.services.mdns?.addEventListener('peer', this.onMdnsPeer)

    await node.start()
    pubsub.subscribe(HEARTBEAT_TOPIC)
    pubsub.subscribe(RECORDS_TOPIC)
    pubsub.subscribe(FEEDS_TOPIC)
    this.startedAt = this.clock()
    this.lastPeriodicSync = this.startedAt
    this.lastPurge = this.startedAt
    this.phase = 'running'
    this.timer = setInterval(() => { this.tick() }, this.init.heartbeatMs)
    // Heartbeat silence finds a dead member first in a small cluster; in a large one (heartbeats
    // spaced out) this is what notices a half-open connection, then reportLost.
    this.liveness = new ConnectionLiveness({
      connections: () => this.libp2p.getConnections() as unknown as PingableConnection[],
      onAnswer: () => { this.counters.inc('connectionPingsAnswered') },
      onDead: (connection, err) => {
        this.counters.inc('halfOpenConnectionsClosed')
        this.log.warn({ remote: connection.remotePeer?.toString(), err: err.message }, 'closing a connection that stopped answering pings')
      }
    }, this.init.connectionPing ?? { intervalMs: DEFAULTS.connectionPingMs, timeoutMs: DEFAULTS.connectionPingTimeoutMs })
    this.liveness.start()
    node.addEventListener('connection:open', this.onConnectionOpen)
    this.lastBootstrap = this.clock()
    void this.bootstrap.run()
    this.publishHeartbeat()
    this.log.info({ peerId: this.selfId, nodeName: this.init.nodeName, addrs: this.selfAddrs() }, 'mesh node started')
  }

  async stop (): Promise<void> {
    if (this.phase === 'new') {
      this.phase = 'stopped'
      return
    }
    this.stopping ??= this.doStop()
    await this.stopping
  }

  private async doStop (): Promise<void> {
    this.phase = 'stopping'
    this.lifecycle?.abort(new MeshNotRunningError('the mesh node is stopping'))
    clearInterval(this.timer)
    this.liveness?.stop()
    this.libp2p.removeEventListener('connection:open', this.onConnectionOpen)
    clearTimeout(this.heartbeatSoon)
    clearTimeout(this.reportSoon)
    this.feeds.stop()
    this.bootstrap.stop()
    const node = this.libp2p
    node.removeEventListener('peer:connect', this.onPeerConnect)
    node.removeEventListener('peer:disconnect', this.onPeerDisconnect)
    node.removeEventListener('self:peer:update', this.onSelfUpdate)
    node.services.pubsub.removeEventListener('message', this.onGossip)
    node.services.pubsub.removeEventListener('subscription-change', this.onSubscriptionChange)
    node.services.mdns?.removeEventListener('peer', this.onMdnsPeer)
    try {
      await node.stop()
    } catch (err) {
      this.log.warn({ err }, 'libp2p did not stop cleanly')
    }
    await this.recordStore.flush().catch((err: unknown) => { this.log.warn({ err }, 'could not write the last volatile records') })
    this.phase = 'stopped'
    this.log.info({ peerId: this.selfId }, 'mesh node stopped')
  }

  // ---- identity and membership -------------------------------------------------------------

  self (): SelfInfo {
    return { peerId: this.selfId, nodeName: this.init.nodeName, multiaddrs: this.selfAddrs() }
  }

  members (): Member[] {
    return [this.selfMember(), ...this.membership.list()]
  }

  member (peerId: string): Member | undefined {
    return peerId === this.selfId ? this.selfMember() : this.membership.get(peerId)
  }

  setLocalState (state: unknown): void {
    // Serialised once: every admission publishes the host's state.
    let json: string | undefined
    try {
      json = JSON.stringify(state)
    } catch {}
    if (json === undefined) throw new NodeStateInvalidError('The node state has no JSON form; use plain objects, arrays, strings, numbers, booleans or null.')
    // The same state again (a host publishing after an admission already did) is no news.
    if (json === this.localStateJson) return
    const size = Buffer.byteLength(json)
    if (size > MAX_STATE_BYTES) {
      throw new NodeStateInvalidError(`The node state is ${size} bytes of JSON, over the ${MAX_STATE_BYTES}-byte heartbeat budget; ` +
        'move bulky data into records and keep a summary in the state.', { size })
    }
    this.localStateJson = json
    this.localState = deepFreeze(JSON.parse(json))
    this.bumpVersion()
  }

  setApiAddress (address: string | undefined): void {
    if (address !== undefined && address.length > 512) throw new NodeStateInvalidError('The API address is longer than 512 characters.')
    this.apiAddress = address
    this.bumpVersion()
  }

  currentHeartbeat (): unknown {
    return this.heartbeat()
  }

  acceptHeartbeat (from: string, heartbeat: unknown): boolean {
    if (this.phase !== 'running' || from === this.selfId) return false
    const size = jsonSize(heartbeat)
    if (size === undefined || size > MAX_HEARTBEAT_BYTES || !isHeartbeat(heartbeat)) {
      this.counters.drop('rpc', 'invalid')
      return false
    }
    const hb = heartbeat as HeartbeatMessage
    if (hb.peerId !== from) {
      this.counters.drop('rpc', 'spoofed')
      return false
    }
    // Reported losses travel only by gossip, where every node hears them.
    this.onHeartbeat({ ...hb, lost: undefined })
    return true
  }

  async sendHeartbeatTo (peerId: string): Promise<void> {
    await this.rpc.request(peerId, HEARTBEAT_METHOD, this.heartbeat(), { timeoutMs: 10_000 })
  }

  async connect (addr: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.requireRunning()
    const signals = [AbortSignal.timeout(DEFAULTS.dialTimeoutMs), this.lifecycle!.signal]
    if (options.signal !== undefined) signals.push(options.signal)
    try {
      await this.libp2p.dial(multiaddr(addr), { signal: AbortSignal.any(signals) })
    } catch (err) {
      const mismatch = findError(err, 'ClusterKeyMismatchError')
      if (mismatch !== undefined) throw mismatch
      throw new PeerUnavailableError(`could not connect to ${addr}: ${(err as Error)?.message ?? String(err)}`, { addr }, { cause: err })
    }
  }

  on<E extends MeshEventName> (event: E, listener: (detail: MeshEvents[E]) => void): void {
    this.events.on(event, listener)
  }

  off<E extends MeshEventName> (event: E, listener: (detail: MeshEvents[E]) => void): void {
    this.events.off(event, listener)
  }

  metrics (): MeshMetrics {
    return this.counters.snapshot()
  }

  connectedPeers (): string[] {
    return this.phase === 'running' ? this.connectedMembers() : []
  }

  // ---- rpc ------------------------------------------------------------------------------------

  handleRpc<Req = unknown, Res = unknown> (method: string, handler: RpcHandler<Req, Res>): void {
    this.rpc.handle(method, handler)
  }

  unhandleRpc (method: string): void {
    this.rpc.unhandle(method)
  }

  async request<Res = unknown> (peerId: string, method: string, body: unknown, options?: RequestOptions): Promise<Res> {
    return await this.rpc.request<Res>(peerId, method, body, options)
  }

  requestStream<Frame = unknown, Res = unknown> (peerId: string, method: string, body: unknown, options?: RequestOptions): AsyncGenerator<Frame, Res, undefined> {
    return this.rpc.requestStream<Frame, Res>(peerId, method, body, options)
  }

  // ---- raw byte streams ----------------------------------------------------------------------

  async handleStream (protocol: string, handler: StreamHandler, options: StreamProtocolOptions = {}): Promise<void> {
    const limit = options.maxStreams ?? 1024
    this.streamLimits.set(protocol, limit)
    await this.libp2p.handle(protocol, (stream, connection) => {
      handler(streamDuplex(stream), connection.remotePeer.toString())
    }, { maxInboundStreams: limit, maxOutboundStreams: limit, force: true })
  }

  async unhandleStream (protocol: string): Promise<void> {
    this.streamLimits.delete(protocol)
    await this.libp2p.unhandle(protocol)
  }

  async openStream (peerId: string, protocol: string, options: { signal?: AbortSignal } = {}): Promise<Duplex> {
    this.requireRunning()
    const reach = this.reachability(peerId)
    if (reach !== 'reachable') {
      throw new PeerUnavailableError(reach === 'dead'
        ? `${this.describe(peerId)} is unavailable: the mesh considers it dead (no heartbeat for a while).`
        : `no node with peer id ${peerId} is known to this node; check the id against the member list.`, { peerId })
    }
    const signals = [AbortSignal.timeout(DEFAULTS.dialTimeoutMs), this.lifecycle!.signal]
    if (options.signal !== undefined) signals.push(options.signal)
    try {
      const stream = await this.libp2p.dialProtocol(peerIdFromString(peerId), protocol, {
        signal: AbortSignal.any(signals),
        maxOutboundStreams: this.streamLimits.get(protocol) ?? 1024
      })
      return streamDuplex(stream)
    } catch (err) {
      if (options.signal?.aborted === true) throw err
      throw new PeerUnavailableError(`${this.describe(peerId)} is unavailable for ${protocol}: ${(err as Error)?.message ?? String(err)}`,
        { peerId, protocol }, { cause: err })
    }
  }

  private describe (peerId: string): string {
    const name = this.membership.get(peerId)?.nodeName ?? (peerId === this.selfId ? this.init.nodeName : undefined)
    return name === undefined ? `node ${peerId}` : `node ${name} (${peerId})`
  }

  private reachability (peerId: string): 'reachable' | 'dead' | 'unknown' {
    const member = this.membership.get(peerId)
    if (member?.status === 'dead') return 'dead'
    if (member !== undefined) return 'reachable'
    try {
      return this.libp2p.getConnections(peerIdFromString(peerId)).length > 0 ? 'reachable' : 'unknown'
    } catch {
      return 'unknown'
    }
  }

  // ---- records and sync ---------------------------------------------------------------------

  async syncWith (peerId: string, options: { signal?: AbortSignal } = {}): Promise<{ sent: number, received: number }> {
    this.requireRunning()
    const signals = [AbortSignal.timeout(SYNC_TIMEOUT_MS), this.lifecycle!.signal]
    if (options.signal !== undefined) signals.push(options.signal)
    const signal = AbortSignal.any(signals)
    let stream: Stream
    try {
      stream = await this.libp2p.dialProtocol(peerIdFromString(peerId), SYNC_PROTOCOL, { signal })
    } catch (err) {
      this.counters.inc('syncFailures')
      throw new PeerUnavailableError(`${this.describe(peerId)} is unavailable for a record sync: ${(err as Error)?.message ?? String(err)}`,
        { peerId }, { cause: err })
    }
    this.counters.inc('syncRuns')
    try {
      const result = await syncAsInitiator(stream, { records: this.recordStore, counters: this.counters }, signal)
      this.log.debug({ peer: peerId, ...result }, 'record sync done')
      return result
    } catch (err) {
      this.counters.inc('syncFailures')
      stream.abort(err as Error)
      throw err
    }
  }

  private async onSyncStream (stream: Stream, connection: Connection): Promise<void> {
    const lifecycle = this.lifecycle?.signal
    const signal = lifecycle === undefined ? AbortSignal.timeout(SYNC_TIMEOUT_MS) : AbortSignal.any([AbortSignal.timeout(SYNC_TIMEOUT_MS), lifecycle])
    this.counters.inc('syncRuns')
    try {
      const result = await syncAsResponder(stream, { records: this.recordStore, counters: this.counters }, signal)
      this.log.debug({ peer: connection.remotePeer.toString(), ...result }, 'record sync served')
    } catch (err) {
      this.counters.inc('syncFailures')
      this.log.debug({ err, peer: connection.remotePeer.toString() }, 'record sync from a peer failed')
      stream.abort(err as Error)
    }
  }

  /**
   * Background sync with one peer; at most one at a time per peer. With `rerun`, a sync already
   * under way is followed by one more, since it may have started before the records it must carry.
   */
  private scheduleSync (peerId: string, reason: string, rerun = false): void {
    if (this.phase !== 'running') return
    if (this.syncing.has(peerId)) {
      if (rerun) this.resyncAfter.add(peerId)
      return
    }
    this.syncing.add(peerId)
    this.syncWith(peerId)
      .catch((err: unknown) => { this.log.debug({ err, peer: peerId, reason }, 'record sync failed; the next one will retry') })
      .finally(() => {
        this.syncing.delete(peerId)
        if (this.resyncAfter.delete(peerId)) this.scheduleSync(peerId, reason)
      })
  }

  feed<Row extends FeedRow> (name: string): Feed<Row> {
    return this.feeds.feed<Row>(name)
  }

  private publishFeedDelta (delta: FeedDelta): void {
    if (this.phase !== 'running') return
    this.libp2p.services.pubsub.publish(FEEDS_TOPIC, encodeJson(delta)).catch((err: unknown) => {
      // No peer yet, or none subscribed: they fetch the whole feed when they see our cursor.
      this.log.debug({ err, feed: delta.feed }, 'feed delta not published')
    })
  }

  private async fetchFeedSnapshot (owner: string, feed: string): Promise<FeedSnapshot> {
    const rows: FeedRow[] = []
    const frames = this.rpc.requestStream<unknown, unknown>(owner, FEED_SNAPSHOT_METHOD, { feed })
    for (;;) {
      const next = await frames.next()
      if (next.done === true) {
        if (!isFeedSnapshotEnd(next.value)) throw new RpcProtocolError(`${this.describe(owner)} answered a feed snapshot with a malformed end`)
        const end = next.value as { epoch: number, version: number }
        return { epoch: end.epoch, version: end.version, rows }
      }
      if (!isFeedSnapshotFrame(next.value)) throw new RpcProtocolError(`${this.describe(owner)} sent a malformed feed snapshot frame`)
      rows.push(...(next.value as { rows: FeedRow[] }).rows)
    }
  }

  private async publishRecords (entries: RecordEntry[]): Promise<void> {
    if (this.phase !== 'running') return
    await this.libp2p.services.pubsub.publish(RECORDS_TOPIC, encodeJson({ entries }))
  }

  private guardedRecords (): RecordStore {
    const store = this.recordStore
    const writable = (): void => { this.requireRunning() }
    return {
      put: async (collection, id, value) => { writable(); await store.put(collection, id, value) },
      delete: async (collection, id) => { writable(); return await store.delete(collection, id) },
      get: (collection, id) => store.get(collection, id),
      list: collection => store.list(collection)
    }
  }

  // ---- gossip -------------------------------------------------------------------------------

  private validateGossip (topic: string, msg: Message): TopicValidatorResult {
    if (msg.type !== 'signed') {
      this.counters.drop('gossip', 'unsigned')
      return TopicValidatorResult.Reject
    }
    const from = msg.from.toString()
    if (topic === HEARTBEAT_TOPIC) {
      const decoded = decodeHeartbeat(msg.data, MAX_HEARTBEAT_BYTES)
      if (!decoded.ok) return this.rejectGossip(decoded.reason)
      if (decoded.value.peerId !== from) return this.rejectGossip('spoofed')
      this.decoded.set(msg, decoded.value)
    } else if (topic === FEEDS_TOPIC) {
      const decoded = decodeFeedDelta(msg.data, MAX_FEED_DELTA_BYTES)
      if (!decoded.ok) return this.rejectGossip(decoded.reason)
      // A feed's rows travel only from their owner; a range must move forward.
      if (decoded.value.owner !== from) return this.rejectGossip('spoofed')
      if (decoded.value.to <= decoded.value.from) return this.rejectGossip('invalid')
      this.decoded.set(msg, decoded.value)
    } else {
      const decoded = decodeRecordsGossip(msg.data, MAX_RECORDS_MESSAGE_BYTES)
      if (!decoded.ok) return this.rejectGossip(decoded.reason)
      // Records travel by gossip only from their writer; anything else is a forgery.
      if (decoded.value.entries.some(e => e.hlc.node !== from)) return this.rejectGossip('spoofed')
      this.decoded.set(msg, decoded.value)
    }
    this.counters.accept('gossip')
    return TopicValidatorResult.Accept
  }

  private rejectGossip (reason: Parameters<MeshCounters['drop']>[1]): TopicValidatorResult {
    this.counters.drop('gossip', reason)
    return TopicValidatorResult.Reject
  }

  private readonly onGossip = (evt: CustomEvent<Message>): void => {
    const msg = evt.detail
    const value = this.decoded.get(msg)
    if (value === undefined) return
    this.decoded.delete(msg)
    if (msg.topic === HEARTBEAT_TOPIC) {
      this.onHeartbeat(value as HeartbeatMessage)
    } else if (msg.topic === FEEDS_TOPIC) {
      this.feeds.onDelta(value as FeedDelta)
    } else if (msg.topic === RECORDS_TOPIC) {
      const { entries } = value as RecordsGossipMessage
      this.recordStore.applyRemote(entries as RecordEntry[], 'gossip').catch((err: unknown) => {
        this.log.warn({ err }, 'could not apply gossiped records; full sync will retry')
      })
    }
  }

  /** A member's heartbeat, gossiped or sent straight here. */
  private onHeartbeat (hb: HeartbeatMessage): void {
    this.counters.inc('heartbeatsReceived')
    const outcome = this.membership.onHeartbeat(hb)
    if (outcome.addrsChanged) this.learnAddrs(hb.peerId, hb.addrs)
    this.feeds.onCursors(hb.peerId, hb.feeds as Record<string, [number, number]> | undefined)
    if (hb.lost !== undefined) this.onLostReport(hb.lost)
  }

  private readonly onSubscriptionChange = (evt: CustomEvent<{ peerId: PeerId, subscriptions: Array<{ topic: string, subscribe: boolean }> }>): void => {
    // A peer that just subscribed gets our heartbeat now rather than up to heartbeatMs later, unless
    // we already hear it as an alive member: then it hears us too, and a new link needs no broadcast.
    // A new node knows members by hearsay (mesh.members) before any of them has heard of it.
    const known = !this.isNew() && this.membership.get(evt.detail.peerId.toString())?.status === 'alive'
    if (!known && evt.detail.subscriptions.some(s => s.topic === HEARTBEAT_TOPIC && s.subscribe)) this.heartbeatNow()
    // Records we wrote before we knew this peer listened were gossiped past it (a joining node's
    // first writes, such as its token-signing key): a sync now carries them.
    if (evt.detail.subscriptions.some(s => s.topic === RECORDS_TOPIC && s.subscribe)) this.scheduleSync(evt.detail.peerId.toString(), 'subscribed', true)
  }

  /**
   * An extra heartbeat soon (state changed, a peer subscribed, a member joined). Coalesced and
   * spaced at least a quarter heartbeat apart, so a burst of joins costs one message, not N.
   */
  private heartbeatNow (): void {
    if (this.heartbeatSoon !== undefined || this.phase !== 'running') return
    const gap = Math.min(250, this.init.heartbeatMs / 4)
    const delay = Math.max(0, this.lastExtraHeartbeatAt + gap - this.clock())
    this.heartbeatSoon = setTimeout(() => {
      this.heartbeatSoon = undefined
      this.lastExtraHeartbeatAt = this.clock()
      // For a newcomer or a change: with the state.
      this.publishHeartbeat(true)
    }, delay)
  }

  /**
   * Beyond 10 members a changed state and feed changes wait for the node's next heartbeat instead
   * of going out at once. Each broadcast costs every node ~2.5 ms of CPU (several copies received,
   * decrypted, forwarded), so with 50 members one costs the cluster ~125 ms; a host placing VMs
   * changes many times a second, and hosts touched one after another by a burst of placements
   * would each add broadcasts. Deferred, a node broadcasts about twice per heartbeat (every 25 s
   * with 50 members) however busy it is. Whoever needs a change sooner gets it directly: the
   * scheduler leader from its admissions' answers and sendHeartbeatTo, a gateway from the leader.
   */
  private broadcastsDeferred (): boolean {
    return this.heartbeatEvery() > this.init.heartbeatMs
  }

  /** This node's heartbeat interval now: longer in a large cluster (see heartbeatInterval). */
  private heartbeatEvery (): number {
    const members = 1 + this.membership.ids().length - this.membership.ids('dead').length
    return heartbeatInterval(members, this.init.heartbeatMs)
  }

  /**
   * A member this node was connected to is gone (the connection closed, a ping failed): tell the
   * others, who may not be connected to it and in a large cluster would otherwise wait for its
   * silence (minutes). Sent a little later, at random, so that of the several members that lose
   * it at once most hear another's report first and stay quiet.
   */
  private reportLost (peerId: string): void {
    if (this.phase !== 'running') return
    this.lostToReport.add(peerId)
    this.scheduleLostReport()
  }

  private scheduleLostReport (): void {
    this.reportSoon ??= setTimeout(() => {
      this.reportSoon = undefined
      if (this.lostToReport.size > 0) this.heartbeatNow()
    }, Math.random() * LOST_REPORT_JITTER_MS)
  }

  /** Another member reports losing these: check them ourselves (a ping) rather than take its word. */
  private onLostReport (lost: string[]): void {
    for (const id of lost) {
      // Reported by someone else first: ours would add nothing.
      this.lostToReport.delete(id)
      // About us: we are here; say so to everyone who is now pinging us.
      if (id === this.selfId) this.heartbeatNow()
      else if (this.membership.get(id)?.status === 'alive') this.pingPeer(id, 'check')
    }
  }

  /** Within its first NEW_NODE_MS: the others do not know it yet (see publishHeartbeat, learnMembersFrom). */
  private isNew (): boolean {
    return this.clock() - this.startedAt < NEW_NODE_MS
  }

  private publishHeartbeat (full = false): void {
    if (this.phase !== 'running') return
    this.lastHeartbeatAt = this.clock()
    // Read afresh each heartbeat, whatever libp2p signalled: the announced list is never stale for long.
    this.addrsCache = undefined
    const addrs = this.selfAddrs()
    if (!sameList(addrs, this.announcedAddrs)) {
      this.announcedAddrs = addrs
      this.version = Math.max(this.version + 1, this.clock())
    }
    // Deferred feed changes go out now, just before the heartbeat whose cursors count them.
    if (this.broadcastsDeferred()) this.feeds.flush()
    const hb = this.heartbeat()
    if (this.lostToReport.size > 0) {
      hb.lost = [...this.lostToReport].slice(0, MAX_LOST_PER_HEARTBEAT)
      for (const id of hb.lost) this.lostToReport.delete(id)
      // More than one heartbeat holds: the rest go in the next one.
      if (this.lostToReport.size > 0) this.scheduleLostReport()
    }
    // The state goes out when it changed, then with every FULL_HEARTBEAT_EVERY-th heartbeat (for a
    // node that missed it, or just joined); in between a light heartbeat says "still here".
    // A node that just started sends only full ones for a while: the others do not know it yet,
    // and a stranger's light heartbeat introduces nobody.
    if (!full && !this.isNew() && this.version === this.lastFullVersion && this.lightSinceFull < FULL_HEARTBEAT_EVERY - 1) {
      delete hb.state
      this.lightSinceFull++
    } else {
      this.lastFullVersion = this.version
      this.lightSinceFull = 0
    }
    this.libp2p.services.pubsub.publish(HEARTBEAT_TOPIC, encodeJson(hb)).catch((err: unknown) => {
      this.log.debug({ err }, 'heartbeat not published')
    })
  }

  private heartbeat (): HeartbeatMessage {
    const hb: HeartbeatMessage = {
      peerId: this.selfId,
      nodeName: this.init.nodeName,
      addrs: this.announcedAddrs.slice(0, 32),
      version: this.version,
      state: this.localState
    }
    const every = this.heartbeatEvery()
    if (every !== this.init.heartbeatMs) hb.every = every
    if (this.apiAddress !== undefined) hb.apiAddress = this.apiAddress
    const feeds = this.feeds.cursors()
    if (Object.keys(feeds).length > 0) hb.feeds = feeds
    return hb
  }

  private bumpVersion (): void {
    this.version = Math.max(this.version + 1, this.clock())
    // Deferred: the next heartbeat carries it (it is full whenever the version moved).
    if (!this.broadcastsDeferred()) this.heartbeatNow()
  }

  private selfMember (): Member {
    const now = this.clock()
    const m: Member = {
      peerId: this.selfId,
      nodeName: this.init.nodeName,
      addrs: this.selfAddrs(),
      version: this.version,
      // Frozen when set: callers share it instead of paying a deep copy per read.
      state: this.localState,
      status: 'alive',
      lastSeen: now,
      statusSince: this.startedAt || now,
      self: true
    }
    if (this.apiAddress !== undefined) m.apiAddress = this.apiAddress
    return m
  }

  private selfAddrs (): string[] {
    if (this.phase === 'new') return []
    this.addrsCache ??= this.libp2p.getMultiaddrs().map(a => a.toString())
    return [...this.addrsCache]
  }

  private readonly onSelfUpdate = (): void => { this.addrsCache = undefined }

  /**
   * Asks a newly connected peer for the members it knows alive, with their states: a joining node
   * learns the whole cluster at once instead of waiting for each member's next full heartbeat
   * (up to 4 heartbeat intervals, 20 s in a cluster of 50). At most one such request every
   * MEMBERS_FETCH_EVERY_MS, so a burst of connections costs one.
   */
  private learnMembersFrom (peerId: string): void {
    const now = this.clock()
    // Only while new: a member that has been here a while hears of newcomers by their heartbeats,
    // and every node asking every newcomer for its list would cost O(N) answers per join.
    if (this.phase !== 'running' || !this.isNew() || now - this.lastMembersFetch < MEMBERS_FETCH_EVERY_MS) return
    this.lastMembersFetch = now
    void (async () => {
      const frames = this.rpc.requestStream<unknown, unknown>(peerId, MEMBERS_METHOD, {}, { timeoutMs: 10_000 })
      for (let i = 0; i < MAX_MEMBER_FRAMES; i++) {
        const next = await frames.next()
        if (next.done === true) return
        if (!Array.isArray(next.value)) throw new RpcProtocolError(`${this.describe(peerId)} answered ${MEMBERS_METHOD} with a malformed frame`)
        for (const hb of next.value) {
          if (!isHeartbeat(hb)) {
            this.counters.drop('rpc', 'invalid')
            continue
          }
          const outcome = this.membership.onHearsay(hb as HeartbeatMessage)
          if (outcome.addrsChanged) this.learnAddrs((hb as HeartbeatMessage).peerId, (hb as HeartbeatMessage).addrs)
        }
      }
    })().catch((err: unknown) => { this.log.debug({ err, peer: peerId }, 'could not learn members from a peer; heartbeats will bring them') })
  }

  /** Tell libp2p where a member listens, so rpc, ping and sync can dial it by peer id. */
  private learnAddrs (peerId: string, addrs: string[]): void {
    const usable: Multiaddr[] = []
    for (const text of addrs) {
      try {
        const ma = multiaddr(text)
        const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
        if (id === undefined || id === peerId) usable.push(ma)
      } catch {}
    }
    if (usable.length === 0) return
    let id: PeerId
    try {
      id = peerIdFromString(peerId)
    } catch {
      return
    }
    this.libp2p.peerStore.merge(id, { multiaddrs: usable }).catch((err: unknown) => {
      this.log.debug({ err, peer: peerId }, 'could not record member addresses')
    })
  }

  // ---- connections and the timer ------------------------------------------------------------

  private readonly onPeerConnect = (evt: CustomEvent<PeerId>): void => {
    const id = evt.detail.toString()
    this.membership.onContact(id)
    this.learnMembersFrom(id)
    // One side starts the exchange (it is two-way), so a new pair syncs once, not twice.
    if (this.selfId < id) this.scheduleSync(id, 'connect')
  }

  private readonly onPeerDisconnect = (evt: CustomEvent<PeerId>): void => {
    const id = evt.detail.toString()
    const member = this.membership.get(id)
    if (member !== undefined && member.status === 'alive') this.pingPeer(id, 'disconnected')
  }

  private readonly onMdnsPeer = (evt: CustomEvent<PeerInfo>): void => {
    const id = evt.detail.id.toString()
    // Only the lower id dials, or every pair would open two connections at once.
    if (this.phase !== 'running' || !(this.selfId < id)) return
    if (this.libp2p.getConnections(evt.detail.id).length > 0) return
    const signals = [AbortSignal.timeout(DEFAULTS.dialTimeoutMs), this.lifecycle!.signal]
    this.libp2p.dial(evt.detail.multiaddrs, { signal: AbortSignal.any(signals) }).catch((err: unknown) => {
      this.log.debug({ err, peer: id }, 'could not dial a peer found by mDNS')
    })
  }

  /**
   * A direct ping: success revives the member, failure makes it suspect. Dials if needed. A member
   * that dropped its connection to us and fails the ping is reported to the others (reportLost).
   */
  private pingPeer (peerId: string, why: 'disconnected' | 'check'): void {
    if (this.phase !== 'running' || this.pinging.has(peerId)) return
    this.pinging.add(peerId)
    const signal = AbortSignal.any([AbortSignal.timeout(DEFAULTS.pingTimeoutMs), this.lifecycle!.signal])
    this.libp2p.services.ping.ping(peerIdFromString(peerId), { signal })
      .then(() => { if (this.phase === 'running') this.membership.onContact(peerId) })
      .catch(() => {
        if (this.phase === 'running' && this.membership.onUnreachable(peerId) && why === 'disconnected') this.reportLost(peerId)
      })
      .finally(() => { this.pinging.delete(peerId) })
  }

  private tick (): void {
    if (this.phase !== 'running') return
    try {
      // Half a tick early rather than a whole tick late: timers drift.
      const every = this.heartbeatEvery()
      if (this.clock() - this.lastHeartbeatAt >= every - this.init.heartbeatMs / 2) this.publishHeartbeat()
      this.feeds.tick()
      for (const id of this.membership.tick(every)) this.pingPeer(id, 'check')
      this.maintainConnections()
      const now = this.clock()
      if (now - this.lastPeriodicSync >= this.init.syncIntervalMs) {
        this.lastPeriodicSync = now
        const peers = this.connectedMembers()
        if (peers.length > 0) this.scheduleSync(peers[Math.floor(Math.random() * peers.length)]!, 'periodic')
      }
      if (now - this.lastPurge >= Math.min(3_600_000, this.init.tombstoneTtlMs)) {
        this.lastPurge = now
        this.recordStore.purgeTombstones(now - this.init.tombstoneTtlMs).catch((err: unknown) => {
          this.log.warn({ err }, 'could not purge old tombstones')
        })
      }
    } catch (err) {
      this.log.error({ err }, 'mesh housekeeping failed; it runs again next heartbeat')
    }
  }

  private connectedMembers (): string[] {
    return this.libp2p.getPeers().map(p => p.toString()).filter(id => this.membership.get(id) !== undefined)
  }

  private maintainConnections (): void {
    const connected = new Set(this.libp2p.getPeers().map(p => p.toString()))
    const now = this.clock()
    // Dead members are retried now and then, so restarted nodes and healed partitions come back.
    for (const id of this.membership.ids('dead')) {
      if (connected.has(id) || now - (this.lastRedial.get(id) ?? 0) < DEFAULTS.deadRetryMs) continue
      this.lastRedial.set(id, now)
      this.pingPeer(id, 'check')
    }
    // Keep a few direct links (all of them in small clusters) so gossip and detection do not
    // hang on the bootstrap node.
    const missing = this.init.targetPeers - connected.size
    if (missing > 0) {
      const candidates = this.membership.ids('alive').filter(id => !connected.has(id))
      shuffle(candidates)
      for (const id of candidates.slice(0, Math.min(missing, TOP_UP_DIALS_PER_TICK))) {
        const signal = AbortSignal.any([AbortSignal.timeout(DEFAULTS.dialTimeoutMs), this.lifecycle!.signal])
        this.libp2p.dial(peerIdFromString(id), { signal }).catch((err: unknown) => {
          this.log.debug({ err, peer: id }, 'could not dial a member')
        })
      }
    }
    if (connected.size === 0 && !this.bootstrap.running && now - this.lastBootstrap >= REBOOTSTRAP_MS) {
      this.lastBootstrap = now
      void this.bootstrap.run()
    }
  }

  private requireRunning (): void {
    if (this.phase !== 'running') throw new MeshNotRunningError('The mesh node is not running; start it first.')
  }
}

function sameList (a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function shuffle<T> (items: T[]): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    const tmp = items[i]!
    items[i] = items[j]!
    items[j] = tmp
  }
}

/** Find an error by name in a cause/errors chain (libp2p wraps dial failures). */
function findError (err: unknown, name: string, depth = 0): Error | undefined {
  if (err === null || typeof err !== 'object' || depth > 5) return undefined
  const e = err as { name?: string, cause?: unknown, errors?: unknown[] }
  if (e.name === name) return err as Error
  const fromCause = findError(e.cause, name, depth + 1)
  if (fromCause !== undefined) return fromCause
  for (const inner of Array.isArray(e.errors) ? e.errors : []) {
    const found = findError(inner, name, depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}
