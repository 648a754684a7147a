import { CorralError } from '../errors.ts'

/** The VM exists but is not running, so nothing inside it can answer (503). */
export class ProxyVmNotRunningError extends CorralError {
  override name = 'ProxyVmNotRunningError'
}

/** The VM's port refused or dropped the connection: nothing listens there, or it crashed (502). */
export class ProxyUpstreamError extends CorralError {
  override name = 'ProxyUpstreamError'
}

/** The VM's port did not accept a connection in time (504). */
export class ProxyUpstreamTimeoutError extends CorralError {
  override name = 'ProxyUpstreamTimeoutError'
}

/** The node that runs the VM cannot be reached, or no longer runs it (503). */
export class ProxyHostUnavailableError extends CorralError {
  override name = 'ProxyHostUnavailableError'
}

/** A proxy request or route definition is not valid (400). */
export class ProxyRequestError extends CorralError {
  override name = 'ProxyRequestError'
}

/** No proxy route with that id (404). */
export class ProxyRouteNotFoundError extends CorralError {
  override name = 'ProxyRouteNotFoundError'
}

/** The route asked for clashes with another one, or no node port is left for it (409). */
export class ProxyRouteConflictError extends CorralError {
  override name = 'ProxyRouteConflictError'
}

/** A signed URL or grant cookie is malformed, forged, expired or for another VM port (401). */
export class ProxyGrantInvalidError extends CorralError {
  override name = 'ProxyGrantInvalidError'
}

/** The tunnel between two nodes broke its framing (a bug or a peer of another version) (502). */
export class ProxyTunnelError extends CorralError {
  override name = 'ProxyTunnelError'
}
