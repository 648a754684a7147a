/**
 * The claims corral knows and the built-in roles made of them. A claim is the right to do one kind
 * of thing (`vm:write`); a role is a named set of claims; a principal holds the union of its roles.
 */

export const CLAIMS = [
  'vm:read', 'vm:write', 'vm:exec',
  'image:read', 'image:write',
  'host:read',
  'events:read',
  'user:read', 'user:write',
  'role:read', 'role:write',
  'apikey:read', 'apikey:write',
  'cluster:read', 'cluster:write',
  'catalog:read', 'catalog:write', 'catalog:admin',
  'proxy:read', 'proxy:write'
] as const

export type Claim = typeof CLAIMS[number]

const KNOWN_CLAIMS: ReadonlySet<string> = new Set(CLAIMS)

export function isClaim (value: unknown): value is Claim {
  return typeof value === 'string' && KNOWN_CLAIMS.has(value)
}

export const BUILTIN_ROLE_NAMES = ['admin', 'operator', 'ci', 'viewer'] as const

export type BuiltinRoleName = typeof BUILTIN_ROLE_NAMES[number]

/** Reading who may do what is itself sensitive, so viewers do not get these. */
const VIEWER_HIDDEN: ReadonlySet<Claim> = new Set(['user:read', 'role:read', 'apikey:read'])

/** Operators run the fleet but cannot hand out rights. */
const OPERATOR_WITHHELD: ReadonlySet<Claim> = new Set(['user:write', 'role:write'])

export const BUILTIN_ROLE_CLAIMS: Readonly<Record<BuiltinRoleName, readonly Claim[]>> = {
  admin: [...CLAIMS],
  operator: CLAIMS.filter(claim => !OPERATOR_WITHHELD.has(claim)),
  ci: ['vm:read', 'vm:write', 'vm:exec', 'image:read', 'host:read', 'events:read', 'catalog:read', 'proxy:read'],
  viewer: CLAIMS.filter(claim => claim.endsWith(':read') && !VIEWER_HIDDEN.has(claim))
}

export const BUILTIN_ROLE_DESCRIPTIONS: Readonly<Record<BuiltinRoleName, string>> = {
  admin: 'Every claim, including managing users, roles and API keys',
  operator: 'Runs the fleet: everything except changing users and roles',
  ci: 'What a pipeline needs: create, use and remove VMs, read images and hosts',
  viewer: 'Read-only view of VMs, images, hosts, events, cluster, catalog and proxy'
}

export function isBuiltinRole (name: string): name is BuiltinRoleName {
  return (BUILTIN_ROLE_NAMES as readonly string[]).includes(name)
}
