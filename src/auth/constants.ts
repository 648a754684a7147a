export const USERS_COLLECTION = 'users'
export const ROLES_COLLECTION = 'roles'
export const API_KEYS_COLLECTION = 'api-keys'

export const ADMIN_USERNAME = 'admin'
export const ADMIN_ROLE = 'admin'

export const DEFAULT_ISSUER = 'corral'
export const DEFAULT_AUDIENCE = 'corral-api'

export const KEYS_DIR = 'keys'
export const JWT_KEY_FILE = 'jwt-ed25519.json'

/** scrypt: N=2^14, r=8, p=1 costs ~16 MiB and tens of milliseconds; only logins pay it. */
export const SCRYPT_N = 16384
export const SCRYPT_R = 8
export const SCRYPT_P = 1
export const SCRYPT_KEY_LENGTH = 64
export const SCRYPT_SALT_BYTES = 16
/** Refuse stored parameters beyond this, so a damaged record cannot make a login eat the memory. */
export const SCRYPT_MAX_N = 1 << 20

export const USERNAME_PATTERN = /^[a-z0-9][a-z0-9._-]{1,63}$/
export const ROLE_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{1,63}$/
export const PASSWORD_MIN_LENGTH = 8
/** Long enough for any passphrase, short enough that hashing it stays cheap. */
export const PASSWORD_MAX_LENGTH = 1024
export const API_KEY_NAME_MAX_LENGTH = 128
export const ROLE_DESCRIPTION_MAX_LENGTH = 256

/** Bytes of randomness in a generated admin password (base64url: 24 characters). */
export const GENERATED_PASSWORD_BYTES = 18

/** Lockout counters kept in memory at most; guessing many usernames cannot grow it without bound. */
export const LOCKOUT_MAX_TRACKED = 10_000
