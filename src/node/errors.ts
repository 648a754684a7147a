import { CorralError } from '../errors.ts'

/** The cluster key text is not a libp2p pre-shared key. */
export class ClusterKeyInvalidError extends CorralError {
  override name = 'ClusterKeyInvalidError'
}

/** A join token does not decode to a cluster key and bootstrap addresses. */
export class JoinTokenInvalidError extends CorralError {
  override name = 'JoinTokenInvalidError'
}

/** A peer completed the transport but not the private-network check: it holds another cluster key. */
export class ClusterKeyMismatchError extends CorralError {
  override name = 'ClusterKeyMismatchError'
}

/** The peer identity key file exists but cannot be read as a key. */
export class PeerKeyInvalidError extends CorralError {
  override name = 'PeerKeyInvalidError'
}

/** A mesh method that needs the network was called before start() or after stop(). */
export class MeshNotRunningError extends CorralError {
  override name = 'MeshNotRunningError'
}

/** The node a request was meant for is not reachable (stopped, dead, unknown or disconnected). */
export class PeerUnavailableError extends CorralError {
  override name = 'PeerUnavailableError'
}

/** The peer took longer than the request's timeout to answer. */
export class RpcTimeoutError extends CorralError {
  override name = 'RpcTimeoutError'
}

/** The caller aborted the request through its AbortSignal. */
export class RpcAbortedError extends CorralError {
  override name = 'RpcAbortedError'
}

/** The peer has no handler for the method (different version, or not yet started). */
export class RpcMethodNotFoundError extends CorralError {
  override name = 'RpcMethodNotFoundError'
}

/**
 * The remote handler threw. `details.remote` carries its error's name, message and details so the
 * caller can branch on the remote name as if the call had been local.
 */
export class RpcRemoteError extends CorralError {
  override name = 'RpcRemoteError'
}

/**
 * The callee already runs as many unary calls from this node as one rpc channel allows
 * (MAX_RPC_CALLS_IN_FLIGHT): nothing was run. Retry later, or send fewer calls at once.
 */
export class RpcBusyError extends CorralError {
  override name = 'RpcBusyError'
}

/** A handler called through request() (one answer) tried to send frames: it must be called with requestStream(). */
export class RpcStreamRequiredError extends CorralError {
  override name = 'RpcStreamRequiredError'
}

/** The peer answered with frames that break the protocol (malformed, oversized, out of order). */
export class RpcProtocolError extends CorralError {
  override name = 'RpcProtocolError'
}

/** A record write was refused locally: bad collection or id, value not JSON, or too large. */
export class RecordInvalidError extends CorralError {
  override name = 'RecordInvalidError'
}

/** A request body, response or stream frame is over the rpc frame limit. */
export class RpcBodyTooLargeError extends CorralError {
  override name = 'RpcBodyTooLargeError'
}

/** setLocalState() was given something that cannot be gossiped (no JSON form, or too large). */
export class NodeStateInvalidError extends CorralError {
  override name = 'NodeStateInvalidError'
}
