/**
 * A TCP connection to a VM port that reads into one reused 1 MiB buffer (net's `onread`) instead
 * of a fresh 64 KiB buffer per read: a download through the proxy then costs about a quarter of
 * the CPU per byte. The bytes go to the writable that splice() attaches; when it is a socket they
 * are written straight from the buffer (the next read waits until the kernel has them), anything
 * else gets a copy. Only for connections that are spliced raw: 'data' events are never emitted.
 */
import { connect, Socket, type NetConnectOpts } from 'node:net'
import type { Writable } from 'node:stream'

const READ_BYTES = 1024 * 1024
/** Read before anything is attached (a server that speaks first): kept, reading paused past this. */
const MAX_EARLY_BYTES = 1024 * 1024

const kFastRead = Symbol('corral.fastRead')

interface Sink {
  dest: Writable
  zeroCopy: boolean
  count: (bytes: number) => void
}

export class FastRead {
  readonly socket: Socket
  private sink: Sink | undefined
  private early: Buffer[] = []
  private earlyBytes = 0
  private waiting = false

  constructor (options: NetConnectOpts) {
    const buffer = Buffer.allocUnsafe(READ_BYTES)
    this.socket = connect({ ...options, onread: { buffer, callback: (n: number, buf: Uint8Array) => this.onRead(n, buf as Buffer) } } as NetConnectOpts)
    ;(this.socket as Socket & { [kFastRead]?: FastRead })[kFastRead] = this
  }

  /** Sends everything read, from now on, to `dest`, honouring its backpressure. */
  attach (dest: Writable, count: (bytes: number) => void): void {
    this.sink = { dest, zeroCopy: dest instanceof Socket, count }
    const early = this.early
    this.early = []
    this.earlyBytes = 0
    for (const chunk of early) {
      count(chunk.length)
      dest.write(chunk)
    }
    if (dest.writableNeedDrain) this.waitFor(dest)
    else this.socket.resume()
  }

  private onRead (n: number, buffer: Buffer): boolean {
    const chunk = buffer.subarray(0, n)
    const sink = this.sink
    if (sink == null) {
      this.early.push(Buffer.from(chunk))
      this.earlyBytes += n
      return this.earlyBytes < MAX_EARLY_BYTES
    }
    sink.count(n)
    const { dest } = sink
    if (dest.destroyed || dest.writableEnded) return false
    if (sink.zeroCopy) {
      const queuedBefore = dest.writableLength
      let done = false
      dest.write(chunk, () => {
        done = true
        if (this.waiting) this.resume()
      })
      // Written to the kernel at once: the buffer is free for the next read. Otherwise the
      // socket still holds it, so reading waits for the write to finish.
      if (done || dest.writableLength <= queuedBefore) return true
      this.waiting = true
      return false
    }
    if (!dest.write(Buffer.from(chunk))) {
      this.waitFor(dest)
      return false
    }
    return true
  }

  private waitFor (dest: Writable): void {
    this.waiting = true
    dest.once('drain', () => { this.resume() })
  }

  private resume (): void {
    this.waiting = false
    if (!this.socket.destroyed) this.socket.resume()
  }
}

/** The FastRead behind a socket the dialer made with it, if any. */
export function fastReadOf (stream: unknown): FastRead | undefined {
  return (stream as { [kFastRead]?: FastRead } | undefined)?.[kFastRead]
}
