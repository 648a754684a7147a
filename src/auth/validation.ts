/** Input rules for usernames, passwords, role names and claims; messages say how to comply. */
import { CLAIMS, isClaim } from './claims.ts'
import type { Claim } from './claims.ts'
import { AuthValidationError } from './errors.ts'
import {
  API_KEY_NAME_MAX_LENGTH, PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, ROLE_DESCRIPTION_MAX_LENGTH,
  ROLE_NAME_PATTERN, USERNAME_PATTERN
} from './constants.ts'

export function validateUsername (username: unknown): string {
  if (typeof username !== 'string' || !USERNAME_PATTERN.test(username)) {
    throw new AuthValidationError('Username must be 2-64 characters of lowercase letters, digits, ".", "_" or "-", starting with a letter or digit (e.g. "ci-bot").',
      { field: 'username' })
  }
  return username
}

/** Never echoes the password back, not even its length. */
export function validatePassword (password: unknown, field = 'password'): string {
  if (typeof password !== 'string' || password.length < PASSWORD_MIN_LENGTH) {
    throw new AuthValidationError(`Password must be at least ${PASSWORD_MIN_LENGTH} characters long; choose a longer one.`, { field })
  }
  if (password.length > PASSWORD_MAX_LENGTH) {
    throw new AuthValidationError(`Password must be at most ${PASSWORD_MAX_LENGTH} characters long; choose a shorter one.`, { field })
  }
  return password
}

export function validateRoleName (name: unknown): string {
  if (typeof name !== 'string' || !ROLE_NAME_PATTERN.test(name)) {
    throw new AuthValidationError('Role name must be 2-64 characters of lowercase letters, digits, ".", "_" or "-", starting with a letter or digit (e.g. "release-ci").',
      { field: 'name' })
  }
  return name
}

/** Deduplicated and in CLAIMS order. */
export function validateClaims (claims: unknown): Claim[] {
  if (!Array.isArray(claims) || claims.length === 0) {
    throw new AuthValidationError(`Give a role at least one claim from: ${CLAIMS.join(', ')}.`, { field: 'claims' })
  }
  const unknown = claims.filter(claim => !isClaim(claim))
  if (unknown.length > 0) {
    throw new AuthValidationError(`Unknown claim(s): ${unknown.map(String).join(', ')}. Known claims: ${CLAIMS.join(', ')}.`,
      { field: 'claims', unknown })
  }
  const wanted = new Set<string>(claims)
  return CLAIMS.filter(claim => wanted.has(claim))
}

/** Checks shape and that each role exists; returns them deduplicated and sorted. */
export function validateRoleList (roles: unknown, knownRoles: readonly string[], field = 'roles'): string[] {
  if (!Array.isArray(roles) || roles.length === 0 || roles.some(role => typeof role !== 'string')) {
    throw new AuthValidationError(`Give at least one role by name, from: ${knownRoles.join(', ')}.`, { field })
  }
  const known = new Set(knownRoles)
  const unknown = roles.filter(role => !known.has(role))
  if (unknown.length > 0) {
    throw new AuthValidationError(`Unknown role(s): ${unknown.join(', ')}. Existing roles: ${knownRoles.join(', ')}; create a custom role first if you need another.`,
      { field, unknown })
  }
  return [...new Set(roles as string[])].sort()
}

export function validateApiKeyName (name: unknown): string {
  if (name == null) return ''
  if (typeof name !== 'string' || name.length > API_KEY_NAME_MAX_LENGTH || /[\u0000-\u001f\u007f]/.test(name)) {
    throw new AuthValidationError(`API key name must be text of at most ${API_KEY_NAME_MAX_LENGTH} characters without control characters.`,
      { field: 'name' })
  }
  return name
}

export function validateRoleDescription (description: unknown): string {
  if (description == null) return ''
  if (typeof description !== 'string' || description.length > ROLE_DESCRIPTION_MAX_LENGTH) {
    throw new AuthValidationError(`Role description must be text of at most ${ROLE_DESCRIPTION_MAX_LENGTH} characters.`,
      { field: 'description' })
  }
  return description
}
