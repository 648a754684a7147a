/**
 * Public shapes of src/node, the libp2p mesh: membership with failure detection, cluster-wide
 * records, and request/response between nodes. Nothing here knows about scheduling, VMs or HTTP;
 * callers put their own data in the opaque `state` of a node and in record values.
 */
import type { Feed, FeedChange, FeedRow } from './feeds.ts'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Store } from '../store/types.ts'
import type { Timestamp } from './hlc.ts'

export type { Timestamp } from './hlc.ts'

export interface MeshNodeComponents {
  logger: Logger
  /** Persists cluster-wide records (collection `mesh-records`). Must be started before the mesh. */
  store: Store
  /** Milliseconds since the epoch; tests inject one to move time. Defaults to Date.now. */
  clock?: () => number
}

export interface MdnsOptions {
  enabled: boolean
  /** One tag per cluster, so two clusters on one LAN do not even try each other. */
  serviceTag: string
  /** How often to query the LAN. */
  intervalMs: number
}

export interface BootstrapRetryOptions {
  /** Dials per bootstrap address before giving up on it (until the node has no peers again). */
  attempts: number
  initialDelayMs: number
  maxDelayMs: number
}

export interface MeshNodeInit {
  /** The node's data folder; the peer identity key lives in `<dataDir>/keys/peer-id.key`. */
  dataDir: string
  /** The cluster's pre-shared key in libp2p's text form (see generateClusterKey). */
  clusterKey: string
  /** Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/7946` or `/ip4/127.0.0.1/tcp/0`. */
  listen: string[]
  /** Multiaddrs of nodes to join through (with or without `/p2p/<id>`). May include this node. */
  bootstrap: string[]
  mdns: MdnsOptions
  /** Human name shown to users and in errors; need not be unique, the peer id is. */
  nodeName: string
  gossip: {
    /**
     * gossipsub's penalty for many peers behind one IP address (negative, libp2p uses -5).
     * 0 turns it off: required for tests on loopback and for hosts behind one NAT address.
     */
    colocationWeight: number
  }
  /** How often this node announces itself (and checks the others). */
  heartbeatMs: number
  /** A member unheard of for this long is suspect (and is pinged directly). */
  suspectAfterMs: number
  /** A member unheard of for this long is dead. Must exceed suspectAfterMs. */
  deadAfterMs: number

  /** URL of this node's API, announced to the others. Can be set later with setApiAddress(). */
  apiAddress?: string
  /** Addresses to announce instead of the listen addresses (e.g. behind NAT). */
  announce?: string[]
  /** Full record sync with one random peer this often (also on every new connection). */
  syncIntervalMs?: number
  /**
   * How often each connection is pinged (a yamux ping frame) and how long its answer may take before
   * the connection is closed as half-open. Default 30 s and 15 s.
   */
  connectionPing?: { intervalMs: number, timeoutMs: number }
  /** Keep direct connections to at least this many members. Default 8. */
  targetPeers?: number
  /**
   * Address ranges (multiaddr form, e.g. `/ip4/10.0.0.0/ipcidr/8`) exempt from libp2p's per-IP
   * inbound rate limits: needed when many nodes share one address (tests, NAT).
   */
  allowAddresses?: string[]
  bootstrapRetry?: BootstrapRetryOptions
  /** Default timeout of request(); requestStream() applies it between frames. */
  rpcTimeoutMs?: number
  /** Tombstones older than this are purged. Longer than any outage you expect a node to survive. */
  tombstoneTtlMs?: number
  /**
   * Record collections that change often and whose latest value a restart may lose (a lease
   * renewed twice a second): written to the store at most every few seconds and at stop, not on
   * every change. Their gossip and sync are as for any record.
   */
  volatileCollections?: string[]
}

export type MemberStatus = 'alive' | 'suspect' | 'dead'

/** What each node gossips about itself. One writer (the node), versions only go up. */
export interface NodeState {
  peerId: string
  nodeName: string
  apiAddress?: string
  /** Multiaddrs (with /p2p/) others can dial. */
  addrs: string[]
  /**
   * Strictly increasing per node, also across restarts (it starts from the wall clock in ms and
   * counts up from there); receivers keep the highest they have seen.
   */
  version: number
  /** The caller's payload (capacity, VMs, images...), set with setLocalState(). */
  state: unknown
}

export interface Member extends NodeState {
  status: MemberStatus
  /** Local wall time (ms) of the last heartbeat or successful ping. */
  lastSeen: number
  /** Local wall time (ms) the status last changed. */
  statusSince: number
  /** True for this node's own entry. */
  self: boolean
}

