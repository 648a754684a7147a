/**
 * The Ed25519 key that signs this node's JWTs, kept as a private JWK in
 * `<dataDir>/keys/jwt-ed25519.json` (0600) and reused across restarts so tokens survive them.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { calculateJwkThumbprint, importJWK } from 'jose'
import type { CryptoKey, JWK } from 'jose'
import type { Logger } from 'pino'
import { AuthKeyFileError } from './errors.ts'
import { JWT_KEY_FILE, KEYS_DIR } from './constants.ts'

export const JWT_ALGORITHM = 'EdDSA'

export interface SigningKey {
  privateKey: CryptoKey
  publicKey: CryptoKey
  /** The public half as a JWK, published so other nodes of the cluster can verify this node's tokens. */
  publicJwk: JWK
  /** JWK thumbprint; goes in each token's header so keys can be rotated later. */
  kid: string
  path: string
}

interface StoredJwk {
  kty: 'OKP'
  crv: 'Ed25519'
  x: string
  d: string
  kid: string
  alg: typeof JWT_ALGORITHM
  use: 'sig'
}

function errorCode (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}

function keyFileHelp (path: string): string {
  return `Restore it from a backup, or delete it to create a new key (every token issued so far then stops working): ${path}`
}

async function newJwk (): Promise<StoredJwk> {
  const { privateKey } = generateKeyPairSync('ed25519')
  const jwk = privateKey.export({ format: 'jwk' })
  if (jwk.x == null || jwk.d == null) throw new Error('node:crypto exported an Ed25519 JWK without x or d')
  const kid = await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: jwk.x })
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d, kid, alg: JWT_ALGORITHM, use: 'sig' }
}

/**
 * Write to a private temp file, then hard-link it into place: the key file appears complete or not
 * at all, and if another process created it first we use theirs instead of overwriting it.
 */
async function createKeyFile (dir: string, path: string): Promise<boolean> {
  const jwk = await newJwk()
  const tmp = join(dir, `.${JWT_KEY_FILE}.${randomBytes(6).toString('hex')}.tmp`)
  const handle = await open(tmp, 'wx', 0o600)
  try {
    await handle.chmod(0o600) // the umask could only narrow it, but be explicit
    await handle.writeFile(JSON.stringify(jwk, null, 2) + '\n')
    await handle.sync()
  } finally {
    await handle.close()
  }
  try {
    await link(tmp, path)
    return true
  } catch (err) {
    if (errorCode(err) === 'EEXIST') return false
    throw err
  } finally {
    await unlink(tmp).catch(() => {})
  }
}

async function readKeyFile (path: string): Promise<SigningKey> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new AuthKeyFileError(`Cannot read the JWT signing key (${errorCode(err) ?? String(err)}). Check that corral may read it. ${keyFileHelp(path)}`,
      { path }, { cause: err })
  }
  let jwk: Partial<StoredJwk>
  try {
    jwk = JSON.parse(text)
  } catch {
    throw new AuthKeyFileError(`The JWT signing key file is not valid JSON. ${keyFileHelp(path)}`, { path })
  }
  if (jwk == null || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string' || typeof jwk.d !== 'string') {
    throw new AuthKeyFileError(`The JWT signing key file is not an Ed25519 private JWK (kty OKP, crv Ed25519, x, d). ${keyFileHelp(path)}`, { path })
  }
  const publicJwk: JWK = { kty: 'OKP', crv: 'Ed25519', x: jwk.x }
  try {
    const privateKey = await importJWK({ ...publicJwk, d: jwk.d }, JWT_ALGORITHM) as CryptoKey
    const publicKey = await importJWK(publicJwk, JWT_ALGORITHM) as CryptoKey
    const kid = await calculateJwkThumbprint(publicJwk)
    return { privateKey, publicKey, publicJwk, kid, path }
  } catch (err) {
    throw new AuthKeyFileError(`The JWT signing key file holds an unusable Ed25519 key. ${keyFileHelp(path)}`, { path }, { cause: err })
  }
}

export async function loadOrCreateSigningKey (dataDir: string, logger: Logger): Promise<SigningKey> {
  const dir = join(dataDir, KEYS_DIR)
  const path = join(dir, JWT_KEY_FILE)
  await mkdir(dir, { recursive: true, mode: 0o700 })

  let created = false
  try {
    await stat(path)
  } catch (err) {
    if (errorCode(err) !== 'ENOENT') throw err
    created = await createKeyFile(dir, path)
  }
  const key = await readKeyFile(path)

  const mode = (await stat(path)).mode & 0o777
  if ((mode & 0o077) !== 0) {
    logger.warn({ path, mode: mode.toString(8) }, 'JWT signing key file is readable by other users; run chmod 600 on it')
  }
  logger.info({ path, kid: key.kid, created }, created ? 'created JWT signing key' : 'loaded JWT signing key')
  return key
}
