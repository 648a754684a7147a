/**
 * HTTP/1.1 connections to VM ports for the proxy's own HTTP path (fast-http.ts): made through the
 * dialer (the VM's port forward on this node, or a tunnel to the node that runs it), each with a
 * response parser (Node's llhttp), kept alive and reused per VM port, newest first. A VM that
 * stops has its connections cut by the dialer, which drops them from here too.
 */
import type { Duplex } from 'node:stream'
import { DEFAULTS } from './constants.ts'
import type { Dialer } from './dialer.ts'
import { CONTINUE, SKIP_BODY, type Llhttp, type LlhttpParser } from './llhttp.ts'
import type { ConnectionInfo, ProxyTarget } from './types.ts'

/** Who gets the answer to the request in flight on a connection. */
export interface ResponseSink {
  head: (status: number, message: string, rawHeaders: string[]) => void
  body: (chunk: Buffer) => void
  /** The answer is complete. */
  end: () => void
  /** The connection failed or closed before the answer was complete. */
  fail: (err: Error) => void
  /** One read of the VM's bytes has been handled: what it made may go out now, in one write. */
  flush: () => void
}

export class UpstreamConnection {
  readonly key: string
  readonly stream: Duplex
  private readonly parser: LlhttpParser
  private readonly pool: UpstreamPool
  private sink: ResponseSink | undefined
  /** The request in flight is HEAD: its answer has no body whatever its headers say. */
  private bodiless = false
  /** A 1xx answer is being parsed: not the answer, which follows it. */
  private informational = false
  private partialHeaders: string[] | undefined
  private error: Error | undefined
  /** The answer's head has come (a failure after this cuts the answer instead of replacing it). */
  answered = false
  /** The VM keeps the connection open after this answer. */
  keepAlive = true
  /** Taken from the pool: a failure before any answer may be a close racing its reuse. */
  reused = false
  idleSince = 0
  closed = false

  constructor (pool: UpstreamPool, key: string, stream: Duplex, llhttp: Llhttp) {
    this.pool = pool
    this.key = key
    this.stream = stream
    const parser = this.parser = llhttp.create('response')
    parser[llhttp.kOnHeaders] = (headers: string[]) => {
      // Heads in several reads or with many fields come in parts; trailers (after the body) are dropped.
      if (!this.answered) this.partialHeaders = this.partialHeaders == null ? headers : this.partialHeaders.concat(headers)
    }
    parser[llhttp.kOnHeadersComplete] = (_major: number, _minor: number, headers: string[] | undefined, _m: unknown, _u: unknown, status: number, message: string, _upgrade: boolean, keepAlive: boolean): number => {
      const raw = headers ?? this.partialHeaders ?? []
      this.partialHeaders = undefined
      if (status < 200) {
        // 100 Continue and 103 Early Hints are not passed on (as on Node's client); a 101 nobody
        // asked for ends the connection.
        if (status === 101) this.fail(new Error('the VM switched protocols without being asked to'))
        this.informational = true
        return CONTINUE
      }
      this.answered = true
      this.keepAlive = keepAlive
      this.sink?.head(status, message, raw)
      return this.bodiless ? SKIP_BODY : CONTINUE
    }
    parser[llhttp.kOnBody] = (chunk: Buffer) => { this.sink?.body(chunk) }
    parser[llhttp.kOnMessageComplete] = () => {
      if (this.informational) {
        this.informational = false
        return
      }
      const sink = this.sink
      this.sink = undefined
      sink?.end()
    }
    stream.on('data', this.onData)
    stream.on('end', this.onEnd)
    stream.on('error', (err: Error) => { this.error ??= err })
    stream.on('close', this.onClose)
  }

  /** Sends a request head (its body follows through write) and routes the answer to `sink`. */
  begin (head: string, sink: ResponseSink, headRequest: boolean): void {
    this.sink = sink
    this.bodiless = headRequest
    this.answered = false
    this.keepAlive = true
    this.stream.write(head, 'latin1')
  }

  write (chunk: Buffer | string): boolean {
    return this.stream.write(chunk, 'latin1')
  }

  /** Stops routing answers (the client left): the connection cannot be reused. */
  abandon (): void {
    this.sink = undefined
    this.destroy()
  }

  destroy (): void {
    if (this.closed) return
    this.closed = true
    this.stream.destroy()
    this.pool.forget(this)
  }

