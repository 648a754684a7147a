/**
 * The proxy's doors in the API server: HTTP requests for /proxy/vms/{id}/{port}/... or a VM host
 * name (Koa middleware mounted before the body parser and the router), their upgrades (websockets,
 * passed through raw), and the port-forward websocket GET /api/v1/vms/{id}/port-forward/{port}
 * that `corral port-forward` tunnels TCP over. Who may pass is decided here, with the same auth
 * service as every route: public routes are open; private ones take a token or API key (claim
 * vm:exec: reaching into a VM is as strong as running a command in it) or a signed grant.
 */
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Context, Next } from 'koa'
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws'
import { UnauthenticatedError, type Claim, type Principal } from '../auth/index.ts'
import { GRANT_COOKIE, GRANT_PARAM, type ConnectionInfo, type HttpTarget, type ProxyService, type ProxyTarget } from '../proxy/index.ts'
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
}

export interface ProxyGateway {
  middleware: (ctx: Context, next: Next) => Promise<void>
  /** Takes the upgrade and returns true when it is the proxy's; false leaves it to the other gateways. */
  handleUpgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean
  close: () => void
}

export function createProxyGateway (components: ApiComponents, proxy: ProxyService): ProxyGateway {
  const { auth, logger } = components
  // Tunnel frames are at most what the CLI reads at once from a socket (64 KiB); leave room.
  const wss = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024, perMessageDeflate: false })
  const principals = new Map<string, { principal: Principal, until: number }>()

  /** auth.authenticate, remembered briefly per credential (see PRINCIPAL_CACHE_MS). */
  async function authenticate (credential: string): Promise<Principal> {
    const now = components.clock()
    const known = principals.get(credential)
    if (known != null && known.until > now) return known.principal
    const principal = await auth.authenticate(credential)
    if (principals.size >= PRINCIPAL_CACHE_SIZE) {
      for (const [key, entry] of principals) if (entry.until <= now) principals.delete(key)
      if (principals.size >= PRINCIPAL_CACHE_SIZE) principals.delete(principals.keys().next().value as string)
    }
    principals.set(credential, { principal, until: now + PRINCIPAL_CACHE_MS })
    return principal
  }

  async function admit (req: IncomingMessage, target: ProxyTarget, url: URL): Promise<Admission> {
    if (proxy.isPublic(target, 'http')) return { subject: 'public' }
    const signed = url.searchParams.get(GRANT_PARAM)
    if (signed != null) {
      const grant = proxy.verifyGrant(signed, target)
      const maxAge = Math.max(1, Math.floor((grant.expiresAt - components.clock()) / 1000))
      const path = url.pathname.startsWith('/proxy/') ? `/proxy/vms/${target.vm}/${target.port}/` : '/'
      const secure = (req.socket as { encrypted?: boolean }).encrypted === true ? '; Secure' : ''
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
    const credential = credentialOf(req, url, false)
    if (credential == null) {
      if (cookieError != null) throw cookieError
      throw new UnauthenticatedError(`port ${target.port} of VM ${target.vm} is private: send Authorization: Bearer <token> or X-Api-Key, or open a signed URL (POST /api/v1/proxy/grants); a route marked public needs none`)
    }
    const principal = await authenticate(credential)
    auth.authorize(principal, CONNECT_CLAIM)
    return { subject: principal.subject, credentialHeader: typeof req.headers.authorization === 'string' && /^Bearer\s/i.test(req.headers.authorization) ? 'authorization' : 'x-api-key' }
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
    const admission = await admit(ctx.req, target, new URL(ctx.href))
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
      const admission = await admit(req, target, url)
      subject = admission.subject
      await proxy.upgrade(req, socket, head, target, { subject, client: req.socket.remoteAddress, via: 'upgrade', credentialHeader: admission.credentialHeader })
      logger.info({ method: req.method, path: url.pathname, status: 101, ms: round(performance.now() - started), subject, proxy: { vm: target.vm, port: target.port } }, 'request')
    } catch (err) {
      const status = refuse(socket, err)
      logger.info({ method: req.method, path: (req.url ?? '').split('?')[0], status, ms: round(performance.now() - started), subject, proxy: { vm: target.vm, port: target.port } }, 'request')
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
    for (const client of wss.clients) client.terminate()
    wss.close()
  }

  return { middleware, handleUpgrade, close }
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
