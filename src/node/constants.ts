/** Wire names. Bump the version part when a message shape changes incompatibly. */
export const SYNC_PROTOCOL = '/corral/sync/1.0.0'
export const RPC_PROTOCOL = '/corral/rpc/1.0.0'
/** Unary rpc calls: one long-lived stream per peer and direction, calls multiplexed by id (rpc-channel.ts). */
export const RPC_MUX_PROTOCOL = '/corral/rpc-mux/1.0.0'
export const HEARTBEAT_TOPIC = 'corral/heartbeat/1'
export const RECORDS_TOPIC = 'corral/records/1'
export const FEEDS_TOPIC = 'corral/feeds/1'
/** The rpc method that serves one of this node's feeds whole. */
export const FEED_SNAPSHOT_METHOD = 'mesh.feed-snapshot'
/** The rpc method that lists the members a node knows alive, with their states. */
export const MEMBERS_METHOD = 'mesh.members'

/** Where the peer identity key lives under the data folder. */
export const PEER_KEY_PATH = ['keys', 'peer-id.key'] as const

/** Store collection holding every mesh record (ids are opaque, see record-store.ts). */
export const RECORDS_STORE_COLLECTION = 'mesh-records'

// Size limits. Gossip is for small, frequent messages; anything large goes through sync or rpc.
/** One heartbeat message, including the caller's opaque state. */
export const MAX_HEARTBEAT_BYTES = 128 * 1024
/** One feed delta message (a batch of rows). */
export const MAX_FEED_DELTA_BYTES = 256 * 1024
/** One records gossip message (a batch of entries). */
export const MAX_RECORDS_MESSAGE_BYTES = 256 * 1024
/** gossipsub refuses whole RPC frames larger than this before decoding them. */
export const MAX_GOSSIP_RPC_BYTES = 1024 * 1024
/** One record's JSON value. */
export const MAX_RECORD_VALUE_BYTES = 64 * 1024
/** A collection name or record id. */
export const MAX_NAME_LENGTH = 256
/** One frame on the sync protocol. */
export const MAX_SYNC_FRAME_BYTES = 1024 * 1024
/** Entries per sync frame (digest items or records), also bounded by bytes. */
export const SYNC_CHUNK_ITEMS = 500
/** A peer announcing more records than this in one sync is refused. */
export const MAX_SYNC_RECORDS = 200_000
/** One frame on the rpc protocol. */
export const MAX_RPC_FRAME_BYTES = 1024 * 1024
/** Frames one streaming response may send; guards a client against an endless stream. */
export const MAX_RPC_STREAM_FRAMES = 1_000_000
/** Unary calls one channel runs at once on the callee; more are answered with RpcBusyError. */
export const MAX_RPC_CALLS_IN_FLIGHT = 256
/** Method names. */
export const MAX_METHOD_LENGTH = 128

export const DEFAULTS = {
  heartbeatMs: 1000,
  suspectAfterMs: 5000,
  deadAfterMs: 15_000,
  syncIntervalMs: 30_000,
  rpcTimeoutMs: 30_000,
  pingTimeoutMs: 2000,
  /** How often each connection is pinged with a yamux ping frame (ConnectionLiveness). */
  connectionPingMs: 30_000,
  /**
   * How long that ping's answer may take before the connection is closed as half-open: generous,
   * since a node on a saturated machine may answer seconds late and a live connection must not go.
   */
  connectionPingTimeoutMs: 15_000,
  dialTimeoutMs: 5000,
  /** The node keeps direct connections to at least this many members (all, in small clusters). */
  targetPeers: 8,
  /** A dead member is redialled this often, so healed partitions and restarted nodes rejoin. */
  deadRetryMs: 30_000,
  tombstoneTtlMs: 7 * 24 * 3600 * 1000,
  maxClockDriftMs: 60_000,
  bootstrap: { attempts: 8, initialDelayMs: 250, maxDelayMs: 8000 },
  /** A nonce exchange plus one check block: generous for slow links, short enough to free sockets. */
  privateNetworkTimeoutMs: 5000,
  mdnsIntervalMs: 10_000
} as const
