/**
 * Rpc channels, the caller side: unary calls (request()) to a peer travel over one long-lived
 * stream of RPC_MUX_PROTOCOL instead of a stream each, which saved per call a yamux stream, a
 * protocol negotiation, a peer-store update, a reader and a close handshake on both nodes.
 *
 *   caller -> callee: { t: 'req', id, method, body } | { t: 'cancel', id }
 *   callee -> caller: { t: 'end', id, ok: true, body } | { t: 'end', id, ok: false, error }
 *
 * Length-prefixed JSON frames as on RPC_PROTOCOL, with the caller's id for the call. Each node
 * calls over its own outbound channel and only serves on inbound ones (rpc-channel-server.ts), so
 * ids never collide. A channel opens on the first call to a peer (concurrent first calls share the
 * one open), is reused by every later call, and is dropped when its stream closes or resets, its
 * connection closes, the callee breaks the protocol, or the node stops: the calls in flight on it
 * then fail (the caller turns that into PeerUnavailableError), and the next call opens a new one.
 *
 * Nothing closes an idle channel: libp2p 3 records a stream's inactivityTimeout but does not
 * enforce it, and the connection under it stays busy with keep-alive pings (connection-liveness.ts).
 */
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import type { Logger } from 'pino'
import { MAX_RPC_FRAME_BYTES } from './constants.ts'
import { MeshNotRunningError, PeerUnavailableError, RpcProtocolError } from './errors.ts'
import { FrameReader, FrameWriter } from './lp-frames.ts'
import type { MeshCounters } from './metrics.ts'
import { decodeRpcChannelResponse, encodeJson } from './wire.ts'
import type { RpcChannelResponseFrame } from './wire.ts'

/** One call waiting on a channel. */
export interface ChannelCall {
  /** The callee's answer. */
  onEnd: (frame: RpcChannelResponseFrame) => void
  /** The channel is gone before the answer came: whether the handler ran is unknown. */
  onLost: (err: Error) => void
}

export interface RpcChannelInit {
  counters: MeshCounters
  /** "node name (peer id)" of the callee, for messages. */
  callee: () => string
  /** Called once, when the channel has closed for whatever reason. */
  onClosed: () => void
}

/** One outbound stream carrying many unary calls to one peer. */
export class RpcChannel {
  private readonly stream: Stream
  private readonly init: RpcChannelInit
  private readonly reader = new FrameReader(MAX_RPC_FRAME_BYTES)
  private readonly writer: FrameWriter
  private readonly calls = new Map<number, ChannelCall>()
  private closed = false

  constructor (stream: Stream, init: RpcChannelInit) {
    this.stream = stream
    this.init = init
    this.writer = new FrameWriter(stream, { onError: err => { this.close(err) } })
    stream.addEventListener('message', this.onMessage)
    // The callee closed its side: no answer can come any more.
    stream.addEventListener('remoteCloseWrite', this.onRemoteEnd)
    stream.addEventListener('close', this.onClose)
  }

  /** Send a call's encoded 'req' frame; exactly one of `call`'s callbacks runs later (never before this returns). */
  call (id: number, request: Uint8Array, call: ChannelCall): void {
    if (this.closed || !this.writer.write(request)) {
      queueMicrotask(() => { call.onLost(new Error('the rpc channel closed')) })
      return
    }
    this.calls.set(id, call)
  }

  /** The caller gave up on a call (timeout, abort): forget it and tell the callee to abort its handler. */
  cancel (id: number): void {
    if (!this.calls.delete(id) || this.closed) return
    this.writer.write(encodeJson({ t: 'cancel', id }))
  }

  /** Reset the stream; every call in flight fails with `err`. */
  close (err: Error): void {
    if (this.closed) return
    this.failAll(err)
    this.stream.abort(err)
    this.onClose()
  }

  private readonly onMessage = (event: StreamMessageEvent): void => {
    const reason = this.reader.push(event.data, this.onFrame)
    if (reason !== undefined && !this.closed) {
      this.init.counters.drop('rpc', reason)
      this.close(new RpcProtocolError(`${this.init.callee()} sent an rpc channel frame with a bad length (${reason})`))
    }
  }

  private readonly onFrame = (bytes: Uint8Array): void => {
    if (this.closed) return
    const decoded = decodeRpcChannelResponse(bytes, MAX_RPC_FRAME_BYTES)
    if (!decoded.ok) {
      // Which call it answered cannot be trusted: fail them all now rather than let one time out.
      this.init.counters.drop('rpc', decoded.reason)
      this.close(new RpcProtocolError(`${this.init.callee()} sent a bad frame on its rpc channel (${decoded.reason})`))
      return
    }
    this.init.counters.accept('rpc')
    const call = this.calls.get(decoded.value.id)
    // Absent: an answer to a call that timed out or was cancelled.
    if (call === undefined) return
    this.calls.delete(decoded.value.id)
    call.onEnd(decoded.value)
  }

