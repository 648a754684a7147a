/**
 * The cluster key (a libp2p pre-shared key in its text form) and the join token that carries it
 * with a few bootstrap addresses, for `corral cluster init` and `corral node --join TOKEN`.
 * Both are secrets: whoever holds one can join the mesh. Never log them.
 */
import { randomBytes } from 'node:crypto'
import { multiaddr } from '@multiformats/multiaddr'
import { ClusterKeyInvalidError, JoinTokenInvalidError } from './errors.ts'

const PSK_HEADER = '/key/swarm/psk/1.0.0/'
const PSK_CODEC = '/base16/'
const KEY_HEX = /^[0-9a-f]{64}$/
const MAX_TOKEN_LENGTH = 16 * 1024
const MAX_TOKEN_BOOTSTRAP = 64

/** A fresh random cluster key in the text form `@libp2p/pnet` reads (three lines). */
export function generateClusterKey (): string {
  return formatClusterKey(randomBytes(32).toString('hex'))
}

function formatClusterKey (hex: string): string {
  return `${PSK_HEADER}\n${PSK_CODEC}\n${hex}`
}

/**
 * Check a cluster key and return it in canonical text form (surrounding whitespace, CRLF line
 * ends and upper-case hex are accepted). Throws ClusterKeyInvalidError otherwise.
 */
export function normalizeClusterKey (text: string): string {
  const lines = text.trim().split(/\r?\n/).map(l => l.trim())
  if (lines.length !== 3 || lines[0] !== PSK_HEADER || lines[1] !== PSK_CODEC || !KEY_HEX.test(lines[2]!.toLowerCase())) {
    throw new ClusterKeyInvalidError('The cluster key is not a libp2p pre-shared key: expected three lines, ' +
      `"${PSK_HEADER}", "${PSK_CODEC}" and 64 hex digits. Generate one with \`corral cluster init\`.`)
  }
  return formatClusterKey(lines[2]!.toLowerCase())
}

/** The 32 secret bytes of a cluster key, for the private-network cipher. */
export function clusterKeySecret (text: string): Uint8Array {
  return Uint8Array.from(Buffer.from(normalizeClusterKey(text).split('\n')[2]!, 'hex'))
}

export interface JoinToken {
  clusterKey: string
  /** Multiaddrs of nodes to join through, ideally with /p2p/<id>. */
  bootstrap: string[]
}

/** base64url of `{"key": <64 hex digits>, "bootstrap": [multiaddr...]}`. */
export function encodeJoinToken (token: JoinToken): string {
  const key = normalizeClusterKey(token.clusterKey).split('\n')[2]!
  for (const addr of token.bootstrap) checkMultiaddr(addr)
  return Buffer.from(JSON.stringify({ key, bootstrap: token.bootstrap }), 'utf8').toString('base64url')
}

export function decodeJoinToken (token: string): JoinToken {
  const fail = (why: string): never => {
    throw new JoinTokenInvalidError(`The join token is not valid (${why}). Copy it again from \`corral cluster init\` ` +
      'or `corral cluster token` on a node of the cluster.')
  }
  const text = token.trim()
  if (text.length === 0 || text.length > MAX_TOKEN_LENGTH || !/^[A-Za-z0-9_-]+$/.test(text)) fail('not base64url text')
  let parsed: unknown
  try {
    parsed = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'))
  } catch {
    fail('not JSON inside')
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) fail('not an object inside')
  const { key, bootstrap } = parsed as { key?: unknown, bootstrap?: unknown }
  if (typeof key !== 'string') fail('no key')
  let clusterKey = ''
  try {
    clusterKey = normalizeClusterKey(KEY_HEX.test(String(key).toLowerCase()) ? formatClusterKey(String(key).toLowerCase()) : String(key))
  } catch {
    fail('the key is not 64 hex digits')
  }
  if (!Array.isArray(bootstrap) || bootstrap.length > MAX_TOKEN_BOOTSTRAP || !bootstrap.every(a => typeof a === 'string')) {
    fail('bootstrap is not a list of addresses')
  }
  for (const addr of bootstrap as string[]) checkMultiaddr(addr)
  return { clusterKey, bootstrap: [...bootstrap as string[]] }
}

function checkMultiaddr (addr: string): void {
  try {
    multiaddr(addr)
  } catch {
    throw new JoinTokenInvalidError(`"${addr.slice(0, 200)}" is not a multiaddr (expected e.g. /ip4/10.0.0.5/tcp/7946/p2p/12D3Koo...).`)
  }
}
