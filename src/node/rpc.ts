/**
 * Request/response between nodes over /corral/rpc/1.0.0, so any node can forward an API call to
 * the node that owns the resource. One stream per call, length-prefixed JSON frames:
 *
 *   caller -> callee: { t: 'req', method, body }
 *   callee -> caller: { t: 'data', body }*  then  { t: 'end', ok: true, body } | { t: 'end', ok: false, error }
 *
 * Every failure becomes a typed error: a dead, unknown or vanished callee is PeerUnavailableError
 * naming the node, never a hang (each wait is bounded by a timeout).
 */
import { lpStream } from '@libp2p/utils'
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { Connection, Stream } from '@libp2p/interface'
import type { Logger } from 'pino'
import { MAX_RPC_FRAME_BYTES, MAX_RPC_STREAM_FRAMES } from './constants.ts'
import {
  MeshNotRunningError, PeerUnavailableError, RpcAbortedError, RpcBodyTooLargeError, RpcMethodNotFoundError,
  RpcProtocolError, RpcRemoteError, RpcTimeoutError
} from './errors.ts'
import type { MeshCounters } from './metrics.ts'
import { lengthErrorReason } from './sync.ts'
import type { RequestOptions, RpcContext, RpcHandler } from './types.ts'
import { decodeRpcRequest, decodeRpcResponse, encodeJson } from './wire.ts'
import type { RpcErrorBody, RpcResponseFrame } from './wire.ts'

/** How long a callee waits for the request frame after the stream opens. */
const REQUEST_READ_TIMEOUT_MS = 10_000
/** How long a callee waits for its last frame to flush before resetting the stream. */
const CLOSE_TIMEOUT_MS = 5000

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
  /** Aborted when the node stops. */
  lifecycle: () => AbortSignal | undefined
}

/** Where the frames of one call come from: a remote stream, or a handler run in-process. */
interface FrameSource {
  next: (signal: AbortSignal) => Promise<RpcResponseFrame>
  close: (finished: boolean) => void
}

export class RpcService {
  private readonly handlers = new Map<string, RpcHandler<any, any>>()
  private readonly init: RpcServiceInit

  constructor (init: RpcServiceInit) {
    this.init = init
  }

  handle (method: string, handler: RpcHandler<any, any>): void {
    this.handlers.set(method, handler)
  }

  unhandle (method: string): void {
    this.handlers.delete(method)
  }

  async request<Res> (peerId: string, method: string, body: unknown, options: RequestOptions = {}): Promise<Res> {
    const calls = this.call(peerId, method, body, options, false)
    for (;;) {
      const step = await calls.next()
      if (step.done === true) return step.value as Res
    }
  }

  requestStream<Frame, Res> (peerId: string, method: string, body: unknown, options: RequestOptions = {}): AsyncGenerator<Frame, Res, undefined> {
    return this.call(peerId, method, body, options, true) as AsyncGenerator<Frame, Res, undefined>
  }

  /** The callee side: one stream, one request. Never throws; bad input is counted and dropped. */
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

  private async * call (peerId: string, method: string, body: unknown, options: RequestOptions, perFrame: boolean): AsyncGenerator<unknown, unknown, undefined> {
    const lifecycle = this.init.lifecycle()
    if (lifecycle === undefined || lifecycle.aborted) throw new MeshNotRunningError('The mesh node is not running; start it before sending requests.')
    if (options.signal?.aborted === true) throw new RpcAbortedError(`the request ${method} to ${this.init.describe(peerId)} was aborted before it started`)
    const timeoutMs = options.timeoutMs ?? this.init.defaultTimeoutMs
    const request = encodeFrame({ t: 'req', method, body }, method)
    const whole = perFrame ? undefined : AbortSignal.timeout(timeoutMs)
    const signalFor = (): { signal: AbortSignal, timeout: AbortSignal } => {
      const timeout = whole ?? AbortSignal.timeout(timeoutMs)
      const parts = [timeout, lifecycle]
      if (options.signal !== undefined) parts.push(options.signal)
      return { signal: AbortSignal.any(parts), timeout }
    }
    const fail = (err: unknown, timeout: AbortSignal, phase: string): Error => {
      if (options.signal?.aborted === true) return new RpcAbortedError(`the request ${method} to ${this.init.describe(peerId)} was aborted`)
      if (lifecycle.aborted) return new MeshNotRunningError(`the mesh node stopped during the request ${method}`)
      if (timeout.aborted) {
        return new RpcTimeoutError(`${this.init.describe(peerId)} did not answer ${method} within ${timeoutMs} ms; it may be overloaded or cut off.`,
          { peerId, method, timeoutMs })
      }
      if (err instanceof RpcProtocolError) return err
      return new PeerUnavailableError(`${this.init.describe(peerId)} is unavailable (${phase}: ${(err as Error)?.message ?? String(err)}); ` +
        'it may have stopped or be unreachable from this node.', { peerId, method }, { cause: err })
    }

    let source: FrameSource
    if (peerId === this.init.selfId) {
      source = this.localSource(method, body)
    } else {
      const reach = this.init.reachability(peerId)
      if (reach !== 'reachable') {
        throw new PeerUnavailableError(reach === 'dead'
          ? `${this.init.describe(peerId)} is unavailable: the mesh considers it dead (no heartbeat for a while).`
          : `no node with peer id ${peerId} is known to this node; check the id against the member list.`, { peerId, method })
      }
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
  private localSource (method: string, body: unknown): FrameSource {
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

/** Run a handler and encode its outcome as the end frame (an error frame if it threw). */
async function runHandler (handler: RpcHandler<any, any>, body: unknown, ctx: RpcContext, method: string): Promise<Uint8Array> {
  try {
    const result: unknown = await handler(body, ctx)
    return encodeFrame({ t: 'end', ok: true, body: result }, method)
  } catch (err) {
    return encodeJson({ t: 'end', ok: false, error: serializeError(err) })
  }
}

function encodeFrame (frame: object, method: string): Uint8Array {
  const bytes = encodeJson(frame)
  if (bytes.byteLength > MAX_RPC_FRAME_BYTES) {
    throw new RpcBodyTooLargeError(`A frame of ${method} is ${bytes.byteLength} bytes, over the ${MAX_RPC_FRAME_BYTES}-byte limit; ` +
      'split it into several frames with a streaming call.', { method, size: bytes.byteLength })
  }
  return bytes
}

function serializeError (err: unknown): RpcErrorBody {
  const e = err as { name?: unknown, message?: unknown, details?: unknown }
  const out: RpcErrorBody = {
    name: typeof e?.name === 'string' ? e.name.slice(0, 128) : 'Error',
    message: (typeof e?.message === 'string' ? e.message : String(err)).slice(0, 8192)
  }
  if (e?.details !== null && typeof e?.details === 'object' && !Array.isArray(e.details)) {
    try {
      out.details = JSON.parse(JSON.stringify(e.details)) as Record<string, unknown>
    } catch {}
  }
  return out
}

function remoteError (error: RpcErrorBody, node: string, method: string): Error {
  if (error.name === 'RpcMethodNotFoundError') {
    return new RpcMethodNotFoundError(`${node} has no handler for ${method}; it may run another corral version.`, { method })
  }
  return new RpcRemoteError(`${node} failed ${method}: ${error.message}`, { method, remote: error })
}

function jsonCopy (value: unknown): unknown {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value))
}
