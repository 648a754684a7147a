/**
 * API key strings: `crl_<id>_<secret>`. The id (16 hex) finds the record; the secret (32 random
 * bytes, base64url) is checked against its SHA-256. High entropy makes a slow hash unnecessary.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

export const API_KEY_PREFIX = 'crl_'
const API_KEY_PATTERN = /^crl_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/

export interface ParsedApiKey {
  id: string
  secret: string
}

export function generateApiKey (): { id: string, secret: string, apiKey: string } {
  const id = randomBytes(8).toString('hex')
  const secret = randomBytes(32).toString('base64url')
  return { id, secret, apiKey: `${API_KEY_PREFIX}${id}_${secret}` }
}

export function looksLikeApiKey (credential: string): boolean {
  return credential.startsWith(API_KEY_PREFIX)
}

export function parseApiKey (apiKey: string): ParsedApiKey | undefined {
  const match = API_KEY_PATTERN.exec(apiKey)
  if (match == null) return undefined
  return { id: match[1], secret: match[2] }
}

export function hashApiKeySecret (secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

export function apiKeySecretMatches (secret: string, storedHash: string): boolean {
  const actual = Buffer.from(hashApiKeySecret(secret), 'hex')
  const expected = Buffer.from(storedHash, 'hex')
  return actual.length === expected.length && timingSafeEqual(actual, expected)
}
