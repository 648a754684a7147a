/**
 * Request/response between nodes, so any node can forward an API call to the node that owns the
 * resource. Two protocols:
 *
 * - Unary calls (request()) to another node go over that peer's rpc channel, one long-lived stream
 *   of RPC_MUX_PROTOCOL that carries every call by id (rpc-channel.ts, rpc-channel-server.ts).
 *   A peer without it (an older corral) is called as below.
 * - Streaming calls (requestStream()) take one stream of /corral/rpc/1.0.0 each, length-prefixed
 *   JSON frames, with the stream's own backpressure per call:
 *
 *     caller -> callee: { t: 'req', method, body }
 *     callee -> caller: { t: 'data', body }*  then  { t: 'end', ok: true, body } | { t: 'end', ok: false, error }
 *
 * Calls to this node itself run in-process with the same semantics. Every failure becomes a typed
 * error: a dead, unknown or vanished callee is PeerUnavailableError naming the node, never a hang
 * (each wait is bounded by a timeout).
 */
import { lpStream } from '@libp2p/utils'
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { Connection, Stream } from '@libp2p/interface'
import type { Logger } from 'pino'
import { MAX_RPC_CALLS_IN_FLIGHT, MAX_RPC_FRAME_BYTES, MAX_RPC_STREAM_FRAMES } from './constants.ts'
import {
  MeshNotRunningError, PeerUnavailableError, RpcAbortedError, RpcProtocolError, RpcTimeoutError
} from './errors.ts'
import type { MeshCounters } from './metrics.ts'
import { RpcChannels } from './rpc-channel.ts'
import type { RpcChannel } from './rpc-channel.ts'
import { serveChannel } from './rpc-channel-server.ts'
import { encodeFrame, remoteError, runHandler, streamRequired } from './rpc-outcome.ts'
import { lengthErrorReason } from './sync.ts'
import type { RequestOptions, RpcContext, RpcHandler } from './types.ts'
import { decodeRpcRequest, decodeRpcResponse, encodeJson } from './wire.ts'
import type { RpcResponseFrame } from './wire.ts'

/** How long a callee waits for the request frame after the stream opens. */
const REQUEST_READ_TIMEOUT_MS = 10_000
/** How long a callee waits for its last frame to flush before resetting the stream. */
const CLOSE_TIMEOUT_MS = 5000
/** Bounds the opening of an rpc channel (a dial, if there is no connection yet, and a protocol negotiation). */
const CHANNEL_OPEN_TIMEOUT_MS = 10_000
/** A peer found without rpc channels is asked again after this long (it may have been upgraded). */
const LEGACY_RETRY_MS = 60_000
/** setTimeout fires at once for longer delays. */
const MAX_TIMER_MS = 2 ** 31 - 1

export interface RpcServiceInit {
  selfId: string
  log: Logger
  counters: MeshCounters
  defaultTimeoutMs: number
  /** "name (peer id)" for messages. */
  describe: (peerId: string) => string
  /** 'dead' and 'unknown' peers are refused before any dial. */
  reachability: (peerId: string) => 'reachable' | 'dead' | 'unknown'
  dialProtocol: (peerId: string, signal: AbortSignal) => Promise<Stream>
  /** Opens an rpc channel: a stream of RPC_MUX_PROTOCOL, negotiated in full (see rpc-channel.ts). */
  dialChannel: (peerId: string, signal: AbortSignal) => Promise<Stream>
  /** Aborted when the node stops. */
  lifecycle: () => AbortSignal | undefined
}

/** What a failure of one call is judged by. */
interface CallInfo {
  peerId: string
  method: string
  timeoutMs: number
  options: RequestOptions
  lifecycle: AbortSignal
}

/** Where the frames of one call come from: a remote stream, or a handler run in-process. */
interface FrameSource {
  next: (signal: AbortSignal) => Promise<RpcResponseFrame>
  close: (finished: boolean) => void
}

