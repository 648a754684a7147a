/**
 * Password hashing with scrypt from node:crypto. The parameters are stored with each hash so the
 * cost can be raised later without breaking existing users.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto'
import type { ScryptOptions } from 'node:crypto'
import type { PasswordHash } from './types.ts'
import { SCRYPT_KEY_LENGTH, SCRYPT_MAX_N, SCRYPT_P, SCRYPT_R, SCRYPT_SALT_BYTES } from './constants.ts'

function scryptAsync (password: string, salt: Buffer, keyLength: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyLength, options, (err, key) => {
      if (err != null) reject(err)
      else resolve(key)
    })
  })
}

/** scrypt needs 128·N·r·p bytes; node's default ceiling (32 MiB) is too low for larger N. */
function scryptOptions (N: number, r: number, p: number): ScryptOptions {
  return { N, r, p, maxmem: 128 * N * r * p + 1024 * 1024 }
}

export async function hashPassword (password: string, N: number): Promise<PasswordHash> {
  const salt = randomBytes(SCRYPT_SALT_BYTES)
  const hash = await scryptAsync(password, salt, SCRYPT_KEY_LENGTH, scryptOptions(N, SCRYPT_R, SCRYPT_P))
  return {
    algorithm: 'scrypt',
    N,
    r: SCRYPT_R,
    p: SCRYPT_P,
    keyLength: SCRYPT_KEY_LENGTH,
    salt: salt.toString('base64'),
    hash: hash.toString('base64')
  }
}

function usableParameters (stored: PasswordHash): boolean {
  const { N, r, p, keyLength } = stored
  return stored.algorithm === 'scrypt' &&
    Number.isInteger(N) && N > 1 && N <= SCRYPT_MAX_N && (N & (N - 1)) === 0 &&
    Number.isInteger(r) && r >= 1 && r <= 32 &&
    Number.isInteger(p) && p >= 1 && p <= 16 &&
    Number.isInteger(keyLength) && keyLength >= 16 && keyLength <= 128
}

/** False for a wrong password and for a hash this build cannot use (never throws on bad input). */
export async function verifyPassword (password: string, stored: PasswordHash): Promise<boolean> {
  if (!usableParameters(stored)) return false
  const expected = Buffer.from(stored.hash, 'base64')
  if (expected.length !== stored.keyLength) return false
  const actual = await scryptAsync(password, Buffer.from(stored.salt, 'base64'), stored.keyLength,
    scryptOptions(stored.N, stored.r, stored.p))
  return timingSafeEqual(actual, expected)
}

export function needsRehash (stored: PasswordHash, N: number): boolean {
  return stored.N !== N || stored.r !== SCRYPT_R || stored.p !== SCRYPT_P || stored.keyLength !== SCRYPT_KEY_LENGTH
}