  /** Bytes from the VM: 'data' of a tunnel, or a local connection's read into the pool's buffer. */
  readonly onData = (chunk: Buffer): void => {
    const sink = this.sink
    if (sink == null) {
      // Bytes nobody asked for on an idle connection: it is not HTTP we can follow.
      this.destroy()
      return
    }
    const result = this.parser.execute(chunk)
    sink.flush()
    if (typeof result !== 'number') this.fail(new Error(`the VM answered with malformed HTTP (${result.code})`))
  }

  /** The VM closed its side: the end of an answer delimited by the close, or of the connection. */
  private readonly onEnd = (): void => {
    if (this.sink != null) {
      const result = this.parser.finish()
      if (result != null) this.fail(new Error(`the VM closed the connection mid-answer (${result.code})`))
    }
    this.destroy()
  }

  private readonly onClose = (): void => {
    this.closed = true
    this.pool.forget(this)
    this.parser.close()
    if (this.sink != null) this.fail(this.error ?? new Error('the connection to the VM closed before the answer was complete'))
  }

  private fail (err: Error): void {
    const sink = this.sink
    this.sink = undefined
    this.destroy()
    sink?.fail(err)
  }
}

/** Keep-alive connections per VM port, and the dialing of new ones. */
export class UpstreamPool {
  private readonly dialer: Dialer
  private readonly llhttp: Llhttp
  private readonly idle = new Map<string, UpstreamConnection[]>()
  private sweeper: NodeJS.Timeout | undefined
  /**
   * Local connections read into this one buffer instead of a new one per read (no allocation,
   * no stream machinery): each read is parsed at once, and the parser copies what it keeps.
   */
  private readonly readBuffer = Buffer.allocUnsafe(64 * 1024)

  constructor (dialer: Dialer, llhttp: Llhttp) {
    this.dialer = dialer
    this.llhttp = llhttp
  }

  /** An idle connection to the VM port, if one is kept. */
  take (target: ProxyTarget): UpstreamConnection | undefined {
    const list = this.idle.get(keyOf(target))
    const conn = list?.pop()
    if (conn == null) return undefined
    conn.reused = true
    return conn
  }

  /** A new connection to the VM port (typed errors as Dialer.dial). */
  async connect (target: ProxyTarget, info: ConnectionInfo): Promise<UpstreamConnection> {
    let conn: UpstreamConnection | undefined
    let early = false
    const callback = (n: number, buffer: Uint8Array): boolean => {
      if (conn == null) {
        // The VM spoke before it was asked: not HTTP we can follow.
        early = true
        return false
      }
      conn.onData((buffer as Buffer).subarray(0, n))
      return true
    }
    const stream = await this.dialer.dial(target, info, { onread: { buffer: this.readBuffer, callback } })
    conn = new UpstreamConnection(this, keyOf(target), stream, this.llhttp)
    if (early) conn.destroy()
    return conn
  }

  /** Back to the pool after a complete exchange (closed instead when the pool is full). */
  release (conn: UpstreamConnection, now = performance.now()): void {
    if (conn.closed) return
    let list = this.idle.get(conn.key)
    if (list == null) {
      list = []
      this.idle.set(conn.key, list)
    }
    if (list.length >= DEFAULTS.maxIdleSocketsPerTarget) {
      conn.destroy()
      return
    }
    conn.idleSince = now
    // A connection held back by a slow client must read again, or it would not see its own close.
    conn.stream.resume()
    list.push(conn)
    this.sweeper ??= setInterval(() => { this.sweep() }, 1000).unref()
  }

  /** A connection that closed or was destroyed leaves the pool. */
  forget (conn: UpstreamConnection): void {
    const list = this.idle.get(conn.key)
    if (list == null) return
    const i = list.indexOf(conn)
    if (i >= 0) list.splice(i, 1)
    if (list.length === 0) this.idle.delete(conn.key)
  }

  idleCount (): number {
    let n = 0
    for (const list of this.idle.values()) n += list.length
    return n
  }

  close (): void {
    clearInterval(this.sweeper)
    this.sweeper = undefined
    for (const list of [...this.idle.values()]) for (const conn of [...list]) conn.destroy()
    this.idle.clear()
  }

  /** Closes connections idle longer than DEFAULTS.idleSocketMs. */
  private sweep (): void {
    const oldest = performance.now() - DEFAULTS.idleSocketMs
    for (const list of [...this.idle.values()]) {
      // Oldest first: the list is pushed and popped at its end.
      while (list.length > 0 && list[0].idleSince < oldest) list[0].destroy()
    }
    if (this.idle.size === 0) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
    }
  }
}

function keyOf (target: ProxyTarget): string {
  return `${target.vm}:${target.port}`
}