export class RpcService {
  private readonly handlers = new Map<string, RpcHandler<any, any>>()
  private readonly init: RpcServiceInit
  private readonly channels: RpcChannels
  /** Ids of this node's calls on its channels; unique per node, so per channel too. */
  private nextCallId = 0

  constructor (init: RpcServiceInit) {
    this.init = init
    this.channels = new RpcChannels({
      counters: init.counters,
      log: init.log,
      describe: init.describe,
      dial: init.dialChannel,
      lifecycle: init.lifecycle,
      openTimeoutMs: CHANNEL_OPEN_TIMEOUT_MS,
      legacyRetryMs: LEGACY_RETRY_MS,
      clock: Date.now
    })
  }

  handle (method: string, handler: RpcHandler<any, any>): void {
    this.handlers.set(method, handler)
  }

  unhandle (method: string): void {
    this.handlers.delete(method)
  }

  async request<Res> (peerId: string, method: string, body: unknown, options: RequestOptions = {}): Promise<Res> {
    if (peerId === this.init.selfId) return await lastValue<Res>(this.call(peerId, method, body, options, false))
    return await this.unary<Res>(peerId, method, body, options)
  }

  requestStream<Frame, Res> (peerId: string, method: string, body: unknown, options: RequestOptions = {}): AsyncGenerator<Frame, Res, undefined> {
    return this.call(peerId, method, body, options, true) as AsyncGenerator<Frame, Res, undefined>
  }

  /** The callee side of an rpc channel: many unary calls on one stream (rpc-channel-server.ts). */
  onChannel (stream: Stream, connection: Connection): void {
    serveChannel(stream, {
      caller: connection.remotePeer.toString(),
      handler: method => this.handlers.get(method),
      counters: this.init.counters,
      log: this.init.log,
      lifecycle: this.init.lifecycle(),
      maxInFlight: MAX_RPC_CALLS_IN_FLIGHT
    })
  }

  /** The callee side of a streaming call: one stream, one request. Never throws; bad input is counted and dropped. */
  async onStream (stream: Stream, connection: Connection): Promise<void> {
    const caller = connection.remotePeer.toString()
    const lp = lpStream(stream, { maxDataLength: MAX_RPC_FRAME_BYTES })
    const gone = new AbortController()
    const onClose = (): void => { gone.abort(new Error('the caller went away')) }
    stream.addEventListener('close', onClose)
    const lifecycle = this.init.lifecycle()
    const signal = lifecycle === undefined ? gone.signal : AbortSignal.any([gone.signal, lifecycle])
    try {
      let bytes
      try {
        bytes = await lp.read({ signal: AbortSignal.any([signal, AbortSignal.timeout(REQUEST_READ_TIMEOUT_MS)]) })
      } catch (err) {
        const reason = lengthErrorReason(err)
        if (reason !== undefined) this.init.counters.drop('rpc', reason)
        stream.abort(err as Error)
        return
      }
      const decoded = decodeRpcRequest(bytes.subarray(), MAX_RPC_FRAME_BYTES)
      if (!decoded.ok) {
        this.init.counters.drop('rpc', decoded.reason)
        stream.abort(new RpcProtocolError(`malformed rpc request (${decoded.reason})`))
        return
      }
      this.init.counters.accept('rpc')
      const { method, body } = decoded.value
      const handler = this.handlers.get(method)
      let end: Uint8Array
      if (handler === undefined) {
        end = encodeJson({ t: 'end', ok: false, error: { name: 'RpcMethodNotFoundError', message: `no handler for rpc method "${method}"` } })
      } else {
        let sent = 0
        const ctx: RpcContext = {
          peerId: caller,
          signal,
          send: async (frame: unknown) => {
            if (signal.aborted) throw new RpcAbortedError(`the caller of ${method} went away; stop sending`)
            await lp.write(encodeFrame({ t: 'data', body: frame }, method), { signal })
            // A write into a non-full buffer resolves at once; a handler sending in a tight loop
            // would then starve the event loop and never see the caller cancel.
            if (++sent % 32 === 0) await new Promise(resolve => setImmediate(resolve))
          }
        }
        end = await runHandler(handler, body, ctx, method)
      }
      await lp.write(end, { signal })
      await stream.close({ signal: AbortSignal.timeout(CLOSE_TIMEOUT_MS) })
      this.init.counters.inc('rpcServed')
    } catch (err) {
      this.init.log.debug({ err, caller }, 'rpc stream ended early')
      stream.abort(err as Error)
    } finally {
      stream.removeEventListener('close', onClose)
    }
  }

