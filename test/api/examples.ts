/**
 * One valid example request per route in the table, keyed "METHOD /path". Each builds fresh objects
 * for its path parameters (a VM to delete, a user to remove...), so every caller gets a request that
 * would succeed if they hold the route's claim. A route without an example fails the tests.
 */
import type { RouteDef } from '../../src/api/index.ts'
import type { ApiFixture, ApiResponse, Caller } from './fixture.ts'
import { IMAGE, PASSWORD } from './fixture.ts'

export interface ExampleRequest {
  /** Concrete path, with query string if any. */
  path: string
  body?: unknown
  /** Removes what the example or a successful call created; runs whatever the outcome. */
  cleanup?: (res: ApiResponse) => Promise<void>
}

export type Example = (fx: ApiFixture, caller: Caller) => Promise<ExampleRequest>

export const routeKey = (route: Pick<RouteDef, 'method' | 'path'>): string => `${route.method.toUpperCase()} ${route.path}`

let counter = 0
/** Names unique within the process: fresh objects for every call. */
export const unique = (prefix: string): string => `${prefix}-${process.pid}-${++counter}`

/** The user a caller acts as (anonymous callers get objects owned by admin). */
const userOf = (caller: Caller): string => caller === 'anonymous' ? 'admin' : caller

const ignore = async (work: () => Promise<unknown>): Promise<void> => { await work().catch(() => undefined) }
const removeVm = (fx: ApiFixture, id: string | undefined): Promise<void> => ignore(async () => { if (id != null) await fx.host.delete(id) })
const removeUser = (fx: ApiFixture, name: string): Promise<void> => ignore(() => fx.auth.deleteUser(name))
/** A catalog job the example started runs on in the background: let it finish before the next call. */
const waitForJob = (fx: ApiFixture, res: ApiResponse): Promise<void> => ignore(async () => { if (res.status === 202) await fx.catalog.waitForJob(res.body.id) })

