/**
 * The callee side of an rpc channel (RPC_MUX_PROTOCOL, see rpc-channel.ts): one inbound stream
 * from one caller that carries many unary calls. Each 'req' runs its handler at once, concurrently
 * with the others, up to maxInFlight per channel (more are answered with RpcBusyError, never
 * queued); a 'cancel' aborts that handler's ctx.signal; answers go back through one FrameWriter
 * in the order handlers finish. Never throws: bad frames are counted and dropped, broken framing
 * resets the channel.
 *
 * A caller that sends calls faster than it reads answers makes our writer back up: then reading
 * pauses (yamux stops granting the caller window) until the answers have gone out.
 */
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import type { Logger } from 'pino'
import { MAX_RPC_FRAME_BYTES } from './constants.ts'
import { MeshNotRunningError, RpcAbortedError, RpcProtocolError } from './errors.ts'
import { FrameReader, FrameWriter } from './lp-frames.ts'
import type { MeshCounters } from './metrics.ts'
import { errorFrame, runHandler, streamRequired } from './rpc-outcome.ts'
import type { RpcContext, RpcHandler } from './types.ts'
import { decodeRpcChannelRequest } from './wire.ts'
import type { RpcChannelRequestFrame } from './wire.ts'

/** Answers queued beyond this pause reading until they have gone out. */
const WRITE_HIGH_WATER_BYTES = 4 * 1024 * 1024
/** A paused stream still takes what the caller had in flight (up to yamux's 16 MiB window). */
const READ_BUFFER_BYTES = 17 * 1024 * 1024
/** How long a closing channel may take to flush its last answers. */
const CLOSE_TIMEOUT_MS = 5000

export interface ChannelServerInit {
  /** Peer id of the caller. */
  caller: string
  handler: (method: string) => RpcHandler<any, any> | undefined
  counters: MeshCounters
  log: Logger
  /** Aborted when the node stops: every call is abandoned and the channel reset. */
  lifecycle: AbortSignal | undefined
  maxInFlight: number
}

export function serveChannel (stream: Stream, init: ChannelServerInit): void {
  const server = new ChannelServer(stream, init)
  server.start()
}

class ChannelServer {
  private readonly stream: Stream
  private readonly init: ChannelServerInit
  private readonly reader = new FrameReader(MAX_RPC_FRAME_BYTES)
  private readonly writer: FrameWriter
  /** Calls whose handler runs, by id. */
  private readonly calls = new Map<number, AbortController>()
  /** The caller closed its side: no more calls come; close ours once the last answer is out. */
  private ending = false
  private closed = false

  constructor (stream: Stream, init: ChannelServerInit) {
    this.stream = stream
    this.init = init
    this.writer = new FrameWriter(stream, {
      onError: err => { this.reset(err) },
      onIdle: () => { if (this.stream.readStatus === 'paused') this.stream.resume() }
    })
  }

  start (): void {
    const lifecycle = this.init.lifecycle
    if (lifecycle === undefined || lifecycle.aborted) {
      this.stream.abort(new MeshNotRunningError('the mesh node is not running'))
      return
    }
    this.stream.maxReadBufferLength = Math.max(this.stream.maxReadBufferLength, READ_BUFFER_BYTES)
    this.stream.addEventListener('message', this.onMessage)
    this.stream.addEventListener('remoteCloseWrite', this.onRemoteEnd)
    this.stream.addEventListener('close', this.onClose)
    lifecycle.addEventListener('abort', this.onStop, { once: true })
  }

  private readonly onMessage = (event: StreamMessageEvent): void => {
    const reason = this.reader.push(event.data, this.onFrame)
    if (reason !== undefined && !this.closed) {
      this.init.counters.drop('rpc', reason)
      this.reset(new RpcProtocolError(`the caller sent a frame with a bad length (${reason}); resetting its rpc channel`))
    }
  }

  private readonly onFrame = (bytes: Uint8Array): void => {
    if (this.closed) return
    const decoded = decodeRpcChannelRequest(bytes, MAX_RPC_FRAME_BYTES)
    if (!decoded.ok) {
      // Delimited by its length, so the channel stays usable; the call it meant (if any) times out on the caller.
      this.init.counters.drop('rpc', decoded.reason)
      return
    }
    const frame = decoded.value
    if (frame.t === 'cancel') {
      this.init.counters.accept('rpc')
      // A call that has already answered is no longer here: nothing to do.
      this.calls.get(frame.id)?.abort(new RpcAbortedError('the caller cancelled the call'))
      return
    }
    if (this.calls.has(frame.id)) {
      this.init.counters.drop('rpc', 'invalid')
      return
    }
    this.init.counters.accept('rpc')
    if (this.calls.size >= this.init.maxInFlight) {
      this.answer(errorFrame({
        name: 'RpcBusyError',
        message: `it already runs ${this.init.maxInFlight} calls from this node, its limit; retry later or send fewer calls at once`,
        details: { limit: this.init.maxInFlight }
      }, frame.id))
      return
    }
    this.run(frame).catch((err: unknown) => { this.init.log.warn({ err, caller: this.init.caller }, 'an rpc channel call failed outside its handler') })
  }

  private async run (frame: Extract<RpcChannelRequestFrame, { t: 'req' }>): Promise<void> {
    const { id, method } = frame
    const handler = this.init.handler(method)
    if (handler === undefined) {
      this.answer(errorFrame({ name: 'RpcMethodNotFoundError', message: `no handler for rpc method "${method}"` }, id))
      return
    }
    const controller = new AbortController()
    this.calls.set(id, controller)
    const ctx: RpcContext = {
      peerId: this.init.caller,
      signal: controller.signal,
      send: async () => { throw streamRequired(method) }
    }
    const end = await runHandler(handler, frame.body, ctx, method, id)
    this.calls.delete(id)
    // Cancelled, or the channel is gone: nobody waits for this answer.
    if (!controller.signal.aborted) this.answer(end)
    if (this.ending) this.finish()
  }

  private answer (frame: Uint8Array): void {
    if (this.closed || !this.writer.write(frame)) return
    this.init.counters.inc('rpcServed')
    if (this.writer.queuedBytes > WRITE_HIGH_WATER_BYTES && this.stream.readStatus === 'readable') this.stream.pause()
  }

  private readonly onRemoteEnd = (): void => {
    this.ending = true
    this.finish()
  }

  /** Close our side once the caller has closed its side and every call has answered. */
  private finish (): void {
    if (this.closed || this.calls.size > 0) return
    this.writer.end(AbortSignal.timeout(CLOSE_TIMEOUT_MS)).catch((err: unknown) => { this.reset(err as Error) })
  }

  private readonly onStop = (): void => {
    this.reset(new MeshNotRunningError('the mesh node is stopping'))
  }

  private reset (err: Error): void {
    if (this.closed) return
    this.stream.abort(err)
    // abort() dispatches 'close' synchronously; this covers a stream that was closed already.
    this.onClose()
  }

  private readonly onClose = (event?: StreamCloseEvent): void => {
    if (this.closed) return
    this.closed = true
    this.stream.removeEventListener('message', this.onMessage)
    this.stream.removeEventListener('remoteCloseWrite', this.onRemoteEnd)
    this.stream.removeEventListener('close', this.onClose)
    this.init.lifecycle?.removeEventListener('abort', this.onStop)
    const reason = new RpcAbortedError('the caller went away')
    for (const controller of this.calls.values()) controller.abort(reason)
    this.calls.clear()
    if (event?.error !== undefined) this.init.log.debug({ err: event.error, caller: this.init.caller }, 'rpc channel from a peer ended')
  }
}