  /**
   * A unary call to another node over its rpc channel. The fast path (a channel is open) costs one
   * frame each way, a timer and a map entry: no stream, no AbortSignal.any.
   */
  private async unary<Res> (peerId: string, method: string, body: unknown, options: RequestOptions): Promise<Res> {
    const lifecycle = this.running()
    if (options.signal?.aborted === true) throw new RpcAbortedError(`the request ${method} to ${this.init.describe(peerId)} was aborted before it started`)
    this.checkReachable(peerId, method)
    const timeoutMs = options.timeoutMs ?? this.init.defaultTimeoutMs
    const info: CallInfo = { peerId, method, timeoutMs, options, lifecycle }
    const id = this.nextCallId++
    const request = encodeFrame({ t: 'req', id, method, body }, method)
    let channel = this.channels.get(peerId)
    let remainingMs = timeoutMs
    if (channel === undefined) {
      const started = performance.now()
      const timeout = AbortSignal.timeout(timeoutMs)
      const parts = [timeout, lifecycle]
      if (options.signal !== undefined) parts.push(options.signal)
      let acquired
      try {
        acquired = await this.channels.acquire(peerId, AbortSignal.any(parts))
      } catch (err) {
        throw this.callError(err, info, timeout.aborted, 'could not open an rpc channel')
      }
      if (acquired === 'legacy') return await lastValue<Res>(this.call(peerId, method, body, { ...options, timeoutMs }, false))
      channel = acquired
      remainingMs = Math.max(1, timeoutMs - (performance.now() - started))
    }
    return await this.callOnChannel<Res>(channel, id, request, info, remainingMs)
  }

