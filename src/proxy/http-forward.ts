/**
 * HTTP on top of the dialer: Node's own HTTP client, with an agent whose connections come from the
 * dialer (so keep-alive pools per VM port, local or across the mesh), bodies streamed both ways
 * with backpressure, hop-by-hop headers dropped in both directions (RFC 9110 7.6.1), X-Forwarded-*
 * added, and corral's own credentials kept away from the VM. Upgrades (websockets) get their own
 * connection and are spliced raw after the VM's 101.
 */
import type { ClientRequest, ClientRequestArgs, IncomingMessage, RequestOptions, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { CorralError } from '../errors.ts'
import { DEFAULTS } from './constants.ts'
import type { Dialer } from './dialer.ts'
import { ProxyUpstreamError } from './errors.ts'
import { HOP_BY_HOP, requestHeadersForVm, responseHeadersForClient, withoutGrant } from './headers.ts'
import { splice } from './splice.ts'
import type { ConnectionInfo, HttpTarget, ProxyTarget } from './types.ts'

// Not imported: an ES module import of node:http loads undici (~3 MiB resident in every node), see
// src/api/server.ts.
const { Agent, request: httpRequest } = process.getBuiltinModule('node:http')

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS'])

/** Request options carry the target to the agent (Node hands them to getName and createConnection). */
interface TargetRequestOptions extends ClientRequestArgs {
  corralTarget: ProxyTarget
  corralInfo: ConnectionInfo
}

/** An agent that pools connections per VM port and makes them through the dialer. */
class DialerAgent extends Agent {
  private readonly dialer: Dialer

  constructor (dialer: Dialer) {
    super({ keepAlive: true, maxFreeSockets: DEFAULTS.maxIdleSocketsPerTarget, scheduling: 'lifo', timeout: DEFAULTS.idleSocketMs })
    this.dialer = dialer
  }

  override getName (options?: ClientRequestArgs): string {
    const target = (options as TargetRequestOptions).corralTarget
    return `${target.vm}:${target.port}`
  }

  // The callback form lets the connection be made asynchronously (a tunnel to another node).
  override createConnection (options: ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): undefined {
    const { corralTarget, corralInfo } = options as TargetRequestOptions
    this.dialer.dial(corralTarget, corralInfo).then(
      stream => { callback?.(null, socketLike(stream)) },
      (err: Error) => { callback?.(err, undefined as unknown as Duplex) }
    )
    return undefined
  }
}

export class HttpForwarder {
  private readonly dialer: Dialer
  private readonly logger: Logger
  private readonly agent: DialerAgent

  constructor (dialer: Dialer, logger: Logger) {
    this.dialer = dialer
    this.logger = logger
    this.agent = new DialerAgent(dialer)
  }

  close (): void {
    this.agent.destroy()
  }

  async forward (req: IncomingMessage, res: ServerResponse, target: HttpTarget, info: ConnectionInfo): Promise<void> {
    const headers = upstreamHeaders(req, target, info, false)
    const path = withoutGrant(target.upstreamPath)
    // A request with no body can be sent again when a pooled connection turns out to be closed.
    const bodiless = req.headers['content-length'] == null && req.headers['transfer-encoding'] == null
    const retryable = bodiless && IDEMPOTENT.has(req.method ?? '')
    await new Promise<void>((resolve, reject) => {
      let answered = false
      let clientGone = false
      let upstream: ClientRequest | undefined
      res.once('close', () => {
        if (!res.writableFinished) {
          clientGone = true
          upstream?.destroy()
        }
        resolve()
      })
      const attempt = (mayRetry: boolean): void => {
        const up = httpRequest({
          agent: this.agent, host: target.vm, port: target.port, method: req.method, path, headers, setHost: false,
          corralTarget: { vm: target.vm, port: target.port }, corralInfo: info
        } satisfies TargetRequestOptions as RequestOptions)
        upstream = up
        up.once('response', (answer: IncomingMessage) => {
          answered = true
          res.writeHead(answer.statusCode ?? 502, answer.statusMessage, responseHeadersForClient(answer.rawHeaders))
          answer.pipe(res)
          answer.once('error', () => { res.destroy() })
          answer.once('aborted', () => { res.destroy() })
        })
        up.once('error', (err: Error) => {
          if (clientGone) return
          if (answered) {
            res.destroy()
            return
          }
          if (mayRetry && up.reusedSocket && isConnectionReset(err)) {
            attempt(false)
            return
          }
          reject(upstreamError(err, target))
        })
        if (bodiless) up.end()
        else req.pipe(up)
      }
      attempt(retryable)
    })
  }

  async upgrade (req: IncomingMessage, socket: Duplex, head: Buffer, target: HttpTarget, info: ConnectionInfo): Promise<void> {
    const upstream = socketLike(await this.dialer.dial(target, info))
    const headers = upstreamHeaders(req, target, info, true)
    const started = performance.now()
    await new Promise<void>((resolve, reject) => {
      let settled = false
      const up = httpRequest({ createConnection: () => upstream, method: req.method, path: withoutGrant(target.upstreamPath), headers, setHost: false } satisfies RequestOptions)
      up.once('upgrade', (answer: IncomingMessage, upSocket: Duplex, upHead: Buffer) => {
        settled = true
        socket.write(statusLine(answer) + rawHeaderLines(answer.rawHeaders, true) + '\r\n')
        if (upHead.length > 0) socket.write(upHead)
        if (head.length > 0) upSocket.write(head)
        ;(socket as Socket).setNoDelay?.(true)
        splice(socket, upSocket, result => {
          this.logger.info({
            vm: target.vm, port: target.port, subject: info.subject, client: info.client, route: info.route, via: 'upgrade',
            bytesIn: result.aToB, bytesOut: result.bToA, ms: Math.round(performance.now() - started)
          }, 'proxy connection closed')
        })
        resolve()
      })
      up.once('response', (answer: IncomingMessage) => {
        // The VM refused the upgrade: pass its answer on, then close (the connection was for the upgrade).
        settled = true
        socket.write(statusLine(answer) + rawHeaderLines(answer.rawHeaders, false) + 'connection: close\r\n\r\n')
        answer.pipe(socket)
        answer.once('error', () => { socket.destroy() })
        resolve()
      })
      up.once('error', (err: Error) => {
        if (settled) {
          socket.destroy()
          return
        }
        settled = true
        reject(upstreamError(err, target))
      })
      socket.once('close', () => { if (!settled) up.destroy() })
      up.end()
    })
  }
}

/** The request's headers for the VM (headers.ts), from Node's parsed request. */
function upstreamHeaders (req: IncomingMessage, target: HttpTarget, info: ConnectionInfo, upgrade: boolean): string[] {
  return requestHeadersForVm(req.rawHeaders, {
    client: req.socket.remoteAddress ?? '',
    encrypted: (req.socket as { encrypted?: boolean }).encrypted === true,
    prefix: target.prefix,
    credentialHeader: info.credentialHeader,
    upgrade: upgrade ? String(req.headers.upgrade ?? 'websocket') : undefined
  })
}

/** Header lines of a raw answer written straight onto a socket (upgrades). */
function rawHeaderLines (raw: string[], keepUpgrade: boolean): string {
  let text = ''
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase()
    if (HOP_BY_HOP.has(lower) && !(keepUpgrade && (lower === 'connection' || lower === 'upgrade'))) continue
    if (!keepUpgrade && lower === 'content-length') continue
    text += `${raw[i]}: ${raw[i + 1]}\r\n`
  }
  return text
}

