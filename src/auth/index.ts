/** src/auth: identities, roles and claims, password/API-key/JWT checks. No HTTP. */
export { createAuthService } from './auth-service.ts'
export { CLAIMS, BUILTIN_ROLE_NAMES, BUILTIN_ROLE_CLAIMS, isClaim, isBuiltinRole } from './claims.ts'
export { API_KEY_PREFIX } from './api-key.ts'
export * from './errors.ts'
export type * from './types.ts'