  private async callOnChannel<Res> (channel: RpcChannel, id: number, request: Uint8Array, info: CallInfo, remainingMs: number): Promise<Res> {
    const { options, method } = info
    return await new Promise<Res>((resolve, reject) => {
      let settled = false
      const settle = (err: Error | undefined, value?: unknown): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        options.signal?.removeEventListener('abort', onAbort)
        if (err === undefined) resolve(value as Res)
        else reject(err)
      }
      const timer = setTimeout(() => {
        channel.cancel(id)
        settle(this.callError(undefined, info, true, 'no answer'))
      }, Math.min(remainingMs, MAX_TIMER_MS))
      const onAbort = (): void => {
        channel.cancel(id)
        settle(this.callError(undefined, info, false, 'aborted'))
      }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      channel.call(id, request, {
        onEnd: frame => {
          if (frame.ok) settle(undefined, frame.body)
          else settle(remoteError(frame.error, this.init.describe(info.peerId), method))
        },
        onLost: err => { settle(this.callError(err, info, false, 'connection lost')) }
      })
    })
  }

  /** The lifecycle signal of a running node; MeshNotRunningError otherwise. */
  private running (): AbortSignal {
    const lifecycle = this.init.lifecycle()
    if (lifecycle === undefined || lifecycle.aborted) throw new MeshNotRunningError('The mesh node is not running; start it before sending requests.')
    return lifecycle
  }

  /** 'dead' and 'unknown' peers are refused before any dial. */
  private checkReachable (peerId: string, method: string): void {
    const reach = this.init.reachability(peerId)
    if (reach !== 'reachable') {
      throw new PeerUnavailableError(reach === 'dead'
        ? `${this.init.describe(peerId)} is unavailable: the mesh considers it dead (no heartbeat for a while).`
        : `no node with peer id ${peerId} is known to this node; check the id against the member list.`, { peerId, method })
    }
  }

  /** The typed error for a call that failed: the caller's abort, the node's stop and the timeout come first. */
  private callError (err: unknown, info: CallInfo, timedOut: boolean, phase: string): Error {
    const { peerId, method, timeoutMs, options, lifecycle } = info
    if (options.signal?.aborted === true) return new RpcAbortedError(`the request ${method} to ${this.init.describe(peerId)} was aborted`)
    if (lifecycle.aborted) return new MeshNotRunningError(`the mesh node stopped during the request ${method}`)
    if (timedOut) {
      return new RpcTimeoutError(`${this.init.describe(peerId)} did not answer ${method} within ${timeoutMs} ms; it may be overloaded or cut off.`,
        { peerId, method, timeoutMs })
    }
    if (err instanceof RpcProtocolError) return err
    return new PeerUnavailableError(`${this.init.describe(peerId)} is unavailable (${phase}: ${(err as Error)?.message ?? String(err)}); ` +
      'it may have stopped or be unreachable from this node.', { peerId, method }, { cause: err })
  }

  private async * call (peerId: string, method: string, body: unknown, options: RequestOptions, perFrame: boolean): AsyncGenerator<unknown, unknown, undefined> {
    const lifecycle = this.running()
    if (options.signal?.aborted === true) throw new RpcAbortedError(`the request ${method} to ${this.init.describe(peerId)} was aborted before it started`)
    const timeoutMs = options.timeoutMs ?? this.init.defaultTimeoutMs
    const info: CallInfo = { peerId, method, timeoutMs, options, lifecycle }
    const request = encodeFrame({ t: 'req', method, body }, method)
    const whole = perFrame ? undefined : AbortSignal.timeout(timeoutMs)
    const signalFor = (): { signal: AbortSignal, timeout: AbortSignal } => {
      const timeout = whole ?? AbortSignal.timeout(timeoutMs)
      const parts = [timeout, lifecycle]
      if (options.signal !== undefined) parts.push(options.signal)
      return { signal: AbortSignal.any(parts), timeout }
    }
    const fail = (err: unknown, timeout: AbortSignal, phase: string): Error => this.callError(err, info, timeout.aborted, phase)

    let source: FrameSource
    if (peerId === this.init.selfId) {
      source = this.localSource(method, body, perFrame)
    } else {
      this.checkReachable(peerId, method)
      const { signal, timeout } = signalFor()
      let stream: Stream
      try {
        stream = await this.init.dialProtocol(peerId, signal)
      } catch (err) {
        throw fail(err, timeout, 'dial failed')
      }
      // One length-prefixed reader per stream: each one buffers every incoming message.
      const lp = lpStream(stream, { maxDataLength: MAX_RPC_FRAME_BYTES })
      try {
        await lp.write(request, { signal })
      } catch (err) {
        stream.abort(err as Error)
        throw fail(err, timeout, 'could not send the request')
      }
      source = this.remoteSource(stream, lp, peerId, method)
    }

    let finished = false
    try {
      for (let frames = 0; frames <= MAX_RPC_STREAM_FRAMES; frames++) {
        const { signal, timeout } = signalFor()
        let frame: RpcResponseFrame
        try {
          frame = await source.next(signal)
        } catch (err) {
          throw fail(err, timeout, 'connection lost')
        }
        if (frame.t === 'data') {
          yield frame.body
          continue
        }
        finished = true
        if (frame.ok) return frame.body
        throw remoteError(frame.error, this.init.describe(peerId), method)
      }
      throw new RpcProtocolError(`${this.init.describe(peerId)} sent more than ${MAX_RPC_STREAM_FRAMES} frames for ${method}`)
    } finally {
      source.close(finished)
    }
  }

  private remoteSource (stream: Stream, lp: LengthPrefixedStream<Stream>, peerId: string, method: string): FrameSource {
    return {
      next: async (signal) => {
        let bytes
        try {
          bytes = await lp.read({ signal })
        } catch (err) {
          const reason = lengthErrorReason(err)
          if (reason === undefined) throw err
          this.init.counters.drop('rpc', reason)
          throw new RpcProtocolError(`${this.init.describe(peerId)} sent a bad frame for ${method} (${reason})`, { peerId, method })
        }
        const decoded = decodeRpcResponse(bytes.subarray(), MAX_RPC_FRAME_BYTES)
        if (!decoded.ok) {
          this.init.counters.drop('rpc', decoded.reason)
          throw new RpcProtocolError(`${this.init.describe(peerId)} sent a bad frame for ${method} (${decoded.reason})`, { peerId, method })
        }
        this.init.counters.accept('rpc')
        return decoded.value
      },
      close: (finished) => {
        if (finished) {
          stream.close({ signal: AbortSignal.timeout(CLOSE_TIMEOUT_MS) }).catch((err: Error) => { stream.abort(err) })
        } else {
          stream.abort(new RpcAbortedError(`the caller stopped reading ${method}`))
        }
      }
    }
  }

  /**
   * A call to this node runs the handler in-process but keeps remote semantics (JSON copies of
   * body and frames, errors as RpcRemoteError), so callers need not care where a resource lives.
   */
  private localSource (method: string, body: unknown, perFrame: boolean): FrameSource {
    const handler = this.handlers.get(method)
    const queue: Array<{ frame: RpcResponseFrame, taken?: () => void }> = []
    let wake: (() => void) | undefined
    const cancelled = new AbortController()
    const lifecycle = this.init.lifecycle()
    const signal = lifecycle === undefined ? cancelled.signal : AbortSignal.any([cancelled.signal, lifecycle])
    const push = (frame: RpcResponseFrame, taken?: () => void): void => {
      queue.push({ frame, taken })
      wake?.()
    }
    if (handler === undefined) {
      push({ t: 'end', ok: false, error: { name: 'RpcMethodNotFoundError', message: `no handler for rpc method "${method}"` } })
    } else {
      const ctx: RpcContext = {
        peerId: this.init.selfId,
        signal,
        send: async (frame: unknown) => {
          if (!perFrame) throw streamRequired(method)
          if (signal.aborted) throw new RpcAbortedError(`the caller of ${method} went away; stop sending`)
          const copy = jsonCopy(frame)
          await new Promise<void>((resolve, reject) => {
            const onAbort = (): void => { reject(new RpcAbortedError(`the caller of ${method} went away; stop sending`)) }
            signal.addEventListener('abort', onAbort, { once: true })
            push({ t: 'data', body: copy }, () => {
              signal.removeEventListener('abort', onAbort)
              resolve()
            })
          })
        }
      }
      void runHandler(handler, jsonCopy(body), ctx, method).then(bytes => {
        const decoded = decodeRpcResponse(bytes, Number.MAX_SAFE_INTEGER)
        push(decoded.ok ? decoded.value : { t: 'end', ok: false, error: { name: 'RpcProtocolError', message: 'unencodable response' } })
      })
    }
    return {
      next: async (abort) => {
        while (queue.length === 0) {
          await new Promise<void>((resolve, reject) => {
            const onAbort = (): void => { reject(abort.reason) }
            if (abort.aborted) { onAbort(); return }
            abort.addEventListener('abort', onAbort, { once: true })
            wake = () => {
              abort.removeEventListener('abort', onAbort)
              resolve()
            }
          })
          wake = undefined
        }
        const item = queue.shift()!
        item.taken?.()
        return item.frame
      },
      close: (finished) => {
        if (!finished) cancelled.abort(new RpcAbortedError(`the caller stopped reading ${method}`))
      }
    }
  }
}

/** Drain a call's frames (a unary call has none) and return its answer. */
async function lastValue<Res> (calls: AsyncGenerator<unknown, unknown, undefined>): Promise<Res> {
  for (;;) {
    const step = await calls.next()
    if (step.done === true) return step.value as Res
  }
}

function jsonCopy (value: unknown): unknown {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value))
}
