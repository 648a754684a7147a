/** Wire names and defaults of the proxy. */

/** libp2p protocol carrying one proxied TCP connection from a gateway node to the VM's host. */
export const PROXY_PROTOCOL = '/corral/proxy/1.0.0'

/** Cluster-wide record collection of proxy routes. */
export const ROUTES_COLLECTION = 'proxy-routes'

/** Cluster-wide record collection where each node announces its direct tunnel addresses. */
export const TUNNELS_COLLECTION = 'proxy-tunnels'

/** Path prefix of HTTP routes by path: /proxy/vms/{id}/{port}/... */
export const PATH_PREFIX = '/proxy/vms/'

/** Query parameter carrying a signed grant, and the cookie it becomes. */
export const GRANT_PARAM = 'corral_grant'
export const GRANT_COOKIE = 'corral_proxy_grant'

/** Largest tunnel header (JSON line) either side accepts. */
export const MAX_HEADER_BYTES = 4096

/** Streams of the proxy protocol open at once per connection between two nodes. */
export const MAX_TUNNEL_STREAMS = 4096

export const DEFAULTS = {
  connectTimeoutMs: 10_000,
  /** Idle upstream HTTP connections kept per VM port, and for how long. */
  maxIdleSocketsPerTarget: 64,
  idleSocketMs: 30_000,
  signedUrlDefaultSeconds: 900,
  signedUrlMaxSeconds: 3600
} as const
