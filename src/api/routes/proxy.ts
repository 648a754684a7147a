import { Type } from '@sinclair/typebox'
import type { Context } from 'koa'
import type { ProxyService } from '../../proxy/index.ts'
import type { ApiComponents } from '../components.ts'
import type { RouteDef } from '../route.ts'
import { IdParams, listOf } from '../schemas.ts'

const VmId = Type.String({ pattern: '^vm-[0-9a-f]{1,64}$', description: 'the VM id (GET /api/v1/vms)' })
const GuestPort = Type.Integer({ minimum: 1, maximum: 65535, description: 'port inside the VM' })

const CreateRoute = Type.Object({
  vm: VmId,
  port: GuestPort,
  protocol: Type.Union([Type.Literal('http'), Type.Literal('tcp')], { description: 'http: reached through the API port by path and host name; tcp: a node port on every node' }),
  public: Type.Optional(Type.Boolean({ description: 'open to anyone (default false: HTTP needs a token, API key or signed URL; TCP accepts loopback and allowFrom only)' })),
  listenPort: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'tcp: the node port (default the first free one of proxy.tcpPortRange)' })),
  allowFrom: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 64, description: 'tcp, private: source addresses or CIDR ranges accepted besides loopback' })),
  description: Type.Optional(Type.String({ maxLength: 256 }))
}, { additionalProperties: false })

const Route = Type.Object({
  id: Type.String(), vm: Type.String(), port: Type.Integer(), protocol: Type.String(), public: Type.Boolean(),
  listenPort: Type.Optional(Type.Integer()), allowFrom: Type.Optional(Type.Array(Type.String())), description: Type.Optional(Type.String()),
  createdBy: Type.String(), createdAt: Type.String(),
  urls: Type.Array(Type.String(), { description: 'where this node serves the route' }),
  listening: Type.Optional(Type.Object({ address: Type.Optional(Type.String()), error: Type.Optional(Type.String()) }))
})

const CreateGrant = Type.Object({
  vm: VmId,
  port: GuestPort,
  ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400, description: 'default 900; at most proxy.signedUrlMaxSeconds' }))
}, { additionalProperties: false })

const Grant = Type.Object({
  url: Type.String({ description: 'open it without any credential until expiresAt; it sets a cookie for the pages it loads' }),
  path: Type.String(),
  expiresAt: Type.String()
})

/** How the caller reached this node (Koa 3's ctx.origin is the Origin header, not this). */
const originOf = (ctx: Context): string => `${ctx.protocol}://${ctx.host}`

/** Proxy routes (cluster-wide) and signed URLs. Proxied traffic itself goes through proxy-gateway.ts. */
export function proxyRoutes (proxy: ProxyService, { vms }: ApiComponents): RouteDef[] {
  return [
    {
      method: 'get', path: '/api/v1/proxy/routes', claim: 'proxy:read', tag: 'proxy', summary: 'List proxy routes (HTTP and TCP) of the cluster',
      success: { status: 200, schema: listOf(Route), description: 'every route, with where this node serves it' },
      handler: ({ ctx }) => ({ body: { items: proxy.listRoutes(originOf(ctx)) } })
    },
    {
      method: 'post', path: '/api/v1/proxy/routes', claim: 'proxy:write', tag: 'proxy', summary: 'Make a route to a VM port: public HTTP, or a TCP node port on every node',
      body: CreateRoute, success: { status: 201, schema: Route, description: 'the route, served by every node' },
      handler: async ({ body, principal, ctx }) => {
        const route = await proxy.createRoute(body, principal.subject, originOf(ctx))
        ctx.set('location', `/api/v1/proxy/routes/${route.id}`)
        return { status: 201, body: route }
      }
    },
    {
      method: 'get', path: '/api/v1/proxy/routes/:id', claim: 'proxy:read', tag: 'proxy', summary: 'Get a proxy route',
      params: IdParams, success: { status: 200, schema: Route, description: 'the route' },
      handler: ({ params, ctx }) => ({ body: proxy.getRoute(params.id, originOf(ctx)) })
    },
    {
      method: 'delete', path: '/api/v1/proxy/routes/:id', claim: 'proxy:write', tag: 'proxy', summary: 'Delete a proxy route (every node stops serving it)',
      params: IdParams, success: { status: 204, description: 'deleted' },
      handler: async ({ params, principal }) => { await proxy.deleteRoute(params.id, principal.subject); return { status: 204 } }
    },
    {
      method: 'post', path: '/api/v1/proxy/grants', claim: 'vm:exec', tag: 'proxy', summary: 'A short-lived signed URL to a VM port, usable without a credential',
      body: CreateGrant, success: { status: 201, schema: Grant, description: 'the signed URL' },
      handler: async ({ body, principal, ctx }) => {
        await vms.get(body.vm)
        const signed = proxy.sign({ vm: body.vm, port: body.port }, principal.subject, body.ttlSeconds)
        return { status: 201, body: { url: originOf(ctx) + signed.url, path: signed.url, expiresAt: signed.expiresAt } }
      }
    }
  ]
}
