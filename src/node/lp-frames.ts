/**
 * Length-prefixed frames (an unsigned varint length, then the bytes: what lpStream reads and
 * writes) on a long-lived libp2p stream that several callers share, as rpc channels do.
 *
 * FrameReader is fed the stream's 'message' events and hands over whole frames. It never awaits
 * per frame (lpStream reads the prefix a byte at a time, one promise each) and keeps partial
 * frames as the chunks they arrived in until the frame is complete.
 *
 * FrameWriter is the stream's one writer: frames from any number of concurrent senders are queued
 * and go out whole, in order, never interleaved; the frames queued within one turn go out together
 * in sends of up to BATCH_BYTES (one yamux frame and one encryption for many small frames, where
 * a send each would pay those per frame); and while the stream asks for a drain nothing more is
 * handed to it.
 */
import type { Stream, StreamMessageEvent } from '@libp2p/interface'
import type { DropReason } from './types.ts'

/** Bytes of a varint holding `n`. */
function varintLength (n: number): number {
  let bytes = 1
  while (n >= 0x80) {
    n = Math.floor(n / 0x80)
    bytes++
  }
  return bytes
}

export class FrameReader {
  private readonly maxFrameBytes: number
  private readonly maxPrefixBytes: number
  private chunks: Uint8Array[] = []
  private buffered = 0
  /** Length of the frame being read once its prefix is in; -1 while reading a prefix. */
  private frameLength = -1
  private broken: DropReason | undefined

  constructor (maxFrameBytes: number) {
    this.maxFrameBytes = maxFrameBytes
    this.maxPrefixBytes = varintLength(maxFrameBytes)
  }

  /**
   * Take the bytes of one 'message' event; calls onFrame for each frame they complete. Returns why
   * the framing is broken (a length over the limit): after that the stream cannot be read.
   */
  push (data: StreamMessageEvent['data'], onFrame: (frame: Uint8Array) => void): DropReason | undefined {
    if (this.broken !== undefined) return this.broken
    if (data instanceof Uint8Array) this.append(data)
    else for (const chunk of data) this.append(chunk)
    for (;;) {
      if (this.frameLength < 0) {
        const length = this.readPrefix()
        if (typeof length === 'string') {
          this.broken = length
          this.chunks = []
          this.buffered = 0
          return length
        }
        if (length === undefined) return undefined
        this.frameLength = length
      }
      if (this.buffered < this.frameLength) return undefined
      const frame = this.take(this.frameLength)
      this.frameLength = -1
      onFrame(frame)
      if (this.broken !== undefined) return this.broken
    }
  }

  private append (chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.byteLength
  }

  /** The next frame's length (its prefix consumed), undefined until the prefix is in, or why it is refused. */
  private readPrefix (): number | DropReason | undefined {
    let value = 0
    let scale = 1
    for (let i = 0; i < this.maxPrefixBytes; i++) {
      if (i >= this.buffered) return undefined
      const byte = this.byteAt(i)
      value += (byte & 0x7f) * scale
      if (byte < 0x80) {
        if (value > this.maxFrameBytes) return 'oversized'
        this.take(i + 1)
        return value
      }
      scale *= 0x80
    }
    // A longer prefix announces a length over the limit anyway.
    return 'oversized'
  }

  private byteAt (index: number): number {
    for (const chunk of this.chunks) {
      if (index < chunk.byteLength) return chunk[index]!
      index -= chunk.byteLength
    }
    return 0
  }