export interface SelfInfo {
  peerId: string
  nodeName: string
  /** Addresses others can dial, each ending in /p2p/<peerId>. */
  multiaddrs: string[]
}

/** A live record as the record store hands it out. */
export interface MeshRecord<T = unknown> {
  collection: string
  id: string
  value: T
  /** Peer id of the node that wrote this version. */
  updatedBy: string
  /** Wall time (ms) of the write, from its hybrid timestamp. */
  updatedAt: number
}

export type RecordOrigin = 'local' | 'gossip' | 'sync'

export interface RecordChange {
  collection: string
  id: string
  /** The new value; null when deleted. */
  value: unknown
  deleted: boolean
  hlc: Timestamp
  origin: RecordOrigin
}

/**
 * Records shared by the whole cluster: last writer wins by hybrid timestamp, deletes are
 * tombstones. Writes apply locally, persist, then spread by gossip and by periodic full sync.
 */
export interface RecordStore {
  /**
   * Insert or replace. Collection: 1–63 of a-z, 0-9, "-", starting with a letter; id: 1–128
   * characters; value: JSON of at most 64 KiB. Resolves once durable locally; spreading is
   * best-effort (full sync repairs what gossip missed).
   */
  put: <T>(collection: string, id: string, value: T) => Promise<void>
  /** Writes a tombstone; resolves true if a live record existed. */
  delete: (collection: string, id: string) => Promise<boolean>
  get: <T>(collection: string, id: string) => T | undefined
  list: <T>(collection: string) => Array<MeshRecord<T>>
}

export interface MeshEvents {
  /** First heartbeat from a node not seen before. */
  'member:join': Member
  /** A newer NodeState (version) from a known node. */
  'member:update': Member
  'member:suspect': Member
  'member:dead': Member
  /** A suspect or dead member was heard from again. */
  'member:alive': Member
  'record:changed': RecordChange
  /** Rows of another node's feed changed here (a delta applied, or a whole feed fetched). */
  'feed:change': FeedChange
}

export type MeshEventName = keyof MeshEvents

export interface RpcContext {
  /** Peer id of the caller. */
  peerId: string
  /** Aborted when the caller goes away, cancels, or the node stops. */
  signal: AbortSignal
  /**
   * Send one frame of a streaming response (e.g. exec output). Waits for the caller to take it
   * (backpressure); rejects once the caller has gone. The handler's return value ends the stream.
   */
  send: (frame: unknown) => Promise<void>
}

/**
 * Answers one method. The return value (JSON) is the response; a thrown error reaches the caller
 * as RpcRemoteError carrying the error's name, message and details (never its stack).
 */
export type RpcHandler<Req = unknown, Res = unknown> = (body: Req, ctx: RpcContext) => Res | Promise<Res>

export interface RequestOptions {
  signal?: AbortSignal
  /**
   * request(): the whole call. requestStream(): the longest wait for the next frame. Defaults to
   * init.rpcTimeoutMs.
   */
  timeoutMs?: number
}

/**
 * Serves one inbound byte stream: a Node Duplex (half-close kept, backpressure both ways) and the
 * caller's peer id. The handler owns the stream and must end or destroy it.
 */
export type StreamHandler = (stream: Duplex, peerId: string) => void

export interface StreamProtocolOptions {
  /** Streams of this protocol open at once per connection, each way. Default 1024. */
  maxStreams?: number
}

export type TrafficChannel = 'gossip' | 'sync' | 'rpc'
export type DropReason =
  | 'malformed' | 'oversized' | 'invalid' | 'unsigned' | 'spoofed' | 'clock-drift' | 'unknown-topic' | 'too-many'

/** Counters since start (a snapshot; later calls return new objects). */
export interface MeshMetrics {
  /** Inbound messages/frames that passed validation, per channel. */
  accepted: Record<TrafficChannel, number>
  /** Inbound messages/frames dropped, per channel. */
  dropped: Record<TrafficChannel, number>
  /** Drops by `<channel>.<reason>`, e.g. `rpc.oversized`. Only reasons seen are present. */
  dropReasons: Record<string, number>
  heartbeatsReceived: number
  /** Remote record entries that changed local state. */
  recordsApplied: number
  syncRuns: number
  syncFailures: number
  rpcServed: number
  rpcFailed: number
  /** Connections refused because the peer held another cluster key. */
  privateNetworkRejected: number
  /** Feed deltas applied, and whole feeds fetched because a replica fell behind (see feeds.ts). */
  feedDeltasApplied: number
  feedSnapshotsFetched: number
  /** Keep-alive pings answered, and connections closed because a ping went unanswered. */
  connectionPingsAnswered: number
  halfOpenConnectionsClosed: number
}

