import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { DEFAULTS, GRANT_PARAM } from './constants.ts'
import { Dialer } from './dialer.ts'
import { ProxyRequestError } from './errors.ts'
import { signGrant, verifyGrant } from './grants.ts'
import { FastHttp } from './fast-http.ts'
import { HttpForwarder } from './http-forward.ts'
import { llhttp } from './llhttp.ts'
import { RouteTable } from './route-table.ts'
import { splice } from './splice.ts'
import { httpTargetOf, httpUrlsOf } from './targets.ts'
import { TcpListeners } from './tcp-listeners.ts'
import { UpstreamPool } from './upstream-pool.ts'
import type {
  ConnectionInfo, CreateRouteInput, Http1Gate, HttpServeOptions, HttpTarget, ProxyComponents, ProxyGrant, ProxyInit, ProxyRoute, ProxyService,
  ProxyTarget, RouteProtocol, RouteView
} from './types.ts'

interface VmEventDetail {
  type: string
  vm: { id: string, state: string, host: string }
}

/**
 * The reverse proxy of one node: HTTP by path and host name, upgrades, TCP route listeners and
 * raw tunnels (port-forward), all on one dialer that knows where each VM runs.
 */
class Proxy implements ProxyService {
  private readonly c: ProxyComponents
  private readonly init: ProxyInit
  private readonly dialer: Dialer
  private readonly forwarder: HttpForwarder
  /** The lean HTTP/1.1 path (absent when this Node does not offer its parser as expected). */
  private readonly fast: FastHttp | undefined
  private readonly routes: RouteTable
  private readonly tcp: TcpListeners
  private started = false
  private readonly onVm = (event: Event): void => { this.vmChanged((event as CustomEvent<VmEventDetail>).detail) }

  constructor (components: ProxyComponents, init: ProxyInit) {
    if (init.tcpPortRange.from > init.tcpPortRange.to) throw new RangeError(`proxy.tcpPortRange runs from ${init.tcpPortRange.from} down to ${init.tcpPortRange.to}; give the lower port first`)
    this.c = components
    this.init = init
    const logger = components.logger
    this.dialer = new Dialer({ vms: components.vms, mesh: components.mesh, logger }, { connectTimeoutMs: init.connectTimeoutMs, tunnel: init.tunnel })
    this.forwarder = new HttpForwarder(this.dialer, logger)
    if (llhttp != null && init.fastHttp !== false) this.fast = new FastHttp(llhttp, new UpstreamPool(this.dialer, llhttp), init.clusterDomain)
    this.routes = new RouteTable({ mesh: components.mesh, logger, clock: components.clock })
    this.tcp = new TcpListeners(this.dialer, logger, init.tcpListenHost)
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    await this.dialer.start()
    this.routes.onChange(() => { this.tcp.reconcile(this.routes.list()) })
    this.routes.start()
    this.c.vms.addEventListener('vm', this.onVm)
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.c.vms.removeEventListener('vm', this.onVm)
    this.routes.stop()
    await this.tcp.stop()
    this.forwarder.close()
    this.fast?.close()
    await this.dialer.stop()
  }

  httpTarget (req: IncomingMessage): HttpTarget | undefined {
    return httpTargetOf(req, this.init.clusterDomain)
  }

  isPublic (target: ProxyTarget, protocol: RouteProtocol): boolean {
    return this.routes.isPublic(target, protocol)
  }

  async forward (req: IncomingMessage, res: ServerResponse, target: HttpTarget, info: ConnectionInfo): Promise<void> {
    await this.forwarder.forward(req, res, target, info)
  }

  serveHttp1 (socket: Socket, gate: Http1Gate, options: HttpServeOptions): boolean {
    if (this.fast == null || !this.started) return false
    this.fast.serve(socket, gate, options)
    return true
  }

  async upgrade (req: IncomingMessage, socket: Duplex, head: Buffer, target: HttpTarget, info: ConnectionInfo): Promise<void> {
    await this.forwarder.upgrade(req, socket, head, target, info)
  }

  async tunnel (target: ProxyTarget, info: ConnectionInfo): Promise<{ attach: (client: Duplex) => void, cancel: () => void }> {
    checkPort(target.port)
    const upstream = await this.dialer.dial(target, info, { spliced: true })
    return {
      attach: client => {
        const started = performance.now()
        this.c.logger.info({ vm: target.vm, port: target.port, subject: info.subject, client: info.client, via: info.via }, 'proxy connection opened')
        splice(client, upstream, result => {
          this.c.logger.info({
            vm: target.vm, port: target.port, subject: info.subject, client: info.client, via: info.via,
            bytesIn: result.aToB, bytesOut: result.bToA, ms: Math.round(performance.now() - started), error: result.error?.message
          }, 'proxy connection closed')
        })
      },
      cancel: () => { upstream.destroy() }
    }
  }

