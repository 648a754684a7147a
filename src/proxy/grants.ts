/**
 * Signed grants: a short-lived right to reach one VM port, signed with an HMAC key every node of
 * the cluster holds (derived from the cluster key, keys.ts), so any node checks a grant another node made.
 * Form: <vm>.<port>.<expires, s since epoch>.<subject, base64url>.<HMAC-SHA256, base64url>.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { ProxyGrantInvalidError } from './errors.ts'
import type { ProxyGrant, ProxyTarget } from './types.ts'

export function signGrant (key: Uint8Array, target: ProxyTarget, subject: string, expiresAtMs: number): string {
  const expires = Math.floor(expiresAtMs / 1000)
  const who = Buffer.from(subject, 'utf8').toString('base64url')
  return `${target.vm}.${target.port}.${expires}.${who}.${mac(key, target, expires, who)}`
}

export function verifyGrant (key: Uint8Array, grant: string, target: ProxyTarget, now: number): ProxyGrant {
  const parts = grant.split('.')
  if (parts.length !== 5) throw new ProxyGrantInvalidError('the signed URL is malformed; ask for a new one (POST /api/v1/proxy/grants)')
  const [vm, port, expires, who, signature] = parts
  const expected = mac(key, { vm, port: Number(port) }, Number(expires), who)
  const given = Buffer.from(signature, 'base64url')
  if (given.length !== 32 || !timingSafeEqual(given, Buffer.from(expected, 'base64url'))) {
    throw new ProxyGrantInvalidError('the signed URL is not genuine (its signature does not match); ask for a new one')
  }
  if (vm !== target.vm || Number(port) !== target.port) {
    throw new ProxyGrantInvalidError(`the signed URL is for port ${port} of VM ${vm}, not port ${target.port} of VM ${target.vm}`)
  }
  const expiresAt = Number(expires) * 1000
  if (!(expiresAt > now)) throw new ProxyGrantInvalidError(`the signed URL expired at ${new Date(expiresAt).toISOString()}; ask for a new one`)
  return { vm, port: Number(port), expiresAt, subject: Buffer.from(who, 'base64url').toString('utf8') }
}

function mac (key: Uint8Array, target: ProxyTarget, expires: number, who: string): string {
  return createHmac('sha256', key).update(`v1\n${target.vm}\n${target.port}\n${expires}\n${who}`).digest('base64url')
}
