/**
 * Direct tunnels between nodes: TLS 1.3 with a pre-shared key derived from the cluster key, on a
 * port of each node, announced as a cluster-wide record (proxy-tunnels/<peer id>). They carry the
 * same tunnel protocol as the libp2p stream (a JSON header line, a reply, then raw bytes) with
 * native crypto: bulk transfers through another node run many times faster than over the mesh's
 * own streams. Only holders of the cluster key can open or serve one; a node that cannot reach
 * the other's tunnel port falls back to the mesh stream.
 */
import { createServer as createTlsServer, connect as tlsConnect, type ConnectionOptions, type Server, type TLSSocket } from 'node:tls'
import { isIPv6 } from 'node:net'
import type { Logger } from 'pino'
import { TUNNELS_COLLECTION } from './constants.ts'
import type { ProxyMesh } from './types.ts'

// ca: no certificate authorities. Both ends authenticate with the pre-shared key alone, and without
// a ca of its own every TLS context loads Node's bundled root certificates: ~150 parsed X.509
// certificates, ~1.3 MB of native memory kept for the life of the process, in every node.
const TLS = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256', ca: [] as string[] } as const
/** After a failed dial, a peer's tunnel is not tried again for this long (the mesh stream is used). */
const RETRY_AFTER_MS = 30_000

export interface TunnelRecord {
  /** host:port addresses other nodes may dial, best first. */
  addrs: string[]
}

export interface DirectTunnelsComponents {
  mesh: ProxyMesh
  logger: Logger
  /** Serves one inbound tunnel (the same handler as the mesh stream's). */
  serve: (socket: TLSSocket, peer: string) => void
}

export interface DirectTunnelsInit {
  /** Address to listen on (0.0.0.0 / :: to serve other hosts). */
  host: string
  /** 0: any free port. */
  port: number
  key: Uint8Array
  connectTimeoutMs: number
}

export class DirectTunnels {
  private readonly c: DirectTunnelsComponents
  private readonly init: DirectTunnelsInit
  private server: Server | undefined
  private readonly failedAt = new Map<string, number>()

  constructor (components: DirectTunnelsComponents, init: DirectTunnelsInit) {
    this.c = components
    this.init = init
  }

  async start (): Promise<void> {
    const key = Buffer.from(this.init.key)
    const server = createTlsServer({ ...TLS, allowHalfOpen: true, pskCallback: (_socket, identity) => (identity.length > 0 && identity.length < 256 ? key : null) }, socket => {
      socket.on('error', () => undefined)
      socket.setNoDelay(true)
      this.c.serve(socket, `direct:${socket.remoteAddress ?? ''}`)
    })
    server.on('tlsClientError', err => { this.c.logger.debug({ err: err.message }, 'refused a direct tunnel (wrong cluster key or not TLS)') })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.init.port, this.init.host, () => resolve())
    })
    this.server = server
    const port = (server.address() as { port: number }).port
    const self = this.c.mesh.self()
    const addrs = advertised(this.init.host, port, self.multiaddrs)
    await this.c.mesh.records.put<TunnelRecord>(TUNNELS_COLLECTION, self.peerId, { addrs })
    this.c.logger.info({ addrs }, 'direct proxy tunnels listening')
  }

  async stop (): Promise<void> {
    const server = this.server
    this.server = undefined
    if (server == null) return
    await this.c.mesh.records.delete(TUNNELS_COLLECTION, this.c.mesh.self().peerId).catch(() => false)
    await new Promise<void>(resolve => server.close(() => resolve()))
  }

  /** A TLS connection to the peer's tunnel port, or undefined when it has none or cannot be reached. */
  async open (peerId: string): Promise<TLSSocket | undefined> {
    const record = this.c.mesh.records.get<TunnelRecord>(TUNNELS_COLLECTION, peerId)
    if (record == null || record.addrs.length === 0) return undefined
    const failed = this.failedAt.get(peerId)
    if (failed != null && Date.now() - failed < RETRY_AFTER_MS) return undefined
    for (const addr of record.addrs) {
      try {
        return await this.connect(addr)
      } catch (err) {
        this.c.logger.debug({ peer: peerId, addr, err: (err as Error).message }, 'direct tunnel unreachable; trying the next address or the mesh')
      }
    }
    this.failedAt.set(peerId, Date.now())
    return undefined
  }

  private async connect (addr: string): Promise<TLSSocket> {
    const colon = addr.lastIndexOf(':')
    const host = addr.slice(0, colon).replace(/^\[|\]$/g, '')
    const port = Number(addr.slice(colon + 1))
    const key = Buffer.from(this.init.key)
    const identity = this.c.mesh.self().peerId
    return await new Promise<TLSSocket>((resolve, reject) => {
      // allowHalfOpen (net's option, which tls.connect passes on): each side's end travels alone.
      const socket = tlsConnect({ ...TLS, host, port, pskCallback: () => ({ psk: key, identity }), checkServerIdentity: () => undefined, allowHalfOpen: true } as ConnectionOptions)
      const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no TLS handshake with ${addr} within ${this.init.connectTimeoutMs} ms`)) }, this.init.connectTimeoutMs)
      socket.once('secureConnect', () => {
        clearTimeout(timer)
        socket.removeListener('error', onError)
        socket.setNoDelay(true)
        resolve(socket)
      })
      const onError = (err: Error): void => {
        clearTimeout(timer)
        reject(err)
      }
      socket.once('error', onError)
    })
  }
}

/** Where others reach this node's tunnel port: the listen address, or for a wildcard the mesh's addresses' hosts. */
function advertised (host: string, port: number, multiaddrs: string[]): string[] {
  const wildcard = host === '0.0.0.0' || host === '::' || host === ''
  if (!wildcard) return [isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`]
  const hosts = new Set<string>()
  for (const ma of multiaddrs) {
    const m = /^\/(ip4|ip6)\/([^/]+)\/tcp\//.exec(ma)
    if (m != null) hosts.add(m[1] === 'ip6' ? `[${m[2]}]` : m[2])
  }
  return [...hosts].map(h => `${h}:${port}`)
}
