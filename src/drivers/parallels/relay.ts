import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net'
import type { Logger } from 'pino'

export interface RelayTarget {
  host: string
  port: number
}

/**
 * A loopback TCP listener that pipes each connection to a guest address. Parallels' own port
 * forwarding (prlsrvctl net set Shared --nat-tcp-add) listens on every host interface and changes
 * global network settings that outlive corral; this relay binds 127.0.0.1 only and dies with the
 * node, which is what the proxy needs. The target is looked up per connection, so a guest that got a
 * new address after a restart is found again.
 */
export class PortRelay {
  private readonly server: Server
  private readonly sockets = new Set<Socket>()
  private readonly resolveTarget: () => Promise<RelayTarget>
  private readonly logger: Logger
  private readonly onTargetFailed: () => void
  private closed = false

  private constructor (server: Server, resolveTarget: () => Promise<RelayTarget>, logger: Logger, onTargetFailed: () => void) {
    this.server = server
    this.resolveTarget = resolveTarget
    this.logger = logger
    this.onTargetFailed = onTargetFailed
    server.on('connection', (socket) => { this.accept(socket) })
  }

  /** `onTargetFailed` runs when the guest refuses a connection, so a stale address is looked up again. */
  static async listen (resolveTarget: () => Promise<RelayTarget>, logger: Logger, onTargetFailed: () => void = () => {}): Promise<PortRelay> {
    // Half-open both ways: a client that sends its request and shuts its side still gets the reply.
    const server = createServer({ pauseOnConnect: true, allowHalfOpen: true })
    const relay = new PortRelay(server, resolveTarget, logger, onTargetFailed)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject)
        resolve()
      })
    })
    return relay
  }

  get hostPort (): number {
    return (this.server.address() as AddressInfo).port
  }

  private track (socket: Socket): void {
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
  }

  private accept (client: Socket): void {
    this.track(client)
    client.on('error', () => client.destroy())
    this.resolveTarget().then((target) => {
      if (this.closed || client.destroyed) {
        client.destroy()
        return
      }
      const upstream = connect({ host: target.host, port: target.port, allowHalfOpen: true })
      let connected = false
      this.track(upstream)
      upstream.once('connect', () => {
        connected = true
        client.pipe(upstream)
        upstream.pipe(client)
        client.resume()
      })
      upstream.on('error', (err) => {
        this.logger.debug({ err, target }, 'parallels port relay: guest refused or dropped the connection')
        if (!connected) this.onTargetFailed()
        client.destroy()
        upstream.destroy()
      })
      client.once('close', () => upstream.destroy())
      upstream.once('close', () => client.destroy())
    }, (err: unknown) => {
      this.logger.debug({ err }, 'parallels port relay: no guest address for a new connection')
      client.destroy()
    })
  }

  /** Stops listening and drops every open connection. Safe to call twice. */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}