export interface MeshNode {
  start: () => Promise<void>
  /** Leaves the mesh, frees sockets and timers; pending requests reject. Safe to call twice. */
  stop: () => Promise<void>
  readonly records: RecordStore
  self: () => SelfInfo
  /** Every node known, this one included (`self: true`), in no particular order. */
  members: () => Member[]
  member: (peerId: string) => Member | undefined
  /**
   * Replace this node's opaque state; announced with the next heartbeat (an extra one at once up to
   * 10 members, the regular one beyond: see currentHeartbeat).
   */
  setLocalState: (state: unknown) => void
  setApiAddress: (address: string | undefined) => void
  /**
   * Beyond 10 members a changed state is broadcast only with the node's next heartbeat (each
   * broadcast costs every node); a node that needs it sooner gets it straight from its owner. This node's full
   * heartbeat now, state included, for the owner to hand over (in an rpc answer, say).
   */
  currentHeartbeat: () => unknown
  /**
   * A heartbeat member `from` handed over directly (from as the transport proved it), applied as
   * if gossiped. False, and counted as dropped, if malformed or about another node.
   */
  acceptHeartbeat: (from: string, heartbeat: unknown) => boolean
  /** Sends this node's heartbeat straight to one member (see currentHeartbeat). */
  sendHeartbeatTo: (peerId: string) => Promise<void>
  /** Dial a node by multiaddr at runtime (e.g. `corral cluster join`). */
  connect: (multiaddr: string, options?: { signal?: AbortSignal }) => Promise<void>
  /** Run one full record sync with a peer now; resolves with the entries exchanged. */
  syncWith: (peerId: string, options?: { signal?: AbortSignal }) => Promise<{ sent: number, received: number }>

  /**
   * A feed this node owns the rows of, replicated on every other node by small gossiped deltas
   * (see feeds.ts). For often-changing lists that would make heartbeats heavy, such as a host's VMs.
   */
  feed: <Row extends FeedRow>(name: string) => Feed<Row>

  on: <E extends MeshEventName>(event: E, listener: (detail: MeshEvents[E]) => void) => void
  off: <E extends MeshEventName>(event: E, listener: (detail: MeshEvents[E]) => void) => void

  /** Register the handler for a method; replaces any previous one. */
  handleRpc: <Req = unknown, Res = unknown>(method: string, handler: RpcHandler<Req, Res>) => void
  unhandleRpc: (method: string) => void
  /**
   * Call a method on a node (this one included). Rejects with PeerUnavailableError (naming the
   * node) when it is dead, unknown, unreachable or goes away mid-call; RpcTimeoutError,
   * RpcAbortedError, RpcMethodNotFoundError, RpcRemoteError, RpcProtocolError otherwise, and
   * RpcBusyError when the node already runs as many calls from this one as it accepts (nothing ran).
   * A handler that sends frames (ctx.send) gets RpcStreamRequiredError: call it with requestStream().
   */
  request: <Res = unknown>(peerId: string, method: string, body: unknown, options?: RequestOptions) => Promise<Res>
  /**
   * Call a streaming method: yields each frame the handler sends; the generator's return value is
   * the handler's return value. Breaking out of the loop cancels the call on the remote side.
   */
  requestStream: <Frame = unknown, Res = unknown>(peerId: string, method: string, body: unknown, options?: RequestOptions) => AsyncGenerator<Frame, Res, undefined>

  /**
   * Serve a raw byte-stream protocol such as `/corral/proxy/1.0.0` (replaces any previous handler).
   * Only nodes holding the cluster key can open one.
   */
  handleStream: (protocol: string, handler: StreamHandler, options?: StreamProtocolOptions) => Promise<void>
  unhandleStream: (protocol: string) => Promise<void>
  /**
   * Open a byte stream of a protocol to a node. Rejects with PeerUnavailableError naming the node
   * when it is dead, unknown or unreachable, or does not serve the protocol.
   */
  openStream: (peerId: string, protocol: string, options?: { signal?: AbortSignal }) => Promise<Duplex>

  metrics: () => MeshMetrics
  /** Members this node holds a direct connection to (the others it hears of through gossip). */
  connectedPeers: () => string[]
}
