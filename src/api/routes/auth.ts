import type { ApiComponents } from '../components.ts'
import type { RouteDef } from '../route.ts'
import { RequestValidationError } from '../errors.ts'
import { ApiKey, CreateApiKey, CreatedApiKey, CreateRole, CreateUser, IdParams, listOf, NameParams, Role, TokenGrant, TokenRequest, User, UsernameParams } from '../schemas.ts'

/** Tokens, users, roles and API keys. */
export function authRoutes ({ auth }: ApiComponents): RouteDef[] {
  return [
    {
      method: 'post', path: '/api/v1/auth/token', claim: null, tag: 'auth', summary: 'Exchange a username and password, or an API key, for a token',
      body: TokenRequest, success: { status: 200, schema: TokenGrant, description: 'a signed token and when it expires' },
      handler: async ({ body }) => {
        if (body.apiKey != null && body.username == null && body.password == null) return { body: await auth.loginWithApiKey(body.apiKey) }
        if (body.apiKey == null && body.username != null && body.password != null) return { body: await auth.login(body.username, body.password) }
        throw new RequestValidationError('invalid request body: send either {"username", "password"} or {"apiKey"}')
      }
    },
    {
      method: 'get', path: '/api/v1/users', claim: 'user:read', tag: 'users', summary: 'List users',
      success: { status: 200, schema: listOf(User), description: 'every user' },
      handler: () => ({ body: { items: auth.listUsers() } })
    },
    {
      method: 'post', path: '/api/v1/users', claim: 'user:write', tag: 'users', summary: 'Create a user',
      body: CreateUser, success: { status: 201, schema: User, description: 'the new user' },
      handler: async ({ body }) => ({ status: 201, body: await auth.createUser({ username: body.username, password: body.password, roles: body.roles ?? ['viewer'] }) })
    },
    {
      method: 'get', path: '/api/v1/users/:username', claim: 'user:read', tag: 'users', summary: 'Get a user',
      params: UsernameParams, success: { status: 200, schema: User, description: 'the user' },
      handler: ({ params }) => ({ body: auth.getUser(params.username) })
    },
    {
      method: 'delete', path: '/api/v1/users/:username', claim: 'user:write', tag: 'users', summary: 'Delete a user and their API keys',
      params: UsernameParams, success: { status: 204, description: 'deleted' },
      handler: async ({ params }) => { await auth.deleteUser(params.username); return { status: 204 } }
    },
    {
      method: 'get', path: '/api/v1/roles', claim: 'role:read', tag: 'roles', summary: 'List roles and their claims',
      success: { status: 200, schema: listOf(Role), description: 'built-in and custom roles' },
      handler: () => ({ body: { items: auth.listRoles() } })
    },
    {
      method: 'post', path: '/api/v1/roles', claim: 'role:write', tag: 'roles', summary: 'Create a custom role',
      body: CreateRole, success: { status: 201, schema: Role, description: 'the new role' },
      handler: async ({ body }) => ({ status: 201, body: await auth.createRole(body) })
    },
    {
      method: 'delete', path: '/api/v1/roles/:name', claim: 'role:write', tag: 'roles', summary: 'Delete a custom role',
      params: NameParams, success: { status: 204, description: 'deleted' },
      handler: async ({ params }) => { await auth.deleteRole(params.name); return { status: 204 } }
    },
    {
      method: 'get', path: '/api/v1/api-keys', claim: 'apikey:read', tag: 'api-keys', summary: 'List API keys (all with user:read, otherwise your own)',
      success: { status: 200, schema: listOf(ApiKey), description: 'keys without their secrets' },
      handler: ({ principal }) => ({ body: { items: auth.listApiKeys(principal.claims.has('user:read') ? {} : { username: principal.subject }) } })
    },
    {
      method: 'post', path: '/api/v1/api-keys', claim: 'apikey:write', tag: 'api-keys', summary: 'Create an API key (the secret is shown once)',
      body: CreateApiKey, success: { status: 201, schema: CreatedApiKey, description: 'the key, with its secret' },
      handler: async ({ body, principal }) => {
        const username = body.username ?? principal.subject
        if (username !== principal.subject) auth.authorize(principal, 'user:write')
        return { status: 201, body: await auth.createApiKey({ username, name: body.name, roles: body.roles }) }
      }
    },
    {
      method: 'delete', path: '/api/v1/api-keys/:id', claim: 'apikey:write', tag: 'api-keys', summary: 'Revoke an API key',
      params: IdParams, success: { status: 204, description: 'revoked' },
      handler: async ({ params, principal }) => {
        if (auth.getApiKey(params.id).username !== principal.subject) auth.authorize(principal, 'user:write')
        await auth.deleteApiKey(params.id)
        return { status: 204 }
      }
    }
  ]
}
