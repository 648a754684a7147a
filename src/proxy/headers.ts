/**
 * Header policy of proxied HTTP, one place for both data paths (http-forward.ts on Node's HTTP
 * stack, fast-http.ts on its own): hop-by-hop headers dropped in both directions (RFC 9110 7.6.1,
 * plus those the Connection header names), X-Forwarded-* set, corral's own credentials and grant
 * cookie kept from the VM. Headers are Node's raw form: [name, value, name, value, ...].
 */
import { GRANT_COOKIE, GRANT_PARAM } from './constants.ts'

/** Headers that describe one connection, never the message: not passed on in either direction. */
export const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer',
  'transfer-encoding', 'upgrade'
])
/** Answered by this node already (100 Continue), or rebuilt here. */
const REPLACED = new Set(['expect', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-prefix'])

/** What the request's headers for the VM depend on besides the headers themselves. */
export interface ForwardContext {
  /** The client's address (X-Forwarded-For). */
  client: string
  /** The client came over TLS (X-Forwarded-Proto when no front proxy said). */
  encrypted: boolean
  /** What a path route stripped (X-Forwarded-Prefix); '' for host-name routes. */
  prefix: string
  /** The header that carried corral's credential: not for the VM. */
  credentialHeader?: 'authorization' | 'x-api-key'
  /** An upgrade being passed through: its Connection/Upgrade pair is kept. */
  upgrade?: string
}

/** The request's headers for the VM: hop-by-hop and corral credentials removed, X-Forwarded-* set. */
export function requestHeadersForVm (raw: string[], ctx: ForwardContext): string[] {
  const dropped = connectionTokens(raw)
  const out: string[] = []
  let forwardedFor: string | undefined
  let proto: string | undefined
  let host: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]
    const lower = name.toLowerCase()
    const value = raw[i + 1]
    if (lower === 'x-forwarded-for') {
      forwardedFor = forwardedFor == null ? value : `${forwardedFor}, ${value}`
      continue
    }
    if (lower === 'x-forwarded-proto') { proto ??= value; continue }
    if (lower === 'x-forwarded-host') { host ??= value; continue }
    if (lower === 'host') host ??= value
    if (HOP_BY_HOP.has(lower) || REPLACED.has(lower) || (dropped != null && dropped.has(lower))) continue
    if (ctx.credentialHeader === lower) continue
    if (lower === 'cookie') {
      const kept = withoutGrantCookie(value)
      if (kept !== '') out.push(name, kept)
      continue
    }
    out.push(name, value)
  }
  out.push('X-Forwarded-For', forwardedFor == null ? ctx.client : `${forwardedFor}, ${ctx.client}`)
  out.push('X-Forwarded-Proto', proto ?? (ctx.encrypted ? 'https' : 'http'))
  if (host != null) out.push('X-Forwarded-Host', host)
  if (ctx.prefix !== '') out.push('X-Forwarded-Prefix', ctx.prefix)
  if (ctx.upgrade != null) out.push('Connection', 'Upgrade', 'Upgrade', ctx.upgrade)
  return out
}

/** The VM's answer headers for the client, hop-by-hop ones removed (the body is framed again). */
export function responseHeadersForClient (raw: string[]): string[] {
  const dropped = connectionTokens(raw)
  const out: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i].toLowerCase()
    if (HOP_BY_HOP.has(lower) || (dropped != null && dropped.has(lower))) continue
    out.push(raw[i], raw[i + 1])
  }
  return out
}

/** Header names listed in the Connection header(s), lower-cased; undefined when there are none. */
export function connectionTokens (raw: string[]): Set<string> | undefined {
  let tokens: Set<string> | undefined
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length !== 10 || raw[i].toLowerCase() !== 'connection') continue
    // The usual values name only what is hop-by-hop anyway.
    const value = raw[i + 1]
    if (value.length <= 10 && (value === 'keep-alive' || value === 'close' || value.toLowerCase() === 'keep-alive' || value.toLowerCase() === 'close')) continue
    for (const part of value.split(',')) {
      const t = part.trim().toLowerCase()
      if (t !== '') (tokens ??= new Set()).add(t)
    }
  }
  return tokens
}

/** The Cookie header without corral's grant cookie, which is for this node, not the VM. */
export function withoutGrantCookie (value: string): string {
  if (!value.includes(GRANT_COOKIE)) return value
  return value.split(';').map(p => p.trim()).filter(p => p !== '' && !p.startsWith(`${GRANT_COOKIE}=`)).join('; ')
}

/** The path without the signed-URL parameter. */
export function withoutGrant (path: string): string {
  const q = path.indexOf('?')
  if (q < 0 || !path.includes(GRANT_PARAM, q)) return path
  const params = new URLSearchParams(path.slice(q + 1))
  params.delete(GRANT_PARAM)
  const rest = params.toString()
  return path.slice(0, q) + (rest === '' ? '' : `?${rest}`)
}