export const examples: Record<string, Example> = {
  'POST /api/v1/auth/token': async () => ({ path: '/api/v1/auth/token', body: { username: 'viewer', password: PASSWORD } }),

  'GET /api/v1/users': async () => ({ path: '/api/v1/users' }),
  'POST /api/v1/users': async (fx) => {
    const username = unique('new-user')
    return { path: '/api/v1/users', body: { username, password: PASSWORD, roles: ['ci'] }, cleanup: () => removeUser(fx, username) }
  },
  'GET /api/v1/users/:username': async () => ({ path: '/api/v1/users/viewer' }),
  'DELETE /api/v1/users/:username': async (fx) => {
    const username = unique('doomed-user')
    await fx.auth.createUser({ username, password: PASSWORD, roles: ['viewer'] })
    return { path: `/api/v1/users/${username}`, cleanup: () => removeUser(fx, username) }
  },

  'GET /api/v1/roles': async () => ({ path: '/api/v1/roles' }),
  'POST /api/v1/roles': async (fx) => {
    const name = unique('role')
    return { path: '/api/v1/roles', body: { name, claims: ['vm:read'], description: 'made by a test' }, cleanup: () => ignore(() => fx.auth.deleteRole(name)) }
  },
  'DELETE /api/v1/roles/:name': async (fx) => {
    const name = unique('doomed-role')
    await fx.auth.createRole({ name, claims: ['vm:read'] })
    return { path: `/api/v1/roles/${name}`, cleanup: () => ignore(() => fx.auth.deleteRole(name)) }
  },

  'GET /api/v1/api-keys': async () => ({ path: '/api/v1/api-keys' }),
  'POST /api/v1/api-keys': async (fx) => ({
    path: '/api/v1/api-keys',
    body: { name: unique('key') },
    cleanup: (res) => ignore(async () => { if (res.status === 201) await fx.auth.deleteApiKey(res.body.id) })
  }),
  'DELETE /api/v1/api-keys/:id': async (fx, caller) => {
    // The caller's own key: revoking someone else's needs user:write on top of the route's claim.
    const key = await fx.auth.createApiKey({ username: userOf(caller), name: unique('doomed-key') })
    return { path: `/api/v1/api-keys/${key.id}`, cleanup: () => ignore(() => fx.auth.deleteApiKey(key.id)) }
  },

  'GET /api/v1/images': async () => ({ path: '/api/v1/images' }),
  'POST /api/v1/images': async () => ({ path: '/api/v1/images', body: { name: unique('image'), path: '/var/lib/corral/images/test.qcow2' } }),

  'GET /api/v1/vms': async () => ({ path: '/api/v1/vms' }),
  'POST /api/v1/vms': async (fx) => ({
    path: '/api/v1/vms?wait=true',
    body: { image: IMAGE, name: unique('vm'), cpus: 1, memoryMiB: 512, labels: { suite: 'api' } },
    cleanup: (res) => removeVm(fx, res.body?.id)
  }),
  'GET /api/v1/vms/:id': async (fx) => {
    const vm = await fx.createVm()
    return { path: `/api/v1/vms/${vm.id}`, cleanup: () => removeVm(fx, vm.id) }
  },
  'DELETE /api/v1/vms/:id': async (fx) => {
    const vm = await fx.createVm()
    return { path: `/api/v1/vms/${vm.id}`, cleanup: () => removeVm(fx, vm.id) }
  },
  'POST /api/v1/vms/:id/exec': async (fx) => {
    const vm = await fx.createVm()
    return { path: `/api/v1/vms/${vm.id}/exec`, body: { command: ['echo', 'hello'], env: { CI: 'true' }, timeoutSeconds: 30 }, cleanup: () => removeVm(fx, vm.id) }
  },
  'POST /api/v1/vms/:id/:action': async (fx) => {
    const vm = await fx.createVm()
    return { path: `/api/v1/vms/${vm.id}/stop`, cleanup: () => removeVm(fx, vm.id) }
  },

  'GET /api/v1/hosts': async () => ({ path: '/api/v1/hosts' }),
  'GET /api/v1/cluster': async () => ({ path: '/api/v1/cluster' }),
  'GET /api/v1/cluster/join-token': async () => ({ path: '/api/v1/cluster/join-token' }),

  'GET /api/v1/catalog': async () => ({ path: '/api/v1/catalog' }),
  'GET /api/v1/catalog/jobs': async () => ({ path: '/api/v1/catalog/jobs' }),
  'GET /api/v1/catalog/jobs/:job': async (fx) => {
    const job = fx.catalog.startPull(await fx.catalogImage(unique('img')), { subject: 'admin', claims: new Set(['catalog:write']), roles: [] })
    await fx.catalog.waitForJob(job.id)
    return { path: `/api/v1/catalog/jobs/${job.id}` }
  },
  'GET /api/v1/catalog/cache': async () => ({ path: '/api/v1/catalog/cache' }),
  'POST /api/v1/catalog/cache/prune': async () => ({ path: '/api/v1/catalog/cache/prune', body: {} }),
  'POST /api/v1/catalog/gc': async () => ({ path: '/api/v1/catalog/gc', body: { dryRun: true } }),
  'POST /api/v1/catalog/push': async (fx) => ({
    path: '/api/v1/catalog/push',
    body: { path: fx.catalogBundle, id: unique('pushed'), version: '1.0', tags: ['latest', 'stable'], description: 'an example', requiredClaims: ['catalog:read'] },
    cleanup: (res) => waitForJob(fx, res)
  }),
  'POST /api/v1/catalog/import': async (fx) => ({ path: '/api/v1/catalog/import', body: { provider: 'folder', prefix: unique('pds-packs') }, cleanup: (res) => waitForJob(fx, res) }),
  'GET /api/v1/catalog/:id': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}` }),
  'PUT /api/v1/catalog/:id': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}`, body: { description: 'changed', requiredClaims: ['vm:write'] } }),
  'DELETE /api/v1/catalog/:id': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}` }),
  'DELETE /api/v1/catalog/:id/versions/:version': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}/versions/1.0` }),
  'POST /api/v1/catalog/:id/tags': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}/tags`, body: { tag: 'stable', version: '1.0' } }),
  'DELETE /api/v1/catalog/:id/tags/:tag': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}/tags/latest` }),
  'POST /api/v1/catalog/:id/revoke': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}/revoke`, body: { version: '1.0', reason: 'CVE-2024-0001' } }),
  'POST /api/v1/catalog/:id/restore': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}/restore`, body: {} }),
  'POST /api/v1/catalog/:id/pull': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}/pull`, body: { version: '1.0' }, cleanup: (res) => waitForJob(fx, res) }),
  'POST /api/v1/catalog/:id/prefetch': async (fx) => ({ path: `/api/v1/catalog/${await fx.catalogImage(unique('img'))}/prefetch`, body: { hostLabels: { rack: 'a' } } }),
  'GET /api/v1/proxy/routes': async () => ({ path: '/api/v1/proxy/routes' }),
  'POST /api/v1/proxy/routes': async (fx) => {
    const vm = await fx.createVm()
    return {
      path: '/api/v1/proxy/routes',
      body: { vm: vm.id, port: 80, protocol: 'http', public: true },
      cleanup: async (res) => { await ignore(async () => { if (res.status === 201) await fx.proxy.deleteRoute(res.body.id, 'test') }); await removeVm(fx, vm.id) }
    }
  },
  'GET /api/v1/proxy/routes/:id': async (fx) => {
    const vm = await fx.createVm()
    const route = await fx.proxy.createRoute({ vm: vm.id, port: 22, protocol: 'tcp' }, 'admin')
    return { path: `/api/v1/proxy/routes/${route.id}`, cleanup: async () => { await ignore(() => fx.proxy.deleteRoute(route.id, 'test')); await removeVm(fx, vm.id) } }
  },
  'DELETE /api/v1/proxy/routes/:id': async (fx) => {
    const vm = await fx.createVm()
    const route = await fx.proxy.createRoute({ vm: vm.id, port: 8080, protocol: 'http' }, 'admin')
    return { path: `/api/v1/proxy/routes/${route.id}`, cleanup: async () => { await ignore(() => fx.proxy.deleteRoute(route.id, 'test')); await removeVm(fx, vm.id) } }
  },
  'POST /api/v1/proxy/grants': async (fx) => {
    const vm = await fx.createVm()
    return { path: '/api/v1/proxy/grants', body: { vm: vm.id, port: 80, ttlSeconds: 60 }, cleanup: () => removeVm(fx, vm.id) }
  }
}
