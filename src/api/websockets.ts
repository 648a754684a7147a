import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import type { Claim, Principal } from '../auth/index.ts'
import type { VmEvent } from '../scheduler/index.ts'
import type { ApiComponents } from './components.ts'
import { credentialOf } from './credentials.ts'
import { toProblem } from './problem.ts'
import { ExecRequest } from './schemas.ts'
import { validateInput } from './validate.ts'
import { RequestValidationError, RouteNotFoundError } from './errors.ts'
import { UnauthenticatedError } from '../auth/index.ts'

/** How long a client may take to send the exec request after connecting. */
const EXEC_REQUEST_WAIT_MS = 30_000

interface WsRoute {
  pattern: RegExp
  claim: Claim
  serve: (ws: WebSocket, match: RegExpExecArray, principal: Principal, url: URL) => void
}

/**
 * The websocket endpoints: GET /api/v1/events (every VM state change, as JSON) and
 * GET /api/v1/vms/{id}/exec (send one ExecRequest, receive output frames, then the exit code).
 */
export function createWebsocketGateway (components: ApiComponents) {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 })
  const routes: WsRoute[] = [
    { pattern: /^\/api\/v1\/events$/, claim: 'events:read', serve: (ws, _m, _p, url) => serveEvents(ws, url) },
    { pattern: /^\/api\/v1\/vms\/([^/]+)\/exec$/, claim: 'vm:exec', serve: (ws, m, p) => serveExec(ws, p.subject, decodePathSegment(m[1])) },
    { pattern: /^\/api\/v1\/catalog\/events$/, claim: 'catalog:read', serve: ws => serveCatalogEvents(ws, components) }
  ]

  function serveEvents (ws: WebSocket, url: URL): void {
    const only = url.searchParams.get('vm')
    const listener = (event: Event): void => {
      const detail = (event as CustomEvent<VmEvent>).detail
      if (only != null && detail.vm.id !== only) return
      ws.send(JSON.stringify(detail))
    }
    components.vms.addEventListener('vm', listener)
    ws.on('close', () => components.vms.removeEventListener('vm', listener))
    ws.on('error', () => ws.terminate())
    // Tells the client the subscription is live, so it cannot miss events sent after this.
    ws.send(JSON.stringify({ type: 'subscribed' }))
  }

  function serveExec (ws: WebSocket, caller: string, id: string): void {
    const abort = new AbortController()
    const wait = setTimeout(() => fail(new RequestValidationError('no exec request arrived within 30 s of connecting; send {"command": [...]} first')), EXEC_REQUEST_WAIT_MS)
    const fail = (err: unknown): void => {
      clearTimeout(wait)
      const problem = toProblem(err)
      if (problem.status >= 500 && problem.title === 'InternalError') components.logger.error({ err, vm: id }, 'websocket exec failed')
      if (ws.readyState === ws.OPEN) {
        ws.send(JSON.stringify({ type: 'error', problem }))
        ws.close(problem.status < 500 ? 4000 + problem.status : 1011, problem.title.slice(0, 100))
      }
    }
    ws.on('close', () => { clearTimeout(wait); abort.abort() })
    ws.on('error', () => ws.terminate())
    ws.once('message', (data, isBinary) => {
      clearTimeout(wait)
      void (async () => {
        let body: unknown
        try {
          body = JSON.parse(isBinary ? Buffer.from(data as Buffer).toString('utf8') : data.toString())
        } catch {
          fail(new RequestValidationError('the first message must be JSON: {"command": ["uname", "-a"]}'))
          return
        }
        try {
          const request = validateInput<{ command: string[], env?: Record<string, string>, timeoutSeconds?: number }>(ExecRequest, body, 'body')
          const result = await components.vms.exec(id, {
            ...request,
            caller,
            signal: abort.signal,
            onOutput: (stream, chunk) => { if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: stream, data: Buffer.from(chunk).toString('utf8') })) }
          })
          if (ws.readyState === ws.OPEN) {
            ws.send(JSON.stringify({ type: 'exit', exitCode: result.exitCode }))
            ws.close(1000, 'done')
          }
        } catch (err) {
          fail(err)
        }
      })()
    })
  }

  /** Handles an HTTP upgrade; refuses with a plain HTTP answer when the route or credential is wrong. */
  async function handleUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://corral')
    try {
      const route = routes.find(r => r.pattern.test(url.pathname))
      if (route == null) throw new RouteNotFoundError(`no websocket at ${url.pathname}; websockets are /api/v1/events and /api/v1/vms/{id}/exec`)
      const credential = credentialOf(req, url, true)
      if (credential == null) throw new UnauthenticatedError('this websocket needs a token: send Authorization: Bearer <token> or ?access_token=')
      const principal = await components.auth.authenticate(credential)
      components.auth.authorize(principal, route.claim)
      const match = route.pattern.exec(url.pathname) as RegExpExecArray
      wss.handleUpgrade(req, socket, head, ws => route.serve(ws, match, principal, url))
    } catch (err) {
      const problem = toProblem(err)
      const body = JSON.stringify(problem)
      socket.end(`HTTP/1.1 ${problem.status} ${problem.title}\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`)
    }
  }

  function close (): void {
    for (const client of wss.clients) client.terminate()
    wss.close()
  }

  return { handleUpgrade, close }
}

/**
 * Like the HTTP router: a segment that is not valid percent-encoding is taken as it is (and then
 * names no VM) instead of throwing after the upgrade, which would write HTTP onto a websocket.
 */
function decodePathSegment (segment: string): string {
  try {
    return decodeURIComponent(segment)
  } catch {
    return segment
  }
}

/** GET /api/v1/catalog/events: progress of every pull and push on this node, and catalog changes. */
function serveCatalogEvents (ws: WebSocket, components: ApiComponents): void {
  const catalog = components.catalog?.service
  if (catalog == null) {
    ws.close(4503, 'this node has no catalog')
    return
  }
  const progress = (event: Event): void => { ws.send(JSON.stringify({ type: 'catalog.progress', ...(event as CustomEvent).detail })) }
  const changed = (event: Event): void => { ws.send(JSON.stringify({ type: 'catalog.changed', ...(event as CustomEvent).detail })) }
  catalog.addEventListener('progress', progress)
  catalog.addEventListener('changed', changed)
  ws.on('close', () => {
    catalog.removeEventListener('progress', progress)
    catalog.removeEventListener('changed', changed)
  })
  ws.on('error', () => ws.terminate())
  ws.send(JSON.stringify({ type: 'subscribed' }))
}
