/**
 * The auth service: users, roles and API keys in the store; passwords and keys checked here; JWTs
 * signed with this node's Ed25519 key. Claims are computed from the store on every authenticate,
 * so deleting a user, revoking a key or changing roles takes effect at once, even for live tokens.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { SignJWT, errors as joseErrors, importJWK, jwtVerify } from 'jose'
import type { CryptoKey, JWK, JWTPayload } from 'jose'
import type { Logger } from 'pino'
import type { Store } from '../store/types.ts'
import { BUILTIN_ROLE_CLAIMS, BUILTIN_ROLE_DESCRIPTIONS, BUILTIN_ROLE_NAMES, isBuiltinRole, isClaim } from './claims.ts'
import type { Claim } from './claims.ts'
import {
  ADMIN_ROLE, ADMIN_USERNAME, API_KEYS_COLLECTION, DEFAULT_AUDIENCE, DEFAULT_ISSUER,
  GENERATED_PASSWORD_BYTES, ROLES_COLLECTION, ROLE_NAME_PATTERN, SCRYPT_MAX_N, SCRYPT_N, USERS_COLLECTION
} from './constants.ts'
import {
  AccountLockedError, ApiKeyNotFoundError, AuthNotStartedError, AuthValidationError, BuiltinRoleError,
  ForbiddenError, InvalidCredentialsError, LastAdminError, RoleExistsError, RoleInUseError, RoleNotFoundError,
  UnauthenticatedError, UserExistsError, UserNotFoundError
} from './errors.ts'
import { apiKeySecretMatches, generateApiKey, hashApiKeySecret, looksLikeApiKey, parseApiKey } from './api-key.ts'
import { LoginLockout } from './lockout.ts'
import { hashPassword, needsRehash, verifyPassword } from './password.ts'
import { JWT_ALGORITHM, loadOrCreateSigningKey } from './signing-key.ts'
import type { SigningKey } from './signing-key.ts'

/** Collection `jwt-keys`: each node's public token key, so any node verifies any node's tokens. */
export const JWT_KEYS_COLLECTION = 'jwt-keys'

interface PublishedKey {
  kid: string
  jwk: JWK
  createdAt: string
}
import type {
  ApiKeyInfo, ApiKeyRecord, AuthComponents, AuthInit, AuthService, ChangePasswordOptions, CreateApiKeyInput,
  CreateRoleInput, CreateUserInput, CreatedApiKey, PasswordHash, Principal, PrincipalKind, RoleInfo, RoleRecord,
  TokenGrant, UserInfo, UserRecord
} from './types.ts'
import {
  validateApiKeyName, validateClaims, validatePassword, validateRoleDescription, validateRoleList,
  validateRoleName, validateUsername
} from './validation.ts'

/** Usernames longer than this cannot exist, so lockout keys are cut to it to bound memory. */
const LOCKOUT_KEY_MAX = 64
const API_KEY_ID_PATTERN = /^[0-9a-f]{16}$/
/** How long, and for how many tokens, a checked signature is remembered. */
const VERIFIED_TOKEN_MEMORY_MS = 30_000
const VERIFIED_TOKEN_MEMORY_MAX = 10_000

interface Started {
  signingKey: SigningKey
  /** Hash of a random password: unknown usernames are checked against it so they take as long. */
  decoyHash: PasswordHash
}

export class DefaultAuthService implements AuthService {
  readonly #store: Store
  readonly #logger: Logger
  readonly #clock: () => number
  readonly #init: AuthInit
  readonly #issuer: string
  readonly #audience: string
  readonly #hashCost: number
  readonly #lockout: LoginLockout
  /** Public keys of other nodes, imported once per key id. */
  readonly #peerKeys = new Map<string, CryptoKey>()
  /**
   * Tokens whose signature checked out lately, so a CI client's stream of calls pays the EdDSA
   * verification (~80 µs) once per half minute, not per call. Only the signature is remembered:
   * expiry, the user, its token version and the API key are checked on every call.
   */
  readonly #verified = new Map<string, { payload: JWTPayload, until: number }>()
  #started: Started | undefined
  #initialAdminPassword: string | undefined
  /** Writes run one at a time, so check-then-put (unique names, last admin) cannot race. */
  #writes: Promise<unknown> = Promise.resolve()