  listRoutes (origin?: string): RouteView[] {
    return this.routes.list().map(route => this.view(route, origin))
  }

  getRoute (id: string, origin?: string): RouteView {
    return this.view(this.routes.get(id), origin)
  }

  async createRoute (input: CreateRouteInput, subject: string, origin?: string): Promise<RouteView> {
    // The VM must exist now (a typo would otherwise make a route to nothing).
    await this.c.vms.get(input.vm)
    const route = await this.routes.create(input, subject, this.init.tcpPortRange)
    this.c.logger.info({ route: route.id, vm: route.vm, port: route.port, protocol: route.protocol, public: route.public, listenPort: route.listenPort, subject }, 'proxy route created')
    return this.view(route, origin)
  }

  async deleteRoute (id: string, subject: string): Promise<void> {
    const route = await this.routes.delete(id)
    this.c.logger.info({ route: id, vm: route.vm, port: route.port, protocol: route.protocol, subject }, 'proxy route deleted')
  }

  sign (target: ProxyTarget, subject: string, ttlSeconds: number = DEFAULTS.signedUrlDefaultSeconds): { grant: string, url: string, expiresAt: string } {
    checkPort(target.port)
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > this.init.signedUrlMaxSeconds) {
      throw new ProxyRequestError(`ttlSeconds must be 1 to ${this.init.signedUrlMaxSeconds} (config proxy.signedUrlMaxSeconds)`)
    }
    const expiresAt = this.c.clock() + ttlSeconds * 1000
    const grant = signGrant(this.init.signingKey, target, subject, expiresAt)
    this.c.logger.info({ vm: target.vm, port: target.port, subject, expiresAt: new Date(expiresAt).toISOString() }, 'proxy signed URL issued')
    return { grant, url: `/proxy/vms/${target.vm}/${target.port}/?${GRANT_PARAM}=${encodeURIComponent(grant)}`, expiresAt: new Date(Math.floor(expiresAt / 1000) * 1000).toISOString() }
  }

  verifyGrant (grant: string, target: ProxyTarget): ProxyGrant {
    return verifyGrant(this.init.signingKey, grant, target, this.c.clock())
  }

  /** Requests answered on the fast HTTP path and connections it handed to Node's server; for tests and metrics. */
  fastHttpCounts (): { requests: number, handovers: number } {
    return { ...(this.fast?.counts ?? { requests: 0, handovers: 0 }) }
  }

  /** Open connections per VM (all VMs when none is named); for tests and metrics. */
  openConnections (vm?: string): number {
    return this.dialer.openCount(vm)
  }

  private view (route: ProxyRoute, origin?: string): RouteView {
    if (route.protocol === 'http') return { ...route, urls: httpUrlsOf(route.vm, route.port, origin, this.init.clusterDomain) }
    const listening = this.tcp.status(route.id) ?? { error: 'not listening yet' }
    return { ...route, urls: listening.address != null ? [`tcp://${listening.address}`] : [], listening }
  }

  private vmChanged (detail: VmEventDetail): void {
    if (detail?.vm == null) return
    const { vm } = detail
    if (detail.type !== 'vm.deleted' && vm.state === 'running') return
    this.dialer.closeVm(vm.id)
    // A deleted VM's routes go with it; its own host removes them, once for the cluster.
    if (detail.type === 'vm.deleted' && (this.c.mesh == null || vm.host === this.c.mesh.self().nodeName)) {
      for (const route of this.routes.list().filter(r => r.vm === vm.id)) {
        this.routes.delete(route.id).then(
          () => { this.c.logger.info({ route: route.id, vm: vm.id }, 'proxy route deleted with its VM') },
          (err: Error) => { this.c.logger.warn({ route: route.id, err: err.message }, 'could not delete the route of a deleted VM') }
        )
      }
    }
  }
}

/** What a node's proxy counts, for tests and metrics. */
export interface ProxyCounts {
  openConnections: (vm?: string) => number
  fastHttpCounts: () => { requests: number, handovers: number }
}

function checkPort (port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ProxyRequestError(`port ${port} is not a TCP port (1-65535)`)
}

export function createProxyService (components: ProxyComponents, init: ProxyInit): ProxyService & ProxyCounts {
  return new Proxy(components, init)
}
