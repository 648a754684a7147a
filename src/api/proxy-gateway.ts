/**
 * The proxy's doors in the API server: HTTP requests for /proxy/vms/{id}/{port}/... or a VM host
 * name (Koa middleware mounted before the body parser and the router), their upgrades (websockets,
 * passed through raw), and the port-forward websocket GET /api/v1/vms/{id}/port-forward/{port}
 * that `corral port-forward` tunnels TCP over. Who may pass is decided here, with the same auth
 * service as every route: public routes are open; private ones take a token or API key (claim
 * vm:exec: reaching into a VM is as strong as running a command in it) or a signed grant.
 */
import type { IncomingMessage, Server } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Context, Next } from 'koa'
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws'
import { UnauthenticatedError, type Claim, type Principal } from '../auth/index.ts'
import {
  GRANT_COOKIE, GRANT_PARAM, type ConnectionInfo, type Http1Gate, type HttpTarget, type ProxyService, type ProxyTarget, type RequestHead
} from '../proxy/index.ts'
import type { ApiComponents } from './components.ts'
import { credentialOf } from './credentials.ts'
import { toProblem } from './problem.ts'

/** Reaching a port inside a VM gives the power of running commands in it. */
const CONNECT_CLAIM: Claim = 'vm:exec'
/**
 * A browser or a load test sends the same token with every request: checking its signature each
 * time costs more than proxying the request. Principals are remembered this long (so a revoked
 * token or a removed role can still pass for up to 5 s here), for at most this many credentials.
 */
const PRINCIPAL_CACHE_MS = 5000
const PRINCIPAL_CACHE_SIZE = 1000
const PORT_FORWARD = /^\/api\/v1\/vms\/(vm-[0-9a-f]{1,64})\/port-forward\/([0-9]{1,5})$/

/** Who is let through and how: the subject for the log, and what to strip or set on the way. */
interface Admission {
  subject: string
  credentialHeader?: 'authorization' | 'x-api-key'
  /** Set-Cookie value turning a signed URL into a cookie for the pages it loads next. */
  cookie?: string
  /** A remembered principal's admission holds until then (ms). */
  until?: number
}

/** What admission looks at, from Node's parsed request or the proxy's own HTTP path. */
interface AdmissionRequest {
  /** Path and query as sent. */
  url: string
  headers: { authorization?: string, 'x-api-key'?: string, cookie?: string }
  encrypted: boolean
}

const PUBLIC: Admission = { subject: 'public' }

export interface ProxyGateway {
  /**
   * Puts the proxy's own HTTP/1.1 path in front of the server: new connections go to it first,
   * and to the server's own handling from the first request that is not a proxied one.
   */
  attach: (server: Server) => void
  middleware: (ctx: Context, next: Next) => Promise<void>
  /** Takes the upgrade and returns true when it is the proxy's; false leaves it to the other gateways. */
  handleUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean
  close: () => void
}

