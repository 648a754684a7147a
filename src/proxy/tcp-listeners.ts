/**
 * TCP routes: every node listens on the route's node port and carries each connection to the VM
 * port through the dialer, wherever the VM runs. Listeners follow the route records: made when a
 * route appears (on any node), closed when it is deleted.
 */
import { createServer, isIPv4, type BlockList, type Server, type Socket } from 'node:net'
import type { Logger } from 'pino'
import type { Dialer } from './dialer.ts'
import { allowListOf } from './route-table.ts'
import { splice } from './splice.ts'
import type { ProxyRoute } from './types.ts'

interface Listener {
  route: ProxyRoute
  server: Server
  allow: BlockList | undefined
  address?: string
  error?: string
  retry?: NodeJS.Timeout
}

/**
 * A port taken by another program (often a client socket's ephemeral port, when the range overlaps
 * the OS's) may be freed any moment: the listener tries again this often for as long as the route lives.
 */
export const LISTEN_RETRY_MS = 2_000

export class TcpListeners {
  private readonly dialer: Dialer
  private readonly logger: Logger
  private readonly host: string
  private readonly listeners = new Map<string, Listener>()
  private stopped = false

  constructor (dialer: Dialer, logger: Logger, host: string) {
    this.dialer = dialer
    this.logger = logger
    // 'off' (or empty): this node serves no TCP routes.
    this.host = host === 'off' ? '' : host
  }

  /** Brings the listeners in line with the TCP routes (called on every route change). */
  reconcile (routes: ProxyRoute[]): void {
    if (this.stopped || this.host === '') return
    const wanted = new Map(routes.filter(r => r.protocol === 'tcp' && r.listenPort != null).map(r => [r.id, r]))
    for (const [id, listener] of this.listeners) {
      const route = wanted.get(id)
      if (route == null || route.listenPort !== listener.route.listenPort) {
        this.listeners.delete(id)
        clearTimeout(listener.retry)
        listener.server.close()
        this.logger.info({ route: id, port: listener.route.listenPort }, 'proxy TCP route listener closed')
      } else {
        listener.route = route
        listener.allow = route.public ? undefined : allowListOf(route)
      }
    }
    for (const route of wanted.values()) if (!this.listeners.has(route.id)) this.open(route)
  }

  /** Where this node listens for a route, or why it does not. */
  status (id: string): { address?: string, error?: string } | undefined {
    const listener = this.listeners.get(id)
    if (listener == null) return this.host === '' ? { error: 'this node serves no TCP routes (proxy.tcpListenHost is off)' } : undefined
    return { address: listener.address, error: listener.error }
  }

  async stop (): Promise<void> {
    this.stopped = true
    const closing = [...this.listeners.values()].map(async l => {
      clearTimeout(l.retry)
      await new Promise<void>(resolve => { l.server.close(() => resolve()) })
    })
    this.listeners.clear()
    await Promise.all(closing)
  }

  private open (route: ProxyRoute): void {
    const server = createServer({ allowHalfOpen: true, noDelay: true })
    const listener: Listener = { route, server, allow: route.public ? undefined : allowListOf(route) }
    this.listeners.set(route.id, listener)
    server.on('connection', socket => { void this.serve(listener, socket) })
    server.on('error', (err: NodeJS.ErrnoException) => {
      if (server.listening) {
        // A listening server's own error (an accept failing): it goes on listening.
        this.logger.warn({ route: route.id, port: route.listenPort, err: err.message }, 'proxy TCP route listener error')
        return
      }
      const again = listener.error != null
      listener.error = `cannot listen on ${this.host}:${String(route.listenPort)}: ${err.code ?? err.message}; trying again every ${LISTEN_RETRY_MS / 1000} s`
      // Logged once per route, not on every retry.
      if (!again) this.logger.error({ route: route.id, port: route.listenPort, err: err.message }, 'proxy TCP route cannot listen; free the port or recreate the route with another listenPort (retrying meanwhile)')
      if (this.listeners.get(route.id) !== listener) return
      listener.retry = setTimeout(() => { if (this.listeners.get(route.id) === listener && !server.listening) this.listen(listener) }, LISTEN_RETRY_MS)
      listener.retry.unref()
    })
    this.listen(listener)
  }

  private listen (listener: Listener): void {
    const { route, server } = listener
    server.listen(route.listenPort, this.host, () => {
      const a = server.address()
      if (a != null && typeof a === 'object') listener.address = `${isIPv4(a.address) ? a.address : `[${a.address}]`}:${a.port}`
      listener.error = undefined
      this.logger.info({ route: route.id, vm: route.vm, port: route.port, listen: listener.address, public: route.public }, 'proxy TCP route listening')
    })
  }

  private async serve (listener: Listener, socket: Socket): Promise<void> {
    const { route } = listener
    const client = socket.remoteAddress ?? ''
    socket.on('error', () => undefined)
    const family = isIPv4(client) ? 'ipv4' : 'ipv6'
    const plain = client.startsWith('::ffff:') ? client.slice(7) : client
    if (listener.allow != null && !listener.allow.check(plain, isIPv4(plain) ? 'ipv4' : family)) {
      this.logger.warn({ route: route.id, vm: route.vm, port: route.port, client }, 'proxy TCP connection refused: the route is private and the client is not in its allowFrom list (use corral port-forward)')
      socket.destroy()
      return
    }
    const info = { subject: route.public ? 'public' : `route-allow:${client}`, client, route: route.id, via: 'tcp' as const }
    const started = performance.now()
    let upstream
    try {
      upstream = await this.dialer.dial({ vm: route.vm, port: route.port }, info, { spliced: true })
    } catch (err) {
      this.logger.warn({ route: route.id, vm: route.vm, port: route.port, client, err: (err as Error).message }, 'proxy TCP connection failed')
      socket.destroy()
      return
    }
    this.logger.info({ route: route.id, vm: route.vm, port: route.port, client }, 'proxy connection opened')
    splice(socket, upstream, result => {
      this.logger.info({
        route: route.id, vm: route.vm, port: route.port, subject: info.subject, client, via: 'tcp',
        bytesIn: result.aToB, bytesOut: result.bToA, ms: Math.round(performance.now() - started), error: result.error?.message
      }, 'proxy connection closed')
    })
  }
}
