import type { TSchema } from '@sinclair/typebox'
import type { Context } from 'koa'
import type { Claim, Principal } from '../auth/index.ts'

export type HttpMethod = 'get' | 'post' | 'put' | 'delete'

export interface RouteRequest<B = any, P = any, Q = any> {
  body: B
  params: P
  query: Q
  /** Undefined only on public routes. */
  principal: Principal
  ctx: Context
}

export interface RouteResponse {
  status?: number
  body?: unknown
}

/**
 * One REST route, declared once: Koa registers it, the OpenAPI document describes it, the auth
 * middleware enforces its claim, and the route-by-role test calls it.
 */
export interface RouteDef {
  method: HttpMethod
  /** Koa-router style, e.g. /api/v1/vms/:id */
  path: string
  /** The claim a caller needs; null for the few public routes. */
  claim: Claim | null
  summary: string
  tag: string
  body?: TSchema
  params?: TSchema
  query?: TSchema
  /** Status and schema of a successful answer. */
  success: { status: number, schema?: TSchema, description: string }
  handler: (req: RouteRequest) => Promise<RouteResponse> | RouteResponse
}