  private readonly onRemoteEnd = (): void => {
    this.close(new Error('the callee closed the rpc channel'))
  }

  private readonly onClose = (event?: StreamCloseEvent): void => {
    if (this.closed) return
    this.closed = true
    this.stream.removeEventListener('message', this.onMessage)
    this.stream.removeEventListener('remoteCloseWrite', this.onRemoteEnd)
    this.stream.removeEventListener('close', this.onClose)
    this.failAll(event?.error ?? new Error('the rpc channel closed'))
    this.init.onClosed()
  }

  private failAll (err: Error): void {
    const calls = [...this.calls.values()]
    this.calls.clear()
    for (const call of calls) call.onLost(err)
  }
}

export interface RpcChannelsInit {
  counters: MeshCounters
  log: Logger
  describe: (peerId: string) => string
  /** Open a stream of RPC_MUX_PROTOCOL to the peer (full protocol negotiation). */
  dial: (peerId: string, signal: AbortSignal) => Promise<Stream>
  /** Aborted when the node stops: every channel is reset. */
  lifecycle: () => AbortSignal | undefined
  /** Bounds one channel's opening, whoever waits for it. */
  openTimeoutMs: number
  /** A peer that does not speak RPC_MUX_PROTOCOL (an older corral) is called a stream per call for this long. */
  legacyRetryMs: number
  clock: () => number
}

/** What acquire() gives: a channel, or 'legacy' for a peer without RPC_MUX_PROTOCOL. */
export type ChannelOrLegacy = RpcChannel | 'legacy'

/** This node's outbound channels, at most one per peer. */
export class RpcChannels {
  private readonly init: RpcChannelsInit
  private readonly channels = new Map<string, RpcChannel>()
  private readonly opening = new Map<string, Promise<ChannelOrLegacy>>()
  private readonly legacyUntil = new Map<string, number>()

  constructor (init: RpcChannelsInit) {
    this.init = init
  }

  /** The open channel to a peer, if there is one (the fast path: no promise). */
  get (peerId: string): RpcChannel | undefined {
    return this.channels.get(peerId)
  }

  /**
   * The channel to a peer, opened if needed; `signal` bounds only this caller's wait (an opening
   * others wait for goes on). Rejects with the dial's error.
   */
  async acquire (peerId: string, signal: AbortSignal): Promise<ChannelOrLegacy> {
    const open = this.channels.get(peerId)
    if (open !== undefined) return open
    const until = this.legacyUntil.get(peerId)
    if (until !== undefined) {
      if (this.init.clock() < until) return 'legacy'
      this.legacyUntil.delete(peerId)
    }
    let opening = this.opening.get(peerId)
    if (opening === undefined) {
      opening = this.open(peerId).finally(() => { this.opening.delete(peerId) })
      this.opening.set(peerId, opening)
    }
    return await raceAbort(opening, signal)
  }

  private async open (peerId: string): Promise<ChannelOrLegacy> {
    const lifecycle = this.init.lifecycle()
    if (lifecycle === undefined || lifecycle.aborted) throw new MeshNotRunningError('the mesh node is not running')
    let stream: Stream
    try {
      stream = await this.init.dial(peerId, AbortSignal.any([AbortSignal.timeout(this.init.openTimeoutMs), lifecycle]))
    } catch (err) {
      if ((err as Error)?.name === 'UnsupportedProtocolError') {
        this.init.log.info({ peer: peerId }, 'peer has no rpc channels (an older corral?); calling it a stream per call')
        this.legacyUntil.set(peerId, this.init.clock() + this.init.legacyRetryMs)
        return 'legacy'
      }
      throw err
    }
    if (lifecycle.aborted) {
      stream.abort(new MeshNotRunningError('the mesh node is stopping'))
      throw new MeshNotRunningError('the mesh node stopped while opening an rpc channel')
    }
    // Closed between the dial and now (its 'close' event is gone): not worth keeping.
    if (stream.status !== 'open' || stream.writeStatus !== 'writable') {
      throw new PeerUnavailableError(`${this.init.describe(peerId)} closed the rpc channel as it opened`, { peerId })
    }
    const onStop = (): void => { channel.close(new MeshNotRunningError('the mesh node is stopping')) }
    const channel: RpcChannel = new RpcChannel(stream, {
      counters: this.init.counters,
      callee: () => this.init.describe(peerId),
      onClosed: () => {
        lifecycle.removeEventListener('abort', onStop)
        if (this.channels.get(peerId) === channel) this.channels.delete(peerId)
      }
    })
    lifecycle.addEventListener('abort', onStop, { once: true })
    this.channels.set(peerId, channel)
    return channel
  }
}

/** `promise`, or the signal's reason if it aborts first. */
async function raceAbort<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw signal.reason
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([promise, new Promise<never>((_resolve, reject) => {
      onAbort = () => { reject(signal.reason) }
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}