  constructor (components: AuthComponents, init: AuthInit) {
    this.#store = components.store
    this.#logger = components.logger.child({ component: 'auth' })
    this.#clock = components.clock ?? Date.now
    this.#init = init
    this.#issuer = init.issuer ?? DEFAULT_ISSUER
    this.#audience = init.audience ?? DEFAULT_AUDIENCE
    this.#hashCost = init.passwordHashCost ?? SCRYPT_N
    this.#lockout = new LoginLockout(init.lockout, this.#clock)
  }

  async start (): Promise<void> {
    if (this.#started != null) return
    this.#checkInit()
    const signingKey = await loadOrCreateSigningKey(this.#init.dataDir, this.#logger)
    const decoyHash = await hashPassword(randomBytes(16).toString('base64url'), this.#hashCost)
    await this.#serial(async () => {
      await this.#ensureBuiltinRoles()
      await this.#bootstrapAdmin()
      // Other nodes verify this node's tokens with it (the collection is cluster-wide in a mesh).
      if (this.#store.get(JWT_KEYS_COLLECTION, signingKey.kid) == null) {
        await this.#store.put<PublishedKey>(JWT_KEYS_COLLECTION, signingKey.kid, { kid: signingKey.kid, jwk: signingKey.publicJwk, createdAt: this.#now() })
      }
    })
    this.#started = { signingKey, decoyHash }
  }

  async stop (): Promise<void> {
    await this.#writes
    this.#started = undefined
    this.#initialAdminPassword = undefined
    this.#lockout.clear()
  }

  takeInitialAdminPassword (): string | undefined {
    const password = this.#initialAdminPassword
    this.#initialAdminPassword = undefined
    return password
  }

  // ---- logging in -------------------------------------------------------------------------

  async login (username: string, password: string): Promise<TokenGrant> {
    const { signingKey } = this.#ready()
    const user = await this.#checkPassword(username, password)
    this.#logger.info({ event: 'login', subject: user.username, outcome: 'success' }, 'login succeeded')
    if (needsRehash(user.password, this.#hashCost)) await this.#rehash(user, password)
    return await this.#issueToken(signingKey, 'user', user.id, user.tokenVersion)
  }

  async loginWithApiKey (apiKey: string): Promise<TokenGrant> {
    const { signingKey } = this.#ready()
    const found = this.#resolveApiKey(apiKey)
    if (found == null) {
      this.#logger.info({ event: 'login', kind: 'apikey', outcome: 'failed' }, 'API key login failed')
      throw new InvalidCredentialsError('Unknown or revoked API key. Check that the whole key was copied, or create a new one.')
    }
    this.#logger.info({ event: 'login', kind: 'apikey', subject: found.owner.username, apiKeyId: found.key.id, outcome: 'success' }, 'API key login succeeded')
    return await this.#issueToken(signingKey, 'apikey', found.key.id)
  }

  async authenticate (credential: string): Promise<Principal> {
    const { signingKey } = this.#ready()
    if (typeof credential !== 'string' || credential.length === 0) {
      throw new UnauthenticatedError('No credentials: send "Authorization: Bearer <token or API key>"; get a token by logging in.')
    }
    if (looksLikeApiKey(credential)) {
      const found = this.#resolveApiKey(credential)
      if (found == null) return this.#reject('apikey', 'unknown or revoked API key', 'Unknown or revoked API key. Check that the whole key was sent, or create a new one.')
      return this.#apiKeyPrincipal(found.key, found.owner)
    }

    const payload = await this.#verifiedPayload(credential, signingKey)

    const subject = payload.sub as string
    if (payload.kind === 'user') {
      const user = this.#store.get<UserRecord>(USERS_COLLECTION, subject)
      if (user == null) return this.#reject('token', 'user deleted', 'The user this token was issued to no longer exists; log in as another user.')
      if (payload.ver !== user.tokenVersion) return this.#reject('token', 'password changed', 'This token was issued before the password was changed; log in again.')
      return { subject: user.username, kind: 'user', userId: user.id, roles: [...user.roles], claims: this.#claimsOf(user.roles) }
    }
    if (payload.kind === 'apikey') {
      const key = API_KEY_ID_PATTERN.test(subject) ? this.#store.get<ApiKeyRecord>(API_KEYS_COLLECTION, subject) : undefined
      const owner = key == null ? undefined : this.#store.get<UserRecord>(USERS_COLLECTION, key.userId)
      if (key == null || owner == null) return this.#reject('token', 'API key revoked', 'The API key this token came from was revoked or its user deleted; use a current key.')
      return this.#apiKeyPrincipal(key, owner)
    }
    return this.#reject('token', 'unknown kind', 'Invalid token: log in again.')
  }

  authorize (principal: Principal, claim: Claim): void {
    if (principal.claims.has(claim)) return
    const who = principal.kind === 'apikey'
      ? `API key ${principal.apiKeyId ?? ''} of user "${principal.subject}"`
      : `user "${principal.subject}"`
    const roles = principal.roles.length > 0 ? principal.roles.join(', ') : 'none'
    this.#logger.debug({ event: 'authorize', subject: principal.subject, kind: principal.kind, claim, outcome: 'forbidden' }, 'forbidden')
    throw new ForbiddenError(`Not allowed: this needs the "${claim}" claim, which ${who} does not have (roles: ${roles}). Ask an admin for a role that grants "${claim}".`,
      { claim, subject: principal.subject, roles: [...principal.roles] })
  }

  // ---- users ------------------------------------------------------------------------------

  async createUser (input: CreateUserInput): Promise<UserInfo> {
    this.#ready()
    const username = validateUsername(input?.username)
    const password = validatePassword(input?.password)
    validateRoleList(input?.roles, this.#roleNames())
    const passwordHash = await hashPassword(password, this.#hashCost)
    return await this.#serial(async () => {
      if (this.#findUser(username) != null) {
        throw new UserExistsError(`User "${username}" already exists; pick another username or change that user instead.`, { username })
      }
      const roles = validateRoleList(input.roles, this.#roleNames())
      const now = this.#now()
      const user: UserRecord = { id: randomUUID(), username, password: passwordHash, roles, tokenVersion: 0, createdAt: now, updatedAt: now }
      await this.#store.put(USERS_COLLECTION, user.id, user)
      this.#logger.info({ event: 'user-created', subject: username, roles }, 'user created')
      return userInfo(user)
    })
  }

  listUsers (): UserInfo[] {
    return this.#store.list<UserRecord>(USERS_COLLECTION)
      .sort((a, b) => a.username.localeCompare(b.username))
      .map(userInfo)
  }

  getUser (username: string): UserInfo {
    return userInfo(this.#requireUser(username))
  }

  async setUserRoles (username: string, roles: string[]): Promise<UserInfo> {
    this.#ready()
    return await this.#serial(async () => {
      const user = this.#requireUser(username)
      const newRoles = validateRoleList(roles, this.#roleNames())
      if (user.roles.includes(ADMIN_ROLE) && !newRoles.includes(ADMIN_ROLE) && this.#adminCount() <= 1) {
        throw new LastAdminError(`"${user.username}" is the last user with the admin role; give another user the admin role first.`,
          { username: user.username })
      }
      const updated: UserRecord = { ...user, roles: newRoles, updatedAt: this.#now() }
      await this.#store.put(USERS_COLLECTION, user.id, updated)
      this.#logger.info({ event: 'user-roles-changed', subject: user.username, roles: newRoles }, 'user roles changed')
      return userInfo(updated)
    })
  }

  async changePassword (username: string, newPassword: string, options: ChangePasswordOptions = {}): Promise<void> {
    this.#ready()
    const user = options.currentPassword != null
      ? await this.#checkPassword(username, options.currentPassword)
      : this.#requireUser(username)
    const passwordHash = await hashPassword(validatePassword(newPassword, 'newPassword'), this.#hashCost)
    await this.#serial(async () => {
      const current = this.#store.get<UserRecord>(USERS_COLLECTION, user.id)
      if (current == null) throw userNotFound(user.username)
      await this.#store.put(USERS_COLLECTION, current.id, {
        ...current, password: passwordHash, tokenVersion: current.tokenVersion + 1, updatedAt: this.#now()
      })
    })
    this.#lockout.recordSuccess(user.username)
    this.#logger.info({ event: 'password-changed', subject: user.username }, 'password changed; earlier tokens revoked')
  }

  async deleteUser (username: string): Promise<void> {
    this.#ready()
    await this.#serial(async () => {
      const user = this.#requireUser(username)
      if (user.roles.includes(ADMIN_ROLE) && this.#adminCount() <= 1) {
        throw new LastAdminError(`"${user.username}" is the last user with the admin role and cannot be deleted; give another user the admin role first.`,
          { username: user.username })
      }
      // The user first: that alone revokes their keys (authenticate checks the owner), so a crash
      // between the two steps leaves only unusable key records behind.
      await this.#store.delete(USERS_COLLECTION, user.id)
      const keys = this.#store.list<ApiKeyRecord>(API_KEYS_COLLECTION).filter(key => key.userId === user.id)
      for (const key of keys) await this.#store.delete(API_KEYS_COLLECTION, key.id)
      this.#lockout.recordSuccess(user.username)
      this.#logger.info({ event: 'user-deleted', subject: user.username, apiKeysDeleted: keys.length }, 'user deleted')
    })
  }

  // ---- roles ------------------------------------------------------------------------------

  listRoles (): RoleInfo[] {
    const order = (role: RoleRecord): number => {
      const index = (BUILTIN_ROLE_NAMES as readonly string[]).indexOf(role.name)
      return index === -1 ? BUILTIN_ROLE_NAMES.length : index
    }
    return this.#store.list<RoleRecord>(ROLES_COLLECTION)
      .sort((a, b) => order(a) - order(b) || a.name.localeCompare(b.name))
      .map(roleInfo)
  }

  getRole (name: string): RoleInfo {
    return roleInfo(this.#requireRole(name))
  }

  async createRole (input: CreateRoleInput): Promise<RoleInfo> {
    this.#ready()
    const name = validateRoleName(input?.name)
    const claims = validateClaims(input?.claims)
    const description = validateRoleDescription(input?.description)
    return await this.#serial(async () => {
      if (isBuiltinRole(name)) {
        throw new BuiltinRoleError(`"${name}" is a built-in role and cannot be redefined; pick another name.`, { role: name })
      }
      if (this.#store.get<RoleRecord>(ROLES_COLLECTION, name) != null) {
        throw new RoleExistsError(`Role "${name}" already exists; pick another name or delete it first.`, { role: name })
      }
      const now = this.#now()
      const role: RoleRecord = { name, description, claims, builtin: false, createdAt: now, updatedAt: now }
      await this.#store.put(ROLES_COLLECTION, name, role)
      this.#logger.info({ event: 'role-created', role: name, claims }, 'role created')
      return roleInfo(role)
    })
  }

