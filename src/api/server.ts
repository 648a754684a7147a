import type { Server } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import Koa, { type Context, type Next } from 'koa'
import type KoaRouter from '@koa/router'
import { bodyParser } from '@koa/bodyparser'
import type { ApiComponents, ApiInit } from './components.ts'
import type { RouteDef } from './route.ts'
import { problemMiddleware } from './problem.ts'
import { credentialOf } from './credentials.ts'
import { setJsonBody } from './json-body.ts'
import { validateInput } from './validate.ts'
import { buildOpenApi } from './openapi.ts'
import { createWebsocketGateway } from './websockets.ts'
import { createProxyGateway } from './proxy-gateway.ts'
import { proxyRoutes } from './routes/proxy.ts'
import { MethodNotAllowedError, RouteNotFoundError, UnsupportedBodyError } from './errors.ts'
import { UnauthenticatedError } from '../auth/index.ts'
import { authRoutes } from './routes/auth.ts'
import { vmRoutes } from './routes/vms.ts'
import { clusterRoutes } from './routes/cluster.ts'
import { catalogRoutes } from './routes/catalog.ts'

// node:http comes from process.getBuiltinModule and @koa/router from require, not from import. An
// ES module import of node:http makes Node build that module's ESM facade, which reads every
// export, and http's lazy WebSocket and EventSource exports then load undici, with http2, web
// streams and perf_hooks: ~3 MiB kept by every node, which uses none of them (bench/mesh-idle-
// memory). @koa/router's ES build imports node:http, its CommonJS build requires it.
// (src/proxy/http-forward.ts does the same.)
const { createServer } = process.getBuiltinModule('node:http')
const Router = createRequire(import.meta.url)('@koa/router') as typeof KoaRouter

export interface ApiServer {
  start: () => Promise<void>
  stop: () => Promise<void>
  /** host:port actually listened on (after start). */
  address: () => string
  routes: RouteDef[]
}

/** Every REST route; exported for the OpenAPI document and the route-by-role test. */
export function apiRoutes (components: ApiComponents): RouteDef[] {
  return [...authRoutes(components), ...vmRoutes(components), ...clusterRoutes(components), ...catalogRoutes(components), ...(components.proxy != null ? proxyRoutes(components.proxy, components) : [])]
}

