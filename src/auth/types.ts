/**
 * Public shapes of src/auth: who a caller is (Principal), what the service offers (AuthService),
 * and the records it keeps in the store. No HTTP here; src/api maps these to requests.
 */
import type { Logger } from 'pino'
import type { Store } from '../store/types.ts'
import type { Claim } from './claims.ts'

export type { Claim, BuiltinRoleName } from './claims.ts'

export interface AuthComponents {
  store: Store
  logger: Logger
  /** Milliseconds since the epoch; tests inject one to move time. Defaults to Date.now. */
  clock?: () => number
}

export interface LockoutOptions {
  /** Failed logins for one username inside `windowSeconds` that lock it. */
  maxFailures: number
  windowSeconds: number
  /** How long a locked username refuses every login, right password or not. */
  lockSeconds: number
}

export interface AuthInit {
  /** The node's data folder; the JWT signing key lives in `<dataDir>/keys/jwt-ed25519.json`. */
  dataDir: string
  /** Password for the `admin` user created on first start; generated when absent. */
  adminPassword?: string
  tokenTtlSeconds: number
  lockout: LockoutOptions
  /** JWT `iss`; defaults to `corral`. */
  issuer?: string
  /** JWT `aud`; defaults to `corral-api`. */
  audience?: string
  /**
   * scrypt cost N (power of two) for new password hashes; defaults to 16384. Hashes made with
   * another N still verify and are re-hashed with this one at the next successful login.
   */
  passwordHashCost?: number
  /**
   * Create the `admin` user when there are no users. Default true. A node joining an existing
   * cluster passes false: its users arrive by sync, and a second admin must not be made.
   */
  bootstrapAdmin?: boolean
  /**
   * Record id of the bootstrap admin. Nodes of one cluster that each bootstrap (mDNS labs started
   * at once) then write one admin record, not two admins with one name. Random when absent.
   */
  adminUserId?: string
}

export type PrincipalKind = 'user' | 'apikey'

/** The caller of a request, as established by `authenticate`. */
export interface Principal {
  /** The acting user's username, for both kinds (an API key acts for its owner). */
  subject: string
  kind: PrincipalKind
  /** The user's id (for an API key, its owner's). */
  userId: string
  /** Set when kind is `apikey`. */
  apiKeyId?: string
  /** Role names held: the user's, or the key's own. */
  roles: string[]
  /** What the principal may do. For a key: claims of its roles that its owner still holds. */
  claims: Set<Claim>
}

export interface TokenGrant {
  token: string
  /** ISO 8601. */
  expiresAt: string
}

export interface UserInfo {
  id: string
  username: string
  roles: string[]
  createdAt: string
  updatedAt: string
}

export interface CreateUserInput {
  username: string
  password: string
  roles: string[]
}

export interface RoleInfo {
  name: string
  description: string
  claims: Claim[]
  builtin: boolean
  createdAt: string
  updatedAt: string
}

export interface CreateRoleInput {
  name: string
  claims: string[]
  description?: string
}

export interface ApiKeyInfo {
  id: string
  /** Free-text label, e.g. the pipeline that uses it. */
  name: string
  /** Owner. */
  username: string
  userId: string
  roles: string[]
  createdAt: string
  updatedAt: string
}

export interface CreateApiKeyInput {
  /** The owner; the key acts for this user. */
  username: string
  name?: string
  /** Defaults to the owner's roles; may not grant any claim the owner lacks. */
  roles?: string[]
}

export interface CreatedApiKey extends ApiKeyInfo {
  /** `crl_<id>_<secret>`. Shown only here: corral keeps only its SHA-256. */
  apiKey: string
}

export interface ChangePasswordOptions {
  /** When given it must match, for self-service changes; admins resetting a password omit it. */
  currentPassword?: string
}

export interface AuthService {
  start: () => Promise<void>
  stop: () => Promise<void>

  /** The password generated for `admin` on this first start; returns it once, then undefined. */
  takeInitialAdminPassword: () => string | undefined

  login: (username: string, password: string) => Promise<TokenGrant>
  loginWithApiKey: (apiKey: string) => Promise<TokenGrant>
  /** Accepts a JWT from login or a raw API key. Throws UnauthenticatedError. */
  authenticate: (credential: string) => Promise<Principal>
  /** Throws ForbiddenError naming the claim when the principal lacks it. */
  authorize: (principal: Principal, claim: Claim) => void

  createUser: (input: CreateUserInput) => Promise<UserInfo>
  listUsers: () => UserInfo[]
  getUser: (username: string) => UserInfo
  setUserRoles: (username: string, roles: string[]) => Promise<UserInfo>
  /** Also revokes the user's tokens and changes nothing about their API keys. */
  changePassword: (username: string, newPassword: string, options?: ChangePasswordOptions) => Promise<void>
  /** Deletes the user's API keys too. Refuses to delete the last admin. */
  deleteUser: (username: string) => Promise<void>

  listRoles: () => RoleInfo[]
  getRole: (name: string) => RoleInfo
  createRole: (input: CreateRoleInput) => Promise<RoleInfo>
  deleteRole: (name: string) => Promise<void>

  createApiKey: (input: CreateApiKeyInput) => Promise<CreatedApiKey>
  listApiKeys: (filter?: { username?: string }) => ApiKeyInfo[]
  getApiKey: (id: string) => ApiKeyInfo
  deleteApiKey: (id: string) => Promise<void>
}

/** Stored password hash: the parameters travel with it so the cost can change later. */
export interface PasswordHash {
  algorithm: 'scrypt'
  N: number
  r: number
  p: number
  keyLength: number
  /** base64 */
  salt: string
  /** base64 */
  hash: string
}

/** Collection `users`, keyed by `id`. */
export interface UserRecord {
  id: string
  username: string
  password: PasswordHash
  roles: string[]
  /** Bumped on password change; tokens carry it, so older tokens stop working. */
  tokenVersion: number
  createdAt: string
  updatedAt: string
}

/** Collection `roles`, keyed by `name`. */
export interface RoleRecord {
  name: string
  description: string
  claims: Claim[]
  builtin: boolean
  createdAt: string
  updatedAt: string
}

/** Collection `api-keys`, keyed by `id`. */
export interface ApiKeyRecord {
  id: string
  name: string
  userId: string
  roles: string[]
  /** hex SHA-256 of the secret part. */
  secretHash: string
  createdAt: string
  updatedAt: string
}