export function createProxyGateway (components: ApiComponents, proxy: ProxyService): ProxyGateway {
  const { auth, logger } = components
  // Access-log lines hold only fields set here (method, path without query, status, time,
  // subject, VM port), never a secret: the logger's redaction, which costs more than the rest
  // of the line (~4 of ~6.5 us), has nothing to do on them.
  const accessLog = logger.child({}, { redact: { paths: [] } })
  // Tunnel frames are at most what the CLI reads at once from a socket (64 KiB); leave room.
  const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024, perMessageDeflate: false })
  const principals = new Map<string, { principal: Principal, until: number }>()
  /** Connections given to the proxy's own HTTP path (attach), open or handed over to Node's server. */
  const served = new Set<Socket>()
  /**
   * Per connection of that path, the last bearer admission: a client sends the same header with
   * every request, and finding its principal again (parse, hash a long token) costs ~1 us.
   */
  const lastBearer = new WeakMap<Socket, { authorization: string, info: ConnectionInfo, until: number }>()

  /** A principal remembered for this credential (see PRINCIPAL_CACHE_MS), if any, and until when. */
  function remembered (credential: string): { principal: Principal, until: number } | undefined {
    const known = principals.get(credential)
    return known != null && known.until > components.clock() ? known : undefined
  }

  /** auth.authenticate, remembered briefly per credential. */
  async function authenticate (credential: string): Promise<Principal> {
    const known = remembered(credential)
    if (known != null) return known.principal
    const principal = await auth.authenticate(credential)
    const now = components.clock()
    if (principals.size >= PRINCIPAL_CACHE_SIZE) {
      for (const [key, entry] of principals) if (entry.until <= now) principals.delete(key)
      if (principals.size >= PRINCIPAL_CACHE_SIZE) principals.delete(principals.keys().next().value as string)
    }
    principals.set(credential, { principal, until: now + PRINCIPAL_CACHE_MS })
    return principal
  }

  /**
   * Who may pass, known at once for a public route, a grant, or a remembered credential; a
   * promise when the credential must be checked. Throws (or rejects) to refuse.
   */
  function admit (req: AdmissionRequest, target: ProxyTarget): Admission | Promise<Admission> {
    if (proxy.isPublic(target, 'http')) return PUBLIC
    const signed = signedParam(req.url)
    if (signed != null) {
      const grant = proxy.verifyGrant(signed, target)
      const maxAge = Math.max(1, Math.floor((grant.expiresAt - components.clock()) / 1000))
      const path = req.url.startsWith('/proxy/') ? `/proxy/vms/${target.vm}/${target.port}/` : '/'
      const secure = req.encrypted ? '; Secure' : ''
      return { subject: `grant:${grant.subject}`, cookie: `${GRANT_COOKIE}=${signed}; Path=${path}; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure}` }
    }
    const cookies = grantCookies(req.headers.cookie)
    let cookieError: Error | undefined
    for (const value of cookies) {
      try {
        return { subject: `grant:${proxy.verifyGrant(value, target).subject}` }
      } catch (err) {
        cookieError = err as Error
      }
    }
    const credential = credentialOf(req, undefined, false)
    if (credential == null) {
      if (cookieError != null) throw cookieError
      throw new UnauthenticatedError(`port ${target.port} of VM ${target.vm} is private: send Authorization: Bearer <token> or X-Api-Key, or open a signed URL (POST /api/v1/proxy/grants); a route marked public needs none`)
    }
    const credentialHeader = typeof req.headers.authorization === 'string' && /^Bearer\s/i.test(req.headers.authorization) ? 'authorization' : 'x-api-key'
    const known = remembered(credential)
    if (known != null) {
      auth.authorize(known.principal, CONNECT_CLAIM)
      return { subject: known.principal.subject, credentialHeader, until: known.until }
    }
    return authenticate(credential).then(principal => {
      auth.authorize(principal, CONNECT_CLAIM)
      return { subject: principal.subject, credentialHeader }
    })
  }

  /** Admission from Node's parsed request (the full path). */
  async function admitNode (req: IncomingMessage, target: ProxyTarget): Promise<Admission> {
    const { authorization, cookie } = req.headers
    const apiKey = req.headers['x-api-key']
    return await admit({
      url: req.url ?? '/',
      headers: { authorization, cookie, 'x-api-key': typeof apiKey === 'string' ? apiKey : undefined },
      encrypted: (req.socket as { encrypted?: boolean }).encrypted === true
    }, target)
  }

  /** The proxy's own HTTP path asks here who may pass, how errors look, and logs with us. */
  function gateFor (server: Server, nodeConnection: (socket: Socket) => void): Http1Gate {
    return {
      admit: (head: RequestHead, target: HttpTarget, socket: Socket) => {
        const client = socket.remoteAddress
        if (proxy.isPublic(target, 'http')) return { subject: PUBLIC.subject, client, via: 'http' }
        // A signed URL's first visit sets its cookie: Node's path does that.
        if (signedParam(head.url) != null) return null
        const authorization = head.header('authorization')
        const cookie = head.header('cookie')
        // Grants come before credentials: the memo holds only for requests without one.
        const bearerOnly = authorization != null && (cookie == null || !cookie.includes(GRANT_COOKIE))
        if (bearerOnly) {
          const last = lastBearer.get(socket)
          if (last != null && last.authorization === authorization && last.until > components.clock()) return last.info
        }
        const admission = admit({ url: head.url, headers: { authorization, 'x-api-key': head.header('x-api-key'), cookie }, encrypted: false }, target)
        if (admission instanceof Promise) return admission.then(a => ({ subject: a.subject, client, via: 'http', credentialHeader: a.credentialHeader }))
        const info: ConnectionInfo = { subject: admission.subject, client, via: 'http', credentialHeader: admission.credentialHeader }
        if (bearerOnly && admission.credentialHeader === 'authorization' && admission.until != null) {
          lastBearer.set(socket, { authorization, info, until: admission.until })
        }
        return info
      },
      handover: (socket: Socket, unread: Buffer) => {
        socket.unshift(unread)
        nodeConnection.call(server, socket)
        socket.resume()
      },
      answer: (err: unknown, head: RequestHead) => {
        const problem = toProblem(err)
        const path = pathOf(head.url)
        // As the problem middleware logs the same answers on the full path.
        if (problem.status >= 500) logger.error({ err, method: head.method, path }, 'request failed')
        else logger.debug({ method: head.method, path, status: problem.status, problem: problem.title }, 'request refused')
        return { status: problem.status, contentType: 'application/problem+json; charset=utf-8', body: JSON.stringify(problem) }
      },
      done: ({ head, target, subject, status, ms }) => {
        // The access-log line the API writes for every request (server.ts), for this path.
        if (!accessLog.isLevelEnabled('info')) return
        accessLog.info({ method: head.method, path: pathOf(head.url), status, ms: round(ms), subject, proxy: { vm: target.vm, port: target.port } }, 'request')
      }
    }
  }

  function attach (server: Server): void {
    // Node's HTTP server takes its connections with one 'connection' listener; anything else is
    // a server this was not written for, which then keeps all its connections. (The API serves
    // plain HTTP: a TLS server's connections would need their own handling here.)
    const listeners = server.listeners('connection')
    if (listeners.length !== 1) return
    const nodeConnection = listeners[0] as (socket: Socket) => void
    const gate = gateFor(server, nodeConnection)
    const options = {
      get keepAliveTimeoutMs () { return server.keepAliveTimeout },
      get headersTimeoutMs () { return server.headersTimeout }
    }
    server.removeListener('connection', nodeConnection)
    server.on('connection', (socket: Socket) => {
      if (!proxy.serveHttp1(socket, gate, options)) {
        nodeConnection.call(server, socket)
        return
      }
      // The server's closeAllConnections() knows only its own: these are closed by close().
      served.add(socket)
      socket.once('close', () => { served.delete(socket) })
    })
  }

  async function middleware (ctx: Context, next: Next): Promise<void> {
    const target = proxy.httpTarget(ctx.req)
    if (target == null) {
      await next()
      return
    }
    ctx.state.proxy = { vm: target.vm, port: target.port }
    if (target.upstreamPath === '') {
      // /proxy/vms/{id}/{port} -> .../{port}/ so the VM's relative links resolve under the prefix.
      const q = ctx.url.indexOf('?')
      ctx.status = 308
      ctx.set('location', `${target.prefix}/${q < 0 ? '' : ctx.url.slice(q)}`)
      return
    }
    const admission = await admitNode(ctx.req, target)
    ctx.state.subject = admission.subject
    const info: ConnectionInfo = { subject: admission.subject, client: ctx.req.socket.remoteAddress, via: 'http', credentialHeader: admission.credentialHeader }
    if (admission.cookie != null) ctx.res.setHeader('set-cookie', admission.cookie)
    // From here the proxy writes the answer itself; if it fails before writing, the problem
    // middleware answers as for any route.
    ctx.respond = false
    try {
      await proxy.forward(ctx.req, ctx.res, target, info)
    } catch (err) {
      if (ctx.res.headersSent) return
      ctx.respond = true
      throw err
    }
  }

  function handleUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const path = (req.url ?? '/').split('?')[0]
    const forward = PORT_FORWARD.exec(path)
    if (forward != null) {
      void portForward(req, socket, head, { vm: forward[1], port: Number(forward[2]) })
      return true
    }
    const target = proxy.httpTarget(req)
    if (target == null) return false
    void upgrade(req, socket, head, target)
    return true
  }

  async function upgrade (req: IncomingMessage, socket: Duplex, head: Buffer, target: HttpTarget): Promise<void> {
    socket.on('error', () => undefined)
    const started = performance.now()
    let subject: string | undefined
    try {
      if (target.upstreamPath === '') throw new UnauthenticatedError(`websocket URLs through the proxy start with ${target.prefix}/`)
      const url = new URL(req.url ?? '/', 'http://corral')
      const admission = await admitNode(req, target)
      subject = admission.subject
      await proxy.upgrade(req, socket, head, target, { subject, client: req.socket.remoteAddress, via: 'upgrade', credentialHeader: admission.credentialHeader })
      accessLog.info({ method: req.method, path: url.pathname, status: 101, ms: round(performance.now() - started), subject, proxy: { vm: target.vm, port: target.port } }, 'request')
    } catch (err) {
      const status = refuse(socket, err)
      accessLog.info({ method: req.method, path: (req.url ?? '').split('?')[0], status, ms: round(performance.now() - started), subject, proxy: { vm: target.vm, port: target.port } }, 'request')
    }
  }

  async function portForward (req: IncomingMessage, socket: Duplex, head: Buffer, target: ProxyTarget): Promise<void> {
    socket.on('error', () => undefined)
    try {
      const url = new URL(req.url ?? '/', 'http://corral')
      const credential = credentialOf(req, url, true)
      if (credential == null) throw new UnauthenticatedError('port-forward needs a token: send Authorization: Bearer <token> or ?access_token=')
      const principal = await auth.authenticate(credential)
      auth.authorize(principal, CONNECT_CLAIM)
      // Connect to the VM before accepting the websocket, so a stopped VM or a closed port is an
      // HTTP answer the client can show, not a websocket that opens and dies.
      const tunnel = await proxy.tunnel(target, { subject: principal.subject, client: req.socket.remoteAddress, via: 'port-forward' })
      let attached = false
      socket.once('close', () => { if (!attached) tunnel.cancel() })
      wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
        attached = true
        tunnel.attach(createWebSocketStream(ws, { allowHalfOpen: true }))
      })
    } catch (err) {
      refuse(socket, err)
    }
  }

  /** An HTTP problem answer on a socket that was asking to upgrade. */
  function refuse (socket: Duplex, err: unknown): number {
    const problem = toProblem(err)
    if (problem.status >= 500 && problem.title === 'InternalError') logger.error({ err }, 'proxy upgrade failed')
    if (socket.writable) {
      const body = JSON.stringify(problem)
      socket.end(`HTTP/1.1 ${problem.status} ${problem.title}\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
    } else {
      socket.destroy()
    }
    return problem.status
  }

  function close (): void {
    for (const socket of served) socket.destroy()
    served.clear()
    for (const client of wss.clients) client.terminate()
    wss.close()
  }

  return { attach, middleware, handleUpgrade, close }
}

/** The signed-URL parameter of a request target, if it has one. */
function signedParam (url: string): string | null {
  const q = url.indexOf('?')
  if (q < 0 || !url.includes(GRANT_PARAM, q)) return null
  return new URLSearchParams(url.slice(q + 1)).get(GRANT_PARAM)
}

/** The path of a request target, as Koa's ctx.path gives it to the access log. */
function pathOf (url: string): string {
  const q = url.indexOf('?')
  return q < 0 ? url : url.slice(0, q)
}

/** Every value of corral's grant cookie in a Cookie header (there may be several paths' worth). */
function grantCookies (header: string | undefined): string[] {
  if (header == null || !header.includes(GRANT_COOKIE)) return []
  const values: string[] = []
  for (const part of header.split(';')) {
    const [name, ...rest] = part.trim().split('=')
    if (name === GRANT_COOKIE && rest.length > 0) values.push(rest.join('='))
  }
  return values
}

const round = (ms: number): number => Math.round(ms * 10) / 10
