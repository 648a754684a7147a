import type { Context, Next } from 'koa'
import type { Logger } from 'pino'
import { CorralError } from '../errors.ts'
import { setJsonBody } from './json-body.ts'

/**
 * The one place that turns errors into HTTP answers. Error classes keep stable names; this table
 * gives each a status. Anything unknown is a 500 whose details are logged, never sent.
 */
const statusByName: Record<string, number> = {
  RequestValidationError: 400,
  AuthValidationError: 400,
  VmRequestError: 400,
  PlacementRequestError: 400,
  ImageInvalidError: 400,
  UnsupportedBodyError: 415,
  InvalidCredentialsError: 401,
  UnauthenticatedError: 401,
  ForbiddenError: 403,
  RouteNotFoundError: 404,
  VmNotFoundError: 404,
  UserNotFoundError: 404,
  RoleNotFoundError: 404,
  ApiKeyNotFoundError: 404,
  ImageNotFoundError: 404,
  MethodNotAllowedError: 405,
  InvalidVmStateError: 409,
  InsufficientCapacityError: 409,
  VmNameTakenError: 409,
  UserExistsError: 409,
  RoleExistsError: 409,
  RoleInUseError: 409,
  BuiltinRoleError: 409,
  LastAdminError: 409,
  AuthNotStartedError: 503,
  ImageExistsError: 409,
  PayloadTooLargeError: 413,
  AccountLockedError: 429,
  HypervisorError: 502,
  VmNotFoundInDriverError: 502,
  GuestAgentUnavailableError: 503,
  PeerUnavailableError: 503,
  MeshNotRunningError: 503,
  MeshUnavailableError: 503,
  RpcMethodNotFoundError: 502,
  RpcProtocolError: 502,
  RpcTimeoutError: 504,
  // A node already ran as many calls from this one as an rpc channel allows; nothing ran, retry.
  RpcBusyError: 503,
  DriverUnavailableError: 503,
  ExecTimeoutError: 504,
  CatalogRequestError: 400,
  BundleInvalidError: 400,
  ChunkingParamsError: 400,
  ProviderConfigError: 400,
  CatalogAccessDeniedError: 403,
  CatalogImageNotFoundError: 404,
  CatalogVersionNotFoundError: 404,
  CatalogJobNotFoundError: 404,
  CatalogVersionExistsError: 409,
  PackGoneError: 409,
  ImageRevokedError: 409,
  ProviderError: 502,
  ObjectNotFoundError: 502,
  ManifestInvalidError: 502,
  ChunkCorruptError: 502,
  ChunkNotFoundError: 502,
  CatalogUnavailableError: 503,
  CacheFullError: 507,
  ProxyRequestError: 400,
  ProxyGrantInvalidError: 401,
  ProxyRouteNotFoundError: 404,
  ProxyRouteConflictError: 409,
  ProxyUpstreamError: 502,
  ProxyTunnelError: 502,
  ProxyVmNotRunningError: 503,
  ProxyHostUnavailableError: 503,
  ProxyUpstreamTimeoutError: 504,
  // The client went away (it cancelled, or its connection closed) before the answer: nginx's 499.
  RpcAbortedError: 499
}

export interface ProblemDocument {
  type: string
  title: string
  status: number
  detail: string
  [extra: string]: unknown
}

const kebab = (s: string): string => s.replace(/Error$/, '').replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase()

/** Status and problem document for any thrown value. */
export function toProblem (err: unknown): ProblemDocument {
  if (err instanceof CorralError && statusByName[err.name] != null) {
    const status = statusByName[err.name]
    return { ...err.details, type: `urn:corral:problem:${kebab(err.name)}`, title: err.name, status, detail: err.message }
  }
  if ((err as Error)?.name === 'AbortError') {
    return { type: 'urn:corral:problem:client-closed-request', title: 'ClientClosedRequest', status: 499, detail: 'the client went away before the answer was ready; the work was cancelled' }
  }
  // Errors from Koa and its body parser carry an HTTP status and a message meant for the client.
  // The parser's JSON syntax errors are plain SyntaxErrors given status 400 but no `expose`.
  const e = err as { status?: unknown, expose?: unknown, message?: unknown, type?: unknown }
  const badJson = err instanceof SyntaxError && e.status === 400
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500 && (e.expose === true || badJson)) {
    const detail = e.status === 413
      ? 'the request body is too large; send less (the node accepts up to api.maxBodyBytes)'
      : e.status === 400 ? `the request body is not valid JSON: ${String(e.message)}` : String(e.message)
    return { type: `urn:corral:problem:http-${e.status}`, title: String(e.message), status: e.status, detail }
  }
  return { type: 'urn:corral:problem:internal', title: 'InternalError', status: 500, detail: 'the node hit an unexpected error; its log has the details' }
}

export function problemMiddleware (logger: Logger, clock: () => number) {
  return async function problems (ctx: Context, next: Next): Promise<void> {
    try {
      await next()
    } catch (err) {
      const problem = toProblem(err)
      if (problem.status >= 500) logger.error({ err, method: ctx.method, path: ctx.path }, 'request failed')
      else logger.debug({ method: ctx.method, path: ctx.path, status: problem.status, problem: problem.title }, 'request refused')
      ctx.status = problem.status
      ctx.type = 'application/problem+json'
      setJsonBody(ctx, problem)
      if (problem.status === 429) {
        // A locked account says when it unlocks (retryAt); Retry-After tells HTTP clients the same.
        const seconds = typeof problem.retryAfterSeconds === 'number'
          ? problem.retryAfterSeconds
          : typeof problem.retryAt === 'string' ? Math.ceil((Date.parse(problem.retryAt) - clock()) / 1000) : NaN
        if (Number.isFinite(seconds)) ctx.set('retry-after', String(Math.max(1, seconds)))
      }
    }
  }
}
