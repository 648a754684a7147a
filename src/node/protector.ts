/**
 * The private network: @libp2p/pnet encrypts every connection with the cluster key before anything
 * else is said. With a wrong key pnet itself does not notice (XSalsa20 decrypts to noise and the
 * next layer fails with an obscure error), so after pnet's nonce exchange both sides also send a
 * fixed check block through the encrypted stream: a peer whose block does not decrypt to the same
 * bytes holds another key, and we say so plainly instead of logging a noise handshake failure.
 */
import { preSharedKey } from '@libp2p/pnet'
import { byteStream } from '@libp2p/utils'
import type { AbortOptions, ConnectionProtector, MessageStream } from '@libp2p/interface'
import { ClusterKeyMismatchError } from './errors.ts'

const CHECK = new TextEncoder().encode('corral-pnet-ok/1')
/** Remember at most this many addresses for log rate limiting. */
const MAX_REMEMBERED = 1000

export interface ClusterKeyProtectorInit {
  /** The pre-shared key in the text form @libp2p/pnet reads. */
  psk: Uint8Array
  timeoutMs: number
  /** Called once per refused connection with the remote address (ip/port multiaddr). */
  onMismatch: (remoteAddr: string, direction: string) => void
}

class ClusterKeyProtector implements ConnectionProtector {
  private readonly inner: ConnectionProtector
  private readonly init: ClusterKeyProtectorInit

  constructor (init: ClusterKeyProtectorInit) {
    this.init = init
    this.inner = preSharedKey({ psk: init.psk, timeout: init.timeoutMs })()
  }

  readonly [Symbol.toStringTag] = 'corral/cluster-key-protector'

  async protect (connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
    const timeout = AbortSignal.timeout(this.init.timeoutMs)
    const signal = options?.signal != null ? AbortSignal.any([options.signal, timeout]) : timeout
    const boxed = await this.inner.protect(connection, { ...options, signal })
    const bytes = byteStream(boxed, { maxBufferSize: 64 * 1024 })
    const [received] = await Promise.all([
      bytes.read({ bytes: CHECK.byteLength, signal }),
      bytes.write(CHECK, { signal })
    ])
    const stream = bytes.unwrap()
    if (!sameBytes(received.subarray(), CHECK)) {
      const remote = remoteAddrOf(connection)
      this.init.onMismatch(remote, connection.direction)
      const err = new ClusterKeyMismatchError(`peer ${remote} failed the private-network handshake: the cluster keys differ`, { remote })
      stream.abort(err)
      throw err
    }
    return stream
  }
}

export function clusterKeyProtector (init: ClusterKeyProtectorInit): () => ConnectionProtector {
  return () => new ClusterKeyProtector(init)
}

function sameBytes (a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false
  return true
}

function remoteAddrOf (connection: MessageStream): string {
  const addr = (connection as Partial<{ remoteAddr: { toString: () => string } }>).remoteAddr
  return addr?.toString() ?? 'unknown address'
}

/**
 * Logs a refused peer at most once per interval per host, so a misconfigured node that keeps
 * redialling does not flood the log.
 */
export class MismatchLogLimiter {
  private readonly last = new Map<string, number>()
  private readonly intervalMs: number
  private readonly clock: () => number

  constructor (intervalMs: number, clock: () => number) {
    this.intervalMs = intervalMs
    this.clock = clock
  }

  shouldLog (remoteAddr: string): boolean {
    // The host part only: inbound connections come from a new ephemeral port every time.
    const host = remoteAddr.split('/').slice(0, 3).join('/')
    const now = this.clock()
    const prev = this.last.get(host)
    if (prev !== undefined && now - prev < this.intervalMs) return false
    if (this.last.size >= MAX_REMEMBERED) this.last.clear()
    this.last.set(host, now)
    return true
  }
}