  async deleteRole (name: string): Promise<void> {
    this.#ready()
    await this.#serial(async () => {
      if (typeof name === 'string' && isBuiltinRole(name)) {
        throw new BuiltinRoleError(`"${name}" is a built-in role and cannot be deleted.`, { role: name })
      }
      const role = this.#requireRole(name)
      const users = this.#store.list<UserRecord>(USERS_COLLECTION).filter(user => user.roles.includes(role.name)).map(user => user.username).sort()
      const keys = this.#store.list<ApiKeyRecord>(API_KEYS_COLLECTION).filter(key => key.roles.includes(role.name)).map(key => key.id).sort()
      if (users.length > 0 || keys.length > 0) {
        const holders = [
          users.length > 0 ? `users ${users.slice(0, 10).join(', ')}${users.length > 10 ? ` and ${users.length - 10} more` : ''}` : '',
          keys.length > 0 ? `${keys.length} API key(s)` : ''
        ].filter(part => part !== '').join(' and ')
        throw new RoleInUseError(`Role "${role.name}" is still held by ${holders}; take it from them (or delete the keys) first.`,
          { role: role.name, users, apiKeys: keys })
      }
      await this.#store.delete(ROLES_COLLECTION, role.name)
      this.#logger.info({ event: 'role-deleted', role: role.name }, 'role deleted')
    })
  }

  // ---- API keys ---------------------------------------------------------------------------

  async createApiKey (input: CreateApiKeyInput): Promise<CreatedApiKey> {
    this.#ready()
    const name = validateApiKeyName(input?.name)
    return await this.#serial(async () => {
      const owner = this.#requireUser(input?.username)
      const roles = validateRoleList(input.roles ?? owner.roles, this.#roleNames())
      const ownerClaims = this.#claimsOf(owner.roles)
      const excess = [...this.#claimsOf(roles)].filter(claim => !ownerClaims.has(claim))
      if (excess.length > 0) {
        throw new AuthValidationError(`An API key cannot grant more than its user holds: roles ${roles.join(', ')} include ${excess.join(', ')}, which "${owner.username}" (roles: ${owner.roles.join(', ')}) lacks. Choose roles within the user's own.`,
          { field: 'roles', claims: excess })
      }
      const { id, secret, apiKey } = generateApiKey()
      const now = this.#now()
      const record: ApiKeyRecord = { id, name, userId: owner.id, roles, secretHash: hashApiKeySecret(secret), createdAt: now, updatedAt: now }
      await this.#store.put(API_KEYS_COLLECTION, id, record)
      this.#logger.info({ event: 'apikey-created', subject: owner.username, apiKeyId: id, roles }, 'API key created')
      return { ...apiKeyInfo(record, owner), apiKey }
    })
  }

  listApiKeys (filter: { username?: string } = {}): ApiKeyInfo[] {
    const users = new Map(this.#store.list<UserRecord>(USERS_COLLECTION).map(user => [user.id, user]))
    return this.#store.list<ApiKeyRecord>(API_KEYS_COLLECTION)
      .map(key => apiKeyInfo(key, users.get(key.userId)))
      .filter(key => filter.username == null || key.username === filter.username)
      .sort((a, b) => a.username.localeCompare(b.username) || a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
  }

  getApiKey (id: string): ApiKeyInfo {
    const key = this.#requireApiKey(id)
    return apiKeyInfo(key, this.#store.get<UserRecord>(USERS_COLLECTION, key.userId))
  }

  async deleteApiKey (id: string): Promise<void> {
    this.#ready()
    await this.#serial(async () => {
      const key = this.#requireApiKey(id)
      await this.#store.delete(API_KEYS_COLLECTION, key.id)
      this.#logger.info({ event: 'apikey-deleted', apiKeyId: key.id }, 'API key revoked')
    })
  }

  // ---- internals --------------------------------------------------------------------------

  /**
   * The token's claims once its signature, issuer, audience and expiry check out. A signature
   * checked in the last half minute is remembered (see #verified); expiry is re-checked each time.
   */
  async #verifiedPayload (credential: string, signingKey: Started['signingKey']): Promise<JWTPayload> {
    const now = this.#clock()
    const remembered = this.#verified.get(credential)
    if (remembered != null && remembered.until > now && (remembered.payload.exp ?? 0) * 1000 > now) return remembered.payload
    try {
      const { payload } = await jwtVerify(credential, async (header) => await this.#verificationKey(signingKey, header.kid), {
        algorithms: [JWT_ALGORITHM],
        issuer: this.#issuer,
        audience: this.#audience,
        currentDate: new Date(now),
        requiredClaims: ['sub', 'iat', 'exp']
      })
      this.#verified.delete(credential)
      this.#verified.set(credential, { payload, until: now + VERIFIED_TOKEN_MEMORY_MS })
      if (this.#verified.size > VERIFIED_TOKEN_MEMORY_MAX) this.#verified.delete(this.#verified.keys().next().value as string)
      return payload
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) return this.#reject('token', 'expired', 'Your token has expired; log in again.')
      if (err instanceof joseErrors.JOSEError) return this.#reject('token', 'invalid', 'Invalid token: it is malformed, was not issued by this corral node, or was altered. Log in again.')
      throw err
    }
  }

  #ready (): Started {
    if (this.#started == null) throw new AuthNotStartedError('The auth service is not running; call start() first.')
    return this.#started
  }

  #checkInit (): void {
    const { tokenTtlSeconds, lockout } = this.#init
    if (!Number.isFinite(tokenTtlSeconds) || tokenTtlSeconds <= 0) {
      throw new AuthValidationError('tokenTtlSeconds must be a positive number of seconds.', { field: 'tokenTtlSeconds' })
    }
    const N = this.#hashCost
    if (!Number.isInteger(N) || N < 2 || N > SCRYPT_MAX_N || (N & (N - 1)) !== 0) {
      throw new AuthValidationError(`passwordHashCost must be a power of two between 2 and ${SCRYPT_MAX_N}.`, { field: 'passwordHashCost' })
    }
    if (![lockout.maxFailures, lockout.windowSeconds, lockout.lockSeconds].every(value => Number.isFinite(value) && value >= 0)) {
      throw new AuthValidationError('lockout.maxFailures, windowSeconds and lockSeconds must be numbers >= 0 (maxFailures 0 turns lockout off).', { field: 'lockout' })
    }
    if (this.#init.adminPassword != null) validatePassword(this.#init.adminPassword, 'adminPassword')
  }

  #serial<T> (work: () => Promise<T>): Promise<T> {
    const run = this.#writes.then(work, work)
    this.#writes = run.catch(() => {})
    return run
  }

  #now (): string {
    return new Date(this.#clock()).toISOString()
  }

  async #ensureBuiltinRoles (): Promise<void> {
    for (const name of BUILTIN_ROLE_NAMES) {
      const stored = this.#store.get<RoleRecord>(ROLES_COLLECTION, name)
      const claims = [...BUILTIN_ROLE_CLAIMS[name]]
      const description = BUILTIN_ROLE_DESCRIPTIONS[name]
      const current = stored != null && stored.builtin && stored.description === description &&
        stored.claims.length === claims.length && stored.claims.every((claim, i) => claim === claims[i])
      if (current) continue
      const now = this.#now()
      await this.#store.put<RoleRecord>(ROLES_COLLECTION, name, {
        name, description, claims, builtin: true, createdAt: stored?.createdAt ?? now, updatedAt: now
      })
    }
  }

  /** This node's key, or another node's published one: a token from any node of the cluster verifies. */
  async #verificationKey (own: SigningKey, kid: string | undefined): Promise<CryptoKey> {
    if (kid == null || kid === own.kid) return own.publicKey
    const cached = this.#peerKeys.get(kid)
    if (cached != null) return cached
    const published = this.#store.get<PublishedKey>(JWT_KEYS_COLLECTION, kid)
    if (published == null) throw new joseErrors.JWKSNoMatchingKey()
    const key = await importJWK(published.jwk, JWT_ALGORITHM) as CryptoKey
    this.#peerKeys.set(kid, key)
    return key
  }

  async #bootstrapAdmin (): Promise<void> {
    if (this.#init.bootstrapAdmin === false) return
    if (this.#store.list<UserRecord>(USERS_COLLECTION).length > 0) {
      if (this.#init.adminPassword != null) {
        this.#logger.info('adminPassword option ignored: users exist already (change the password through the API instead)')
      }
      if (this.#adminCount() === 0) this.#logger.warn('no user has the admin role; nobody can manage users or roles')
      return
    }
    const generated = this.#init.adminPassword == null
    const password = this.#init.adminPassword ?? randomBytes(GENERATED_PASSWORD_BYTES).toString('base64url')
    const now = this.#now()
    const admin: UserRecord = {
      id: this.#init.adminUserId ?? randomUUID(),
      username: ADMIN_USERNAME,
      password: await hashPassword(password, this.#hashCost),
      roles: [ADMIN_ROLE],
      tokenVersion: 0,
      createdAt: now,
      updatedAt: now
    }
    await this.#store.put(USERS_COLLECTION, admin.id, admin)
    if (generated) this.#initialAdminPassword = password
    this.#logger.info({ event: 'user-created', subject: ADMIN_USERNAME, roles: admin.roles, passwordGenerated: generated }, 'created the first admin user')
  }

  /** Password check with lockout, shared by login and self-service password change. */
  async #checkPassword (username: string, password: string): Promise<UserRecord> {
    const { decoyHash } = this.#ready()
    const lockKey = typeof username === 'string' ? username.slice(0, LOCKOUT_KEY_MAX) : ''
    const lockedUntil = this.#lockout.lockedUntil(lockKey)
    if (lockedUntil != null) {
      this.#logger.info({ event: 'login', outcome: 'locked' }, 'login refused: too many failures for this username')
      throw accountLocked(lockedUntil)
    }
    const user = typeof username === 'string' ? this.#findUser(username) : undefined
    // Always pay for one scrypt, so an unknown username answers no faster than a wrong password.
    const matches = await verifyPassword(typeof password === 'string' ? password : '', user?.password ?? decoyHash)
    if (user != null && matches) {
      this.#lockout.recordSuccess(lockKey)
      return user
    }
    const nowLocked = this.#lockout.recordFailure(lockKey)
    // Only existing usernames are logged: a mistyped "username" is sometimes a password.
    this.#logger.info({ event: 'login', outcome: 'failed', subject: user?.username, reason: user == null ? 'unknown user' : 'wrong password', locked: nowLocked != null },
      'login failed')
    if (nowLocked != null) throw accountLocked(nowLocked)
    throw new InvalidCredentialsError('Wrong username or password.')
  }

  async #rehash (user: UserRecord, password: string): Promise<void> {
    try {
      const passwordHash = await hashPassword(password, this.#hashCost)
      await this.#serial(async () => {
        const current = this.#store.get<UserRecord>(USERS_COLLECTION, user.id)
        if (current == null || current.password.hash !== user.password.hash) return
        await this.#store.put(USERS_COLLECTION, current.id, { ...current, password: passwordHash, updatedAt: this.#now() })
      })
    } catch (err) {
      this.#logger.warn({ subject: user.username, err: (err as Error).name }, 'could not upgrade the password hash; will retry at next login')
    }
  }

  async #issueToken (signingKey: SigningKey, kind: PrincipalKind, subject: string, tokenVersion?: number): Promise<TokenGrant> {
    const issuedAt = Math.floor(this.#clock() / 1000)
    const expiresAt = issuedAt + Math.ceil(this.#init.tokenTtlSeconds)
    const claims: JWTPayload = tokenVersion == null ? { kind } : { kind, ver: tokenVersion }
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: JWT_ALGORITHM, kid: signingKey.kid, typ: 'JWT' })
      .setSubject(subject)
      .setIssuer(this.#issuer)
      .setAudience(this.#audience)
      .setIssuedAt(issuedAt)
      .setExpirationTime(expiresAt)
      .setJti(randomUUID())
      .sign(signingKey.privateKey)
    return { token, expiresAt: new Date(expiresAt * 1000).toISOString() }
  }

  #resolveApiKey (apiKey: string): { key: ApiKeyRecord, owner: UserRecord } | undefined {
    const parsed = typeof apiKey === 'string' ? parseApiKey(apiKey) : undefined
    if (parsed == null) return undefined
    const key = this.#store.get<ApiKeyRecord>(API_KEYS_COLLECTION, parsed.id)
    if (key == null || !apiKeySecretMatches(parsed.secret, key.secretHash)) return undefined
    const owner = this.#store.get<UserRecord>(USERS_COLLECTION, key.userId)
    if (owner == null) return undefined
    return { key, owner }
  }

  /** A key's claims are those of its roles that its owner still holds today. */
  #apiKeyPrincipal (key: ApiKeyRecord, owner: UserRecord): Principal {
    const ownerClaims = this.#claimsOf(owner.roles)
    const claims = new Set([...this.#claimsOf(key.roles)].filter(claim => ownerClaims.has(claim)))
    return { subject: owner.username, kind: 'apikey', userId: owner.id, apiKeyId: key.id, roles: [...key.roles], claims }
  }

  #reject (credential: 'token' | 'apikey', reason: string, message: string): never {
    this.#logger.info({ event: 'authenticate', credential, outcome: 'rejected', reason }, 'authentication rejected')
    throw new UnauthenticatedError(message, { reason })
  }

  #claimsOf (roles: readonly string[]): Set<Claim> {
    const claims = new Set<Claim>()
    for (const name of roles) {
      const role = this.#store.get<RoleRecord>(ROLES_COLLECTION, name)
      for (const claim of role?.claims ?? []) if (isClaim(claim)) claims.add(claim)
    }
    return claims
  }

  #roleNames (): string[] {
    return this.listRoles().map(role => role.name)
  }

  #findUser (username: string): UserRecord | undefined {
    return this.#store.list<UserRecord>(USERS_COLLECTION).find(user => user.username === username)
  }

  #requireUser (username: string): UserRecord {
    const user = typeof username === 'string' ? this.#findUser(username) : undefined
    if (user == null) throw userNotFound(username)
    return user
  }

  #requireRole (name: string): RoleRecord {
    const role = typeof name === 'string' && ROLE_NAME_PATTERN.test(name)
      ? this.#store.get<RoleRecord>(ROLES_COLLECTION, name)
      : undefined
    if (role == null) {
      throw new RoleNotFoundError(`No role "${String(name)}". Existing roles: ${this.#roleNames().join(', ')}.`, { role: name })
    }
    return role
  }

  #requireApiKey (id: string): ApiKeyRecord {
    const key = typeof id === 'string' && API_KEY_ID_PATTERN.test(id)
      ? this.#store.get<ApiKeyRecord>(API_KEYS_COLLECTION, id)
      : undefined
    if (key == null) {
      throw new ApiKeyNotFoundError(`No API key with id "${String(id)}" (it may have been revoked); list API keys to see current ids.`, { id })
    }
    return key
  }

  #adminCount (): number {
    return this.#store.list<UserRecord>(USERS_COLLECTION).filter(user => user.roles.includes(ADMIN_ROLE)).length
  }
}