export function createApiServer (components: ApiComponents, init: ApiInit): ApiServer {
  const { logger } = components
  const routes = apiRoutes(components)
  // Built when first asked for: most nodes never are, and it is ~0.3 MB of heap kept for good.
  let openapi: Record<string, unknown> | undefined
  const app = new Koa({ proxy: false })
  const router = new Router()

  app.use(accessLog(components))
  app.use(problemMiddleware(logger, components.clock))
  // Proxied requests go to the VM before the body parser could read their bodies.
  const proxyGateway = components.proxy != null ? createProxyGateway(components, components.proxy) : undefined
  if (proxyGateway != null) app.use(proxyGateway.middleware)
  app.use(bodyParser({ enableTypes: ['json'], jsonLimit: init.maxBodyBytes, jsonStrict: true, encoding: 'utf-8' }))

  router.get('/health', (ctx: Context) => { setJsonBody(ctx, { status: 'ok', version: init.version }) })
  router.get('/api/openapi.json', (ctx: Context) => { setJsonBody(ctx, openapi ??= buildOpenApi(routes, init.version)) })
  for (const route of routes) router[route.method](route.path, handlerFor(route, components))

  // After the router has had its say: allowedMethods sets 405/501 with an Allow header, or leaves
  // Koa's default 404 when no route matched. Both become problems here, keeping Allow.
  app.use(async function unrouted (ctx: Context, next: Next): Promise<void> {
    await next()
    const allow = ctx.response.get('allow')
    if (ctx.status === 501) throw new MethodNotAllowedError(`the HTTP method ${ctx.method} is not supported; GET /api/openapi.json lists every route and its methods`, { allow })
    if (ctx.status === 405) throw new MethodNotAllowedError(`${ctx.path} does not take ${ctx.method}; it takes ${allow} (GET /api/openapi.json lists every route)`, { allow })
    if (ctx.status === 404 && ctx.body == null) throw new RouteNotFoundError(`no route ${ctx.method} ${ctx.path}; GET /api/openapi.json lists every route`)
  })
  app.use(router.routes())
  app.use(router.allowedMethods())

  const websockets = createWebsocketGateway(components)
  let server: Server | undefined

  return {
    routes,
    async start () {
      const { host, port } = splitAddr(init.addr)
      server = createServer(app.callback())
      server.requestTimeout = 0 // exec and ?wait=true may legitimately take long; clients set their own limits
      server.headersTimeout = 30_000
      // Proxied requests are served by the proxy's own HTTP/1.1 path; the rest as before.
      proxyGateway?.attach(server)
      server.on('upgrade', (req, socket, head) => {
        if (proxyGateway?.handleUpgrade(req, socket, head) === true) return
        void websockets.handleUpgrade(req, socket, head)
      })
      await new Promise<void>((resolve, reject) => {
        server?.once('error', reject)
        server?.listen(port, host, () => resolve())
      })
    },
    async stop () {
      websockets.close()
      proxyGateway?.close()
      if (server == null) return
      const s = server
      server = undefined
      s.closeAllConnections()
      await new Promise<void>(resolve => s.close(() => resolve()))
    },
    address () {
      const a = server?.address() as AddressInfo | null
      if (a == null) return init.addr
      return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
    }
  }
}

/** Authenticate, authorise, validate, then run the handler; errors go to the one problem middleware. */
function handlerFor (route: RouteDef, components: ApiComponents) {
  return async function handle (ctx: Context): Promise<void> {
    let principal
    if (route.claim != null) {
      const credential = credentialOf(ctx.req, new URL(ctx.href), false)
      if (credential == null) throw new UnauthenticatedError('this route needs a token: send Authorization: Bearer <token> (POST /api/v1/auth/token gives one) or an API key')
      principal = await components.auth.authenticate(credential)
      components.auth.authorize(principal, route.claim)
      ctx.state.subject = principal.subject
    }
    const params = route.params != null ? validateInput(route.params, { ...ctx.params }, 'path') : {}
    const query = route.query != null ? validateInput(route.query, { ...ctx.query }, 'query') : {}
    let body: unknown
    if (route.body != null) {
      if (!ctx.is('application/json')) throw new UnsupportedBodyError('send the request body as JSON with Content-Type: application/json')
      body = validateInput(route.body, (ctx.request as unknown as { body: unknown }).body, 'body')
    }
    const result = await route.handler({ body, params, query, principal: principal as NonNullable<typeof principal>, ctx })
    ctx.status = result.status ?? 200
    if (result.body !== undefined) setJsonBody(ctx, result.body)
  }
}

/** One line per request: who, what, how it ended and how long it took. Never headers or bodies. */
function accessLog (components: ApiComponents) {
  // Only the fields below, none a secret: redaction (most of a line's cost) is skipped.
  const logger = components.logger.child({}, { redact: { paths: [] } })
  return async function log (ctx: Context, next: Next): Promise<void> {
    const started = performance.now()
    try {
      await next()
    } finally {
      const ms = Math.round((performance.now() - started) * 10) / 10
      const line = { method: ctx.method, path: ctx.path, status: ctx.status, ms, subject: ctx.state.subject as string | undefined, proxy: ctx.state.proxy as object | undefined }
      if (ctx.path === '/health') logger.trace(line, 'request')
      else logger.info(line, 'request')
    }
  }
}

function splitAddr (addr: string): { host: string, port: number } {
  const i = addr.lastIndexOf(':')
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(addr.slice(i + 1)) }
}
