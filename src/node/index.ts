/**
 * src/node: the libp2p mesh. Membership with failure detection, cluster-wide records with full
 * sync, and request/response between nodes. Knows nothing of scheduling, VMs or HTTP.
 */
export { createMeshNode } from './mesh-node.ts'
export { generateClusterKey, normalizeClusterKey, encodeJoinToken, decodeJoinToken } from './cluster-key.ts'
export type { JoinToken } from './cluster-key.ts'
export { compareTimestamps } from './hlc.ts'
export { heartbeatInterval } from './membership.ts'
export { SYNC_PROTOCOL, RPC_PROTOCOL, RPC_MUX_PROTOCOL, HEARTBEAT_TOPIC, RECORDS_TOPIC } from './constants.ts'
export * from './errors.ts'
export type * from './types.ts'
export type { Feed, FeedChange, FeedRow } from './feeds.ts'