function userNotFound (username: unknown): UserNotFoundError {
  return new UserNotFoundError(`No user "${String(username)}"; list users to see who exists.`, { username })
}

function accountLocked (until: number): AccountLockedError {
  const retryAt = new Date(until).toISOString()
  return new AccountLockedError(`Too many failed logins for this username; it is locked until ${retryAt}. Try again after that.`, { retryAt })
}

function userInfo (user: UserRecord): UserInfo {
  return { id: user.id, username: user.username, roles: [...user.roles], createdAt: user.createdAt, updatedAt: user.updatedAt }
}

function roleInfo (role: RoleRecord): RoleInfo {
  return {
    name: role.name,
    description: role.description,
    claims: role.claims.filter(isClaim),
    builtin: role.builtin,
    createdAt: role.createdAt,
    updatedAt: role.updatedAt
  }
}

function apiKeyInfo (key: ApiKeyRecord, owner: UserRecord | undefined): ApiKeyInfo {
  return {
    id: key.id,
    name: key.name,
    username: owner?.username ?? '',
    userId: key.userId,
    roles: [...key.roles],
    createdAt: key.createdAt,
    updatedAt: key.updatedAt
  }
}

export function createAuthService (components: AuthComponents, init: AuthInit): AuthService {
  return new DefaultAuthService(components, init)
}
