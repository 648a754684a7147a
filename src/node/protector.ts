/**
 * The private network: every connection is encrypted with the cluster key before anything else is
 * said, so a host without the key cannot even start a libp2p handshake.
 *
 * The wire format is libp2p's PSK v1, as in @libp2p/pnet: both sides send a random 24-byte nonce,
 * then each direction is XSalsa20(psk, sender's nonce). We do not use @libp2p/pnet's own stream
 * (3.0.27): its xsalsa20 WASM module shares one 64 MiB memory across the process, leaks a slot per
 * connection and, after one message over ~600 KB, grows that memory on every later write until the
 * process dies with "WebAssembly.Memory.grow(): Maximum memory size exceeded" (reproduced here
 * with one 900 KB rpc answer; fixed upstream by js-libp2p#3585, not yet released). The cipher
 * here is @noble/ciphers' Salsa20 (with HSalsa20 for the extended nonce), which has no shared state.
 *
 * With a wrong key XSalsa20 decrypts to noise and the next layer fails obscurely, so after the
 * nonces both sides also send a fixed check block through the encrypted stream: a peer whose
 * block does not decrypt to the same bytes holds another key, and we say so plainly.
 */
import { randomBytes } from 'node:crypto'
import { hsalsa, salsa20 } from '@noble/ciphers/salsa.js'
import { AbstractMultiaddrConnection, byteStream } from '@libp2p/utils'
import type { AbortOptions, ConnectionProtector, MessageStream, MultiaddrConnection } from '@libp2p/interface'
import type { SendResult } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'
import { ClusterKeyMismatchError } from './errors.ts'

const NONCE_LENGTH = 24
const CHECK = new TextEncoder().encode('corral-pnet-ok/1')
/** XSalsa20 as implemented allows 2^32 - 1 blocks of 64 bytes (256 GiB) per direction. */
const MAX_STREAM_BYTES = (2 ** 32 - 1) * 64
/** Remember at most this many addresses for log rate limiting. */
const MAX_REMEMBERED = 1000

/**
 * One direction of XSalsa20 as a stream: update() may be called with pieces of any size and
 * continues the keystream where the previous call stopped. XSalsa20(k, n) is Salsa20 keyed with
 * HSalsa20(k, n[0..16]) over n[16..24]; the subkey is derived once, not per piece.
 */
export class XSalsa20Stream {
  private readonly subkey: Uint8Array
  private readonly nonce: Uint8Array
  private position = 0

  constructor (key: Uint8Array, nonce: Uint8Array) {
    if (key.byteLength !== 32 || nonce.byteLength !== NONCE_LENGTH) throw new RangeError('XSalsa20 needs a 32-byte key and a 24-byte nonce')
    // hsalsa reads and writes 32-bit words laid over the bytes (it handles host byte order).
    const out = new Uint32Array(8)
    hsalsa(wordsOf(SIGMA), wordsOf(key), wordsOf(nonce.subarray(0, 16)), out)
    this.subkey = new Uint8Array(out.buffer)
    this.nonce = Uint8Array.from(nonce.subarray(16, 24))
  }

  update (input: Uint8Array): Uint8Array {
    if (input.byteLength === 0) return new Uint8Array(0)
    if (this.position + input.byteLength > MAX_STREAM_BYTES) {
      throw new Error('private-network stream exhausted its keystream (256 GiB); reconnect')
    }
    const block = Math.floor(this.position / 64)
    const skip = this.position % 64
    this.position += input.byteLength
    if (skip === 0) return salsa20(this.subkey, this.nonce, input, undefined, block)
    // Mid-block: pad the front so the keystream lines up, then drop the pad.
    const padded = new Uint8Array(skip + input.byteLength)
    padded.set(input, skip)
    return salsa20(this.subkey, this.nonce, padded, undefined, block).subarray(skip)
  }
}

const SIGMA = new TextEncoder().encode('expand 32-byte k')

