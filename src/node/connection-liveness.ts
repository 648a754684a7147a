/**
 * Finds half-open connections (a peer gone without a FIN, a NAT that forgot the flow) with yamux's
 * own ping frame: one small frame each way on the connection, and the connection is aborted when
 * no answer comes in time, so libp2p redials or the membership reports the peer lost.
 *
 * This replaces libp2p's connection monitor, which opens a new /ipfs/ping stream per connection
 * per round (stream open, protocol selection, 32 bytes each way, close): with 50 nodes those
 * streams were about half of an idle node's socket writes. It also replaces yamux's keep-alive,
 * which sends the same frame but never acts on a missing answer.
 */
import type { AbortOptions } from '@libp2p/interface'

/** What this needs of a connection: libp2p's Connection, whose muxer (yamux) can ping. */
export interface PingableConnection {
  readonly status: string
  /** Who is at the other end (for the log line when it is closed). */
  readonly remotePeer?: { toString: () => string }
  readonly muxer?: { ping?: (options?: AbortOptions) => Promise<number> }
  abort: (err: Error) => void
}

export interface ConnectionLivenessInit {
  /** How often each connection is pinged. */
  intervalMs: number
  /** How long an answer may take before the connection is judged dead. */
  timeoutMs: number
}

export interface ConnectionLivenessComponents {
  connections: () => PingableConnection[]
  /** A ping was answered (for a counter). */
  onAnswer?: (connection: PingableConnection) => void
  /** A connection was aborted for want of an answer (for a counter and a log line). */
  onDead?: (connection: PingableConnection, err: Error) => void
}

export class HalfOpenConnectionError extends Error {
  constructor (timeoutMs: number) {
    super(`no answer to a keep-alive ping within ${timeoutMs} ms: the connection is half-open or the peer is frozen; closing it so it can be redialled`)
    this.name = 'HalfOpenConnectionError'
  }
}

export class ConnectionLiveness {
  private readonly components: ConnectionLivenessComponents
  private readonly init: ConnectionLivenessInit
  private timer?: NodeJS.Timeout
  private readonly inFlight = new Set<PingableConnection>()

  constructor (components: ConnectionLivenessComponents, init: ConnectionLivenessInit) {
    this.components = components
    this.init = init
  }

  start (): void {
    if (this.timer != null) return
    this.timer = setInterval(() => { this.round() }, this.init.intervalMs)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** One ping per open connection that has none in flight; exported for tests. */
  round (): void {
    for (const connection of this.components.connections()) this.check(connection)
  }

  /**
   * Pings one connection now. Also called for every new connection: yamux grows a stream's window
   * only once it knows the connection's round trip, which its own keep-alive used to measure at once.
   */
  check (connection: PingableConnection): void {
    const ping = connection.muxer?.ping
    if (connection.status !== 'open' || ping == null || this.inFlight.has(connection)) return
    this.inFlight.add(connection)
    const signal = AbortSignal.timeout(this.init.timeoutMs)
    ping.call(connection.muxer, { signal }).then(() => { this.components.onAnswer?.(connection) }, (cause: Error) => {
      if (connection.status !== 'open') return
      // An error other than the timeout (the muxer closing) also means the connection is gone.
      const err = signal.aborted ? new HalfOpenConnectionError(this.init.timeoutMs) : cause
      this.components.onDead?.(connection, err)
      connection.abort(err)
    }).finally(() => this.inFlight.delete(connection))
  }
}
