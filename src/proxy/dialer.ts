/**
 * The proxy's core: given a VM and a guest port, a byte stream to that port. A VM on this node is
 * reached through the driver's port forward on loopback; a VM on another node through a tunnel to
 * that node (a libp2p stream of /corral/proxy/1.0.0), which makes the same local connection there
 * and pipes. Every connection is tracked per VM, so a VM that stops or goes away takes its
 * connections with it instead of leaving them hanging.
 */
import { connect as tcpConnect, type OnReadOpts, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { CorralError } from '../errors.ts'
import { MAX_HEADER_BYTES, MAX_TUNNEL_STREAMS, PROXY_PROTOCOL } from './constants.ts'
import {
  ProxyHostUnavailableError, ProxyTunnelError, ProxyUpstreamError, ProxyUpstreamTimeoutError, ProxyVmNotRunningError
} from './errors.ts'
import { DirectTunnels } from './direct-tunnels.ts'
import { FastRead } from './fast-read.ts'
import { jsonLine, readJsonLine } from './framing.ts'
import { splice } from './splice.ts'
import type { ConnectionInfo, ProxyMesh, ProxyTarget, VmDirectory, VmLocation } from './types.ts'

export interface DialerComponents {
  vms: VmDirectory
  mesh?: ProxyMesh
  logger: Logger
}

export interface DialerInit {
  connectTimeoutMs: number
  /** Direct TLS tunnels to other nodes (see direct-tunnels.ts); absent: mesh streams only. */
  tunnel?: { host: string, port: number, key: Uint8Array }
}

/** What a gateway asks the owning node for, as the first line of a tunnel. */
interface TunnelRequest {
  v: 1
  vm: string
  port: number
  subject: string
  client?: string
  via: ConnectionInfo['via']
}

type TunnelReply = { ok: true } | { ok: false, error: { name: string, message: string, details?: Record<string, unknown> } }

/**
 * Error names a host may send back that keep their meaning (and HTTP status) at the gateway.
 * Anything else is reported as the host being unavailable.
 */
const FORWARDED_NAMES = new Set([
  'ProxyVmNotRunningError', 'ProxyUpstreamError', 'ProxyUpstreamTimeoutError', 'ProxyHostUnavailableError',
  'VmNotFoundError', 'InvalidVmStateError', 'HypervisorError', 'VmNotFoundInDriverError'
])

/** An error raised on the host that runs the VM, re-raised at the gateway under its own name. */
export class ForwardedProxyError extends CorralError {
  constructor (name: string, message: string, details: Record<string, unknown>) {
    super(message, details)
    this.name = name
  }
}

export class Dialer {
  private readonly c: DialerComponents
  private readonly init: DialerInit
  /** Port forwards already made, per `${vm}:${port}`: asking the driver per connection is slow. */
  private readonly forwards = new Map<string, Promise<{ hostAddress: string, hostPort: number }>>()
  /** Open connections per VM: upstream sockets made here and tunnels served here. */
  private readonly open = new Map<string, Set<Duplex>>()
  private serving = false
  private direct: DirectTunnels | undefined

  constructor (components: DialerComponents, init: DialerInit) {
    this.c = components
    this.init = init
  }

  /** Serve tunnels other nodes open to VMs on this node. */
  async start (): Promise<void> {
    if (this.c.mesh == null || this.serving) return
    await this.c.mesh.handleStream(PROXY_PROTOCOL, (stream, peerId) => { void this.serveTunnel(stream, peerId) }, { maxStreams: MAX_TUNNEL_STREAMS })
    this.serving = true
    if (this.init.tunnel != null) {
      const direct = new DirectTunnels({ mesh: this.c.mesh, logger: this.c.logger, serve: (socket, peer) => { void this.serveTunnel(socket, peer) } }, { ...this.init.tunnel, connectTimeoutMs: this.init.connectTimeoutMs })
      try {
        await direct.start()
        this.direct = direct
      } catch (err) {
        this.c.logger.warn({ err: (err as Error).message, host: this.init.tunnel.host, port: this.init.tunnel.port }, 'direct proxy tunnels cannot listen; connections to VMs on other nodes go over the mesh (slower for bulk transfers)')
      }
    }
  }

  async stop (): Promise<void> {
    await this.direct?.stop().catch(() => undefined)
    this.direct = undefined
    if (this.serving) {
      this.serving = false
      await this.c.mesh?.unhandleStream(PROXY_PROTOCOL).catch(() => undefined)
    }
    for (const vm of [...this.open.keys()]) this.closeVm(vm)
    this.forwards.clear()
  }

  /**
   * A byte stream to the VM port, wherever the VM runs. Throws typed errors (see errors.ts).
   * `spliced`: the caller only splices it (never reads 'data'), so a local connection may read
   * through FastRead. `onread`: a local connection reads into this buffer and calls back instead
   * of emitting 'data' (a connection through a tunnel still emits 'data').
   */
  async dial (target: ProxyTarget, info: ConnectionInfo, options: { spliced?: boolean, onread?: OnReadOpts } = {}): Promise<Duplex> {
    const where = await this.locate(target.vm)
    const read = options.spliced === true ? 'fast' : options.onread
    const stream = where.local ? await this.dialLocal(target, read) : await this.dialRemote(where, target, info)
    this.track(target.vm, stream)
    return stream
  }

  /** Drops what is known of a VM and cuts its connections (it stopped, failed or was deleted). */
  closeVm (vm: string): void {
    for (const key of [...this.forwards.keys()]) if (key.startsWith(`${vm}:`)) this.forwards.delete(key)
    const streams = this.open.get(vm)
    if (streams == null) return
    this.open.delete(vm)
    for (const stream of streams) stream.destroy()
  }

  /** Connections open per VM, for tests and metrics. */
  openCount (vm?: string): number {
    if (vm != null) return this.open.get(vm)?.size ?? 0
    let n = 0
    for (const set of this.open.values()) n += set.size
    return n
  }

  private async locate (vm: string): Promise<VmLocation> {
    if (this.c.vms.locate == null) return { local: true }
    return await this.c.vms.locate(vm)
  }

  private track (vm: string, stream: Duplex): void {
    let set = this.open.get(vm)
    if (set == null) {
      set = new Set()
      this.open.set(vm, set)
    }
    set.add(stream)
    // Whoever uses the stream listens for its errors too; this keeps a late one from crashing us.
    stream.on('error', () => undefined)
    stream.once('close', () => {
      set.delete(stream)
      if (set.size === 0 && this.open.get(vm) === set) this.open.delete(vm)
    })
  }

  /** To a VM on this node: its port forward on loopback, made on first use. */
  private async dialLocal (target: ProxyTarget, read: 'fast' | OnReadOpts | undefined): Promise<Socket> {
    const vm = await this.c.vms.get(target.vm)
    if (vm.state !== 'running') throw notRunning(target, vm.state)
    const key = `${target.vm}:${target.port}`
    let forward = this.forwards.get(key)
    if (forward == null) {
      forward = this.c.vms.forwardPort(target.vm, target.port)
      this.forwards.set(key, forward)
      forward.catch(() => { if (this.forwards.get(key) === forward) this.forwards.delete(key) })
    }
    const { hostAddress, hostPort } = await forward
    try {
      return await connectTcp(hostAddress, hostPort, this.init.connectTimeoutMs, read)
    } catch (err) {
      this.forwards.delete(key)
      // A refused connection right after the VM stopped should say that, not "nothing listens".
      const now = await Promise.resolve(this.c.vms.get(target.vm)).catch(() => undefined)
      if (now != null && now.state !== 'running') throw notRunning(target, now.state)
      if ((err as Error).name === 'ProxyUpstreamTimeoutError') {
        throw new ProxyUpstreamTimeoutError(`port ${target.port} of VM ${target.vm} did not accept a connection within ${this.init.connectTimeoutMs} ms; the service in the VM may be overloaded or starting`, { vm: target.vm, port: target.port })
      }
      throw new ProxyUpstreamError(`nothing accepted the connection on port ${target.port} of VM ${target.vm} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); start the service on that port in the VM`, { vm: target.vm, port: target.port })
    }
  }

  /** To a VM on another node: a tunnel to that node, which connects on its side. */
  private async dialRemote (where: { peerId: string, nodeName: string }, target: ProxyTarget, info: ConnectionInfo): Promise<Duplex> {
    if (this.c.mesh == null) throw new ProxyHostUnavailableError(`VM ${target.vm} runs on ${where.nodeName}, and this node has no mesh to reach it`)
    let stream: Duplex | undefined = await this.direct?.open(where.peerId)
    try {
      stream ??= await this.c.mesh.openStream(where.peerId, PROXY_PROTOCOL, { signal: AbortSignal.timeout(this.init.connectTimeoutMs) })
    } catch (err) {
      throw new ProxyHostUnavailableError(`host ${where.nodeName} that runs VM ${target.vm} cannot be reached (${(err as Error).message}); retry when it is back`, { vm: target.vm, host: where.nodeName })
    }
    const request: TunnelRequest = { v: 1, vm: target.vm, port: target.port, subject: info.subject, client: info.client, via: info.via }
    stream.write(jsonLine(request))
    let reply: TunnelReply
    try {
      // The host may itself wait up to the connect timeout for the VM's port.
      reply = await readJsonLine<TunnelReply>(stream, MAX_HEADER_BYTES, this.init.connectTimeoutMs + 5000)
    } catch (err) {
      stream.destroy()
      throw new ProxyHostUnavailableError(`host ${where.nodeName} that runs VM ${target.vm} did not open the tunnel (${(err as Error).message})`, { vm: target.vm, host: where.nodeName })
    }
    if (!reply.ok) {
      stream.destroy()
      const { name, message, details } = reply.error
      if (FORWARDED_NAMES.has(name)) throw new ForwardedProxyError(name, message, { ...details, host: where.nodeName })
      throw new ProxyHostUnavailableError(`host ${where.nodeName} could not connect to VM ${target.vm}: ${message}`, { vm: target.vm, host: where.nodeName })
    }
    return stream
  }

  /** The host side of a tunnel (mesh stream or direct): check the VM is here, connect, answer, pipe. */
  private async serveTunnel (stream: Duplex, peerId: string): Promise<void> {
    stream.on('error', () => undefined)
    let request: TunnelRequest
    try {
      request = await readJsonLine<TunnelRequest>(stream, MAX_HEADER_BYTES, 10_000)
      if (request.v !== 1 || typeof request.vm !== 'string' || !Number.isInteger(request.port) || request.port < 1 || request.port > 65535) {
        throw new ProxyTunnelError('the tunnel header does not name a VM and port')
      }
    } catch (err) {
      this.c.logger.debug({ err, peer: peerId }, 'refused a malformed proxy tunnel')
      stream.destroy()
      return
    }
    const target = { vm: request.vm, port: request.port }
    let upstream: Socket
    try {
      const where = await this.locate(target.vm)
      if (!where.local) throw new ProxyHostUnavailableError(`VM ${target.vm} is no longer on this host (it is on ${where.nodeName}); retry`, { vm: target.vm })
      upstream = await this.dialLocal(target, 'fast')
    } catch (err) {
      const e = err as CorralError
      const reply: TunnelReply = { ok: false, error: { name: e.name ?? 'Error', message: e.message ?? String(err), details: e.details } }
      stream.end(jsonLine(reply))
      return
    }
    this.track(target.vm, stream)
    stream.write(jsonLine({ ok: true } satisfies TunnelReply))
    const started = performance.now()
    splice(stream, upstream, result => {
      this.c.logger.debug({
        vm: target.vm, port: target.port, subject: request.subject, client: request.client, via: request.via, gateway: peerId,
        bytesIn: result.aToB, bytesOut: result.bToA, ms: Math.round(performance.now() - started), error: result.error?.message
      }, 'proxy tunnel closed')
    })
  }
}

function notRunning (target: ProxyTarget, state: string): ProxyVmNotRunningError {
  return new ProxyVmNotRunningError(`VM ${target.vm} is ${state}, so nothing in it answers on port ${target.port}; start it (POST /api/v1/vms/${target.vm}/start) and retry`, { vm: target.vm, port: target.port, state })
}

/** A TCP connection with a bounded wait; half-open allowed so each side's end is passed on. */
async function connectTcp (host: string, port: number, timeoutMs: number, read: 'fast' | OnReadOpts | undefined): Promise<Socket> {
  return await new Promise<Socket>((resolve, reject) => {
    const options = { host, port, allowHalfOpen: true, noDelay: true }
    const socket = read === 'fast' ? new FastRead(options).socket : tcpConnect(read != null ? { ...options, onread: read } : options)
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new ProxyUpstreamTimeoutError(`no connection to ${host}:${port} within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.once('connect', () => {
      clearTimeout(timer)
      socket.removeListener('error', onError)
      resolve(socket)
    })
    const onError = (err: Error): void => {
      clearTimeout(timer)
      reject(err)
    }
    socket.once('error', onError)
  })
}
