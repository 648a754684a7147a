/**
 * Proxy routes as cluster-wide records (collection proxy-routes): written on any node, served by
 * every node. Without a mesh (tests, a lone node built without one) they live in memory.
 */
import { randomBytes } from 'node:crypto'
import { BlockList, isIP } from 'node:net'
import type { Logger } from 'pino'
import { ROUTES_COLLECTION } from './constants.ts'
import { ProxyRequestError, ProxyRouteConflictError, ProxyRouteNotFoundError } from './errors.ts'
import type { CreateRouteInput, ProxyMesh, ProxyRoute, ProxyTarget, RouteProtocol } from './types.ts'

export interface RouteTableComponents {
  mesh?: ProxyMesh
  logger: Logger
  clock: () => number
}

export class RouteTable {
  private readonly c: RouteTableComponents
  private readonly local = new Map<string, ProxyRoute>()
  private readonly listeners = new Set<() => void>()
  /** Public routes by `${protocol}:${vm}:${port}`, rebuilt on every change (read per request). */
  private publicIndex = new Set<string>()
  private readonly onRecord = (change: { collection: string }): void => {
    if (change.collection === ROUTES_COLLECTION) this.changed()
  }

  constructor (components: RouteTableComponents) {
    this.c = components
  }

  start (): void {
    this.c.mesh?.on('record:changed', this.onRecord)
    this.changed()
  }

  stop (): void {
    this.c.mesh?.off('record:changed', this.onRecord)
  }

  /** Called after any change, local or from another node. */
  onChange (listener: () => void): void {
    this.listeners.add(listener)
  }

  list (): ProxyRoute[] {
    const routes = this.c.mesh != null
      ? this.c.mesh.records.list<ProxyRoute>(ROUTES_COLLECTION).map(r => r.value)
      : [...this.local.values()]
    return routes.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
  }

  get (id: string): ProxyRoute {
    const route = this.c.mesh != null ? this.c.mesh.records.get<ProxyRoute>(ROUTES_COLLECTION, id) : this.local.get(id)
    if (route == null) throw new ProxyRouteNotFoundError(`no proxy route with id ${id}; GET /api/v1/proxy/routes lists them`, { id })
    return route
  }

  isPublic (target: ProxyTarget, protocol: RouteProtocol): boolean {
    return this.publicIndex.has(`${protocol}:${target.vm}:${target.port}`)
  }

  async create (input: CreateRouteInput, subject: string, portRange: { from: number, to: number }): Promise<ProxyRoute> {
    validate(input, portRange)
    const existing = this.list()
    const route: ProxyRoute = {
      id: 'rt-' + randomBytes(6).toString('hex'),
      vm: input.vm,
      port: input.port,
      protocol: input.protocol,
      public: input.public === true,
      createdBy: subject,
      createdAt: new Date(this.c.clock()).toISOString()
    }
    if (input.description != null) route.description = input.description
    if (input.protocol === 'tcp') {
      route.listenPort = input.listenPort ?? firstFreePort(existing, portRange)
      const clash = existing.find(r => r.protocol === 'tcp' && r.listenPort === route.listenPort)
      if (clash != null) throw new ProxyRouteConflictError(`node port ${route.listenPort} is taken by route ${clash.id} (port ${clash.port} of VM ${clash.vm}); ask for another listenPort or leave it out`, { route: clash.id })
      if (input.allowFrom != null) route.allowFrom = input.allowFrom
    } else {
      const same = existing.find(r => r.protocol === 'http' && r.vm === input.vm && r.port === input.port)
      if (same != null) throw new ProxyRouteConflictError(`port ${input.port} of VM ${input.vm} already has the HTTP route ${same.id}; delete it first to change it`, { route: same.id })
    }
    await this.put(route)
    return route
  }

  async delete (id: string): Promise<ProxyRoute> {
    const route = this.get(id)
    if (this.c.mesh != null) await this.c.mesh.records.delete(ROUTES_COLLECTION, id)
    else this.local.delete(id)
    this.changed()
    return route
  }

  private async put (route: ProxyRoute): Promise<void> {
    if (this.c.mesh != null) await this.c.mesh.records.put(ROUTES_COLLECTION, route.id, route)
    else this.local.set(route.id, route)
    this.changed()
  }

  private changed (): void {
    const index = new Set<string>()
    for (const r of this.list()) if (r.public) index.add(`${r.protocol}:${r.vm}:${r.port}`)
    this.publicIndex = index
    for (const listener of this.listeners) {
      try {
        listener()
      } catch (err) {
        this.c.logger.error({ err }, 'a proxy route listener failed')
      }
    }
  }
}

function validate (input: CreateRouteInput, range: { from: number, to: number }): void {
  if (!Number.isInteger(input.port) || input.port < 1 || input.port > 65535) throw new ProxyRequestError(`port ${input.port} is not a TCP port (1-65535)`)
  if (input.protocol === 'http') {
    if (input.listenPort != null || input.allowFrom != null) throw new ProxyRequestError('listenPort and allowFrom are for TCP routes; an HTTP route is reached through the API port')
    return
  }
  if (input.listenPort != null && (input.listenPort < range.from || input.listenPort > range.to)) {
    throw new ProxyRequestError(`listenPort ${input.listenPort} is outside this cluster's TCP route range ${range.from}-${range.to} (config proxy.tcpPortRange)`)
  }
  for (const cidr of input.allowFrom ?? []) {
    if (parseCidr(cidr) == null) throw new ProxyRequestError(`allowFrom entry "${cidr}" is not an address or CIDR range such as 10.0.0.0/8 or 2001:db8::/32`)
  }
}

function firstFreePort (routes: ProxyRoute[], range: { from: number, to: number }): number {
  const taken = new Set(routes.filter(r => r.protocol === 'tcp').map(r => r.listenPort))
  for (let port = range.from; port <= range.to; port++) if (!taken.has(port)) return port
  throw new ProxyRouteConflictError(`every node port of the TCP route range ${range.from}-${range.to} is taken; delete a TCP route or widen proxy.tcpPortRange`)
}

function parseCidr (text: string): { address: string, prefix: number, family: 'ipv4' | 'ipv6' } | undefined {
  const [address, prefixText] = text.split('/')
  const version = isIP(address)
  if (version === 0) return undefined
  const max = version === 4 ? 32 : 128
  const prefix = prefixText == null ? max : Number(prefixText)
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return undefined
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' }
}

/** Who may connect to a private TCP route's listener: loopback, plus its allowFrom ranges. */
export function allowListOf (route: ProxyRoute): BlockList {
  const list = new BlockList()
  list.addSubnet('127.0.0.0', 8, 'ipv4')
  list.addAddress('::1', 'ipv6')
  for (const cidr of route.allowFrom ?? []) {
    const parsed = parseCidr(cidr)
    if (parsed != null) list.addSubnet(parsed.address, parsed.prefix, parsed.family)
  }
  return list
}
