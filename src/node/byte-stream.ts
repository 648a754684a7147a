/**
 * A libp2p stream as a Node.js Duplex, for protocols that carry raw bytes (the proxy's TCP tunnel):
 * callers outside src/node pipe it like a socket and never see libp2p's stream API.
 *
 * Backpressure runs both ways: a full write buffer waits for the stream's drain, and a reader that
 * stops reading pauses the stream, which stops yamux window updates so the remote stops sending.
 * Half-close is kept: end() closes our writing side only, the remote's close ends our reading side.
 */
import { Duplex } from 'node:stream'
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'

/**
 * A paused stream still takes what the remote had in flight (up to yamux's 16 MiB window) and is
 * reset past maxReadBufferLength, so that must hold a whole window.
 */
const READ_BUFFER_BYTES = 17 * 1024 * 1024

export function streamDuplex (stream: Stream): Duplex {
  return new StreamDuplex(stream)
}

class StreamDuplex extends Duplex {
  private readonly stream: Stream

  constructor (stream: Stream) {
    super({ allowHalfOpen: true, highWaterMark: 256 * 1024 })
    this.stream = stream
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, READ_BUFFER_BYTES)
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('end', this.onRemoteEnd)
    stream.addEventListener('close', this.onClose)
  }

  private readonly onMessage = (event: StreamMessageEvent): void => {
    const data = event.data
    let more = true
    if (data instanceof Uint8Array) more = this.push(data)
    else for (const chunk of data) more = this.push(chunk)
    if (!more && this.stream.readStatus === 'readable') this.stream.pause()
  }

  /** 'end', not 'remoteCloseWrite': it waits until data the stream still buffers was delivered. */
  private readonly onRemoteEnd = (): void => {
    this.push(null)
  }

  private readonly onClose = (event: StreamCloseEvent): void => {
    if (event.error != null) {
      this.destroy(event.error)
      return
    }
    // Closed cleanly both ways; autoDestroy frees us once our side has ended and been read.
    this.push(null)
  }

  override _read (): void {
    if (this.stream.readStatus === 'paused') this.stream.resume()
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      if (this.stream.send(chunk)) {
        callback()
        return
      }
    } catch (err) {
      callback(err as Error)
      return
    }
    this.stream.onDrain().then(() => { callback() }, (err: Error) => { callback(err) })
  }

  override _final (callback: (error?: Error | null) => void): void {
    this.stream.close().then(() => { callback() }, (err: Error) => { callback(err) })
  }

  override _destroy (error: Error | null, callback: (error?: Error | null) => void): void {
    this.stream.removeEventListener('message', this.onMessage)
    this.stream.removeEventListener('end', this.onRemoteEnd)
    this.stream.removeEventListener('close', this.onClose)
    if (this.stream.status === 'open' || this.stream.status === 'closing') {
      this.stream.abort(error ?? new Error('the local end closed the stream'))
    }
    callback(error)
  }
}