  /** Remove and return the first `n` buffered bytes (a view when they sit in one chunk). */
  private take (n: number): Uint8Array {
    this.buffered -= n
    const first = this.chunks[0]
    if (first === undefined) return new Uint8Array(0)
    if (first.byteLength >= n) {
      if (first.byteLength === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    const out = new Uint8Array(n)
    let offset = 0
    while (offset < n) {
      const chunk = this.chunks[0]!
      const want = n - offset
      if (chunk.byteLength <= want) {
        out.set(chunk, offset)
        offset += chunk.byteLength
        this.chunks.shift()
      } else {
        out.set(chunk.subarray(0, want), offset)
        this.chunks[0] = chunk.subarray(want)
        offset = n
      }
    }
    return out
  }
}

/** Frames queued together go out in sends of about this size: fewer yamux frames, bounded copies. */
const BATCH_BYTES = 256 * 1024

export interface FrameWriterInit {
  /** The stream refused a write (it closed under us): the frames still queued are lost. */
  onError: (err: Error) => void
  /** Everything queued has been handed to the stream and it needs no drain. */
  onIdle?: () => void
}

export class FrameWriter {
  private readonly stream: Stream
  private readonly init: FrameWriterInit
  private queue: Uint8Array[] = []
  private queueBytes = 0
  private scheduled = false
  private draining = false
  private closed = false
  private idleWaiters: Array<() => void> = []

  constructor (stream: Stream, init: FrameWriterInit) {
    this.stream = stream
    this.init = init
  }

  /** Bytes queued and not yet handed to the stream. */
  get queuedBytes (): number {
    return this.queueBytes
  }

  /** True while the stream holds writes back (its buffer is full). */
  get blocked (): boolean {
    return this.draining
  }

  /** Queue one frame's bytes (without prefix). Returns false, and drops it, once the writer has failed or ended. */
  write (frame: Uint8Array): boolean {
    if (this.closed) return false
    this.queue.push(frame)
    this.queueBytes += frame.byteLength
    if (!this.scheduled && !this.draining) {
      this.scheduled = true
      queueMicrotask(this.flush)
    }
    return true
  }

  /** No more frames: hand over what is queued, then close the stream's writing side; bounded by `signal`. */
  async end (signal: AbortSignal): Promise<void> {
    if (!this.closed && (this.scheduled || this.draining)) {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => { reject(signal.reason) }
        if (signal.aborted) { onAbort(); return }
        signal.addEventListener('abort', onAbort, { once: true })
        this.idleWaiters.push(() => {
          signal.removeEventListener('abort', onAbort)
          resolve()
        })
      })
    }
    this.closed = true
    await this.stream.close({ signal })
  }

  private readonly flush = (): void => {
    this.scheduled = false
    while (!this.closed && !this.draining) {
      if (this.queue.length === 0) {
        this.idle()
        return
      }
      let more: boolean
      try {
        more = this.stream.send(this.batch())
      } catch (err) {
        this.fail(err)
        return
      }
      if (!more) {
        // The bytes are in the stream's buffer; the next ones wait until it drains.
        this.draining = true
        this.stream.onDrain().then(() => {
          this.draining = false
          this.flush()
        }, (err: unknown) => { this.fail(err) })
      }
    }
  }

  /** Take frames off the queue, prefixed, in one buffer of about BATCH_BYTES (or one larger frame). */
  private batch (): Uint8Array {
    let count = 0
    let size = 0
    while (count < this.queue.length && (count === 0 || size < BATCH_BYTES)) {
      const frame = this.queue[count++]!
      size += varintLength(frame.byteLength) + frame.byteLength
    }
    const frames = count === this.queue.length ? this.queue : this.queue.slice(0, count)
    this.queue = count === this.queue.length ? [] : this.queue.slice(count)
    const out = new Uint8Array(size)
    let offset = 0
    for (const frame of frames) {
      this.queueBytes -= frame.byteLength
      let n = frame.byteLength
      while (n >= 0x80) {
        out[offset++] = (n & 0x7f) | 0x80
        n = Math.floor(n / 0x80)
      }
      out[offset++] = n
      out.set(frame, offset)
      offset += frame.byteLength
    }
    return out
  }

  private idle (): void {
    this.init.onIdle?.()
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const resolve of waiters) resolve()
  }

  private fail (err: unknown): void {
    if (this.closed) return
    this.closed = true
    this.queue = []
    this.queueBytes = 0
    this.init.onError(err instanceof Error ? err : new Error(String(err)))
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const resolve of waiters) resolve()
  }
}