function statusLine (answer: IncomingMessage): string {
  return `HTTP/1.1 ${answer.statusCode ?? 502} ${answer.statusMessage ?? ''}\r\n`
}

function isConnectionReset (err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ECONNRESET' || code === 'EPIPE' || err.message === 'socket hang up'
}

function upstreamError (err: Error, target: ProxyTarget): Error {
  if (err instanceof CorralError) return err
  return new ProxyUpstreamError(`port ${target.port} of VM ${target.vm} closed the connection without answering (${(err as NodeJS.ErrnoException).code ?? err.message}); the service there may have crashed or refused the request`, { vm: target.vm, port: target.port })
}

/**
 * Node's HTTP client treats its connection as a net.Socket (keep-alive, no-delay, ref, timeouts).
 * A tunnel across the mesh is a plain Duplex: these are no-ops there (the VM's own keep-alive
 * timeout closes idle pooled tunnels, and that close travels back through the tunnel).
 */
function socketLike (stream: Duplex): Duplex {
  const s = stream as Duplex & Partial<Record<'setKeepAlive' | 'setNoDelay' | 'setTimeout' | 'ref' | 'unref', (...args: unknown[]) => unknown>>
  if (typeof s.setKeepAlive === 'function') return stream
  const self = (): Duplex => s
  s.setKeepAlive = self
  s.setNoDelay = self
  s.setTimeout = self
  s.ref = self
  s.unref = self
  return stream
}