function wordsOf (bytes: Uint8Array): Uint32Array {
  return new Uint32Array(Uint8Array.from(bytes).buffer)
}

interface EncryptedConnectionInit {
  maConn: MultiaddrConnection
  psk: Uint8Array
  localNonce: Uint8Array
  remoteNonce: Uint8Array
}

/** The raw connection seen through the cipher: what the rest of the libp2p upgrade talks to. */
class EncryptedConnection extends AbstractMultiaddrConnection {
  private readonly maConn: MultiaddrConnection
  private readonly inbound: XSalsa20Stream
  private readonly outbound: XSalsa20Stream

  constructor (init: EncryptedConnectionInit) {
    super({ log: init.maConn.log.newScope('corral-pnet'), remoteAddr: init.maConn.remoteAddr, direction: init.maConn.direction })
    this.maConn = init.maConn
    this.inbound = new XSalsa20Stream(init.psk, init.remoteNonce)
    this.outbound = new XSalsa20Stream(init.psk, init.localNonce)
    this.maConn.addEventListener('message', evt => {
      const data = evt.data
      try {
        if (data instanceof Uint8Array) {
          this.onData(this.inbound.update(data))
        } else {
          for (const buf of data) this.onData(this.inbound.update(buf))
        }
      } catch (err) {
        this.abort(err as Error)
      }
    })
    // Resume writing when the socket can take more.
    this.maConn.addEventListener('drain', () => { this.onMuxerDrain() })
    this.maConn.addEventListener('close', evt => {
      if (evt.error == null) this.onTransportClosed()
      else if (evt.local) this.abort(evt.error)
      else this.onRemoteReset()
    })
  }

  async sendClose (options?: AbortOptions): Promise<void> {
    await this.maConn.close(options)
  }

  sendData (data: Uint8ArrayList): SendResult {
    return { sentBytes: data.byteLength, canSendMore: this.maConn.send(this.outbound.update(data.subarray())) }
  }

  sendReset (err: Error): void {
    this.maConn.abort(err)
  }

  sendPause (): void {
    this.maConn.pause()
  }

  sendResume (): void {
    this.maConn.resume()
  }
}

export interface ClusterKeyProtectorInit {
  /** The 32-byte key (decoded from the cluster key text). */
  psk: Uint8Array
  /** The whole exchange (nonces and check block) must finish within this. */
  timeoutMs: number
  /** Called once per refused connection with the remote address (ip/port multiaddr). */
  onMismatch: (remoteAddr: string, direction: string) => void
}

class ClusterKeyProtector implements ConnectionProtector {
  private readonly init: ClusterKeyProtectorInit

  constructor (init: ClusterKeyProtectorInit) {
    if (init.psk.byteLength !== 32) throw new RangeError('the private-network key must be 32 bytes')
    this.init = init
  }

  readonly [Symbol.toStringTag] = 'corral/cluster-key-protector'

  async protect (connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
    const timeout = AbortSignal.timeout(this.init.timeoutMs)
    const signal = options?.signal != null ? AbortSignal.any([options.signal, timeout]) : timeout
    const maConn = connection as MultiaddrConnection

    const raw = byteStream(maConn, { maxBufferSize: 64 * 1024 })
    const localNonce = randomBytes(NONCE_LENGTH)
    const [remoteNonce] = await Promise.all([raw.read({ bytes: NONCE_LENGTH, signal }), raw.write(localNonce, { signal })])
    const encrypted = new EncryptedConnection({ maConn: raw.unwrap(), psk: this.init.psk, localNonce, remoteNonce: remoteNonce.subarray() })

    const checked = byteStream(encrypted, { maxBufferSize: 64 * 1024 })
    const [received] = await Promise.all([checked.read({ bytes: CHECK.byteLength, signal }), checked.write(CHECK, { signal })])
    const stream = checked.unwrap()
    if (!sameBytes(received.subarray(), CHECK)) {
      const remote = maConn.remoteAddr?.toString() ?? 'unknown address'
      this.init.onMismatch(remote, maConn.direction)
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
