/**
 * The proxy's own HTTP/1.1 path: client connections served without Node's HTTP server and client
 * objects, which cost ~50 µs of CPU per proxied request against nginx's ~13. Request heads are
 * parsed by Node's llhttp (llhttp.ts); a request for a VM port that the gate admits goes to the
 * VM over a pooled keep-alive connection (upstream-pool.ts) with the same header policy as the
 * full path (headers.ts), bodies streamed both ways with backpressure and framed again
 * (Content-Length kept, chunked re-chunked). The answer goes back the same way.
 *
 * Anything else — another path, an upgrade, HTTP/1.0, Expect, a signed-URL first visit — hands
 * the connection, at that request's first byte, to Node's HTTP server for good (the gate's
 * handover), so everything this path does not do is done as before. One request is in flight per
 * connection: a pipelined one waits, parsed up to its head, until the answer before it is sent.
 */
import type { Socket } from 'node:net'
import { CorralError } from '../errors.ts'
import { ProxyUpstreamError } from './errors.ts'
import { connectionTokens, HOP_BY_HOP, requestHeadersForVm, withoutGrant } from './headers.ts'
import { CONTINUE, PAUSE, type Llhttp, type LlhttpParser, type ParseError } from './llhttp.ts'
import { httpTargetFor } from './targets.ts'
import type { ConnectionInfo, Http1Gate, HttpServeOptions, HttpTarget, RequestHead } from './types.ts'
import type { ResponseSink, UpstreamConnection, UpstreamPool } from './upstream-pool.ts'

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS'])
/** Bodies up to this size go out in one string with the head; larger ones as they came. */
const SMALL_BODY = 16 * 1024

/** The connections served here, for the timeouts and for stop. */
export class FastHttp {
  readonly llhttp: Llhttp
  readonly pool: UpstreamPool
  readonly clusterDomain: string
  private readonly connections = new Set<Http1Connection>()
  private sweeper: NodeJS.Timeout | undefined
  /** Requests answered here, and connections handed to Node's server (for tests and metrics). */
  readonly counts = { requests: 0, handovers: 0 }

  constructor (llhttp: Llhttp, pool: UpstreamPool, clusterDomain: string) {
    this.llhttp = llhttp
    this.pool = pool
    this.clusterDomain = clusterDomain
  }

  serve (socket: Socket, gate: Http1Gate, options: HttpServeOptions): void {
    const connection = new Http1Connection(this, socket, gate, options)
    this.connections.add(connection)
    // Node's HTTP server checks its timeouts the same way: one timer for all connections.
    this.sweeper ??= setInterval(() => { this.sweep() }, 1000).unref()
  }

  /** Leaves the set: closed, or handed over. */
  forget (connection: Http1Connection): void {
    this.connections.delete(connection)
    if (this.connections.size === 0) {
      clearInterval(this.sweeper)
      this.sweeper = undefined
    }
  }

  close (): void {
    for (const connection of [...this.connections]) connection.destroy()
    this.pool.close()
  }

  private sweep (): void {
    const now = performance.now()
    for (const connection of [...this.connections]) connection.checkTimeouts(now)
  }
}

/** A request taken on this path, from its head to the end of its answer. */
interface Exchange {
  head: Head
  target: HttpTarget
  info: ConnectionInfo
  conn: UpstreamConnection | undefined
  /** The request line and headers for the VM. */
  upstreamHead: string
  started: number
  status: number
  /** The request's body is re-chunked (it came chunked). */
  chunkedRequest: boolean
  /** The answer's body is chunked here (it came chunked, or delimited by the VM's close). */
  chunkedResponse: boolean
  requestDone: boolean
  responseStarted: boolean
  /** May be sent again when a reused connection turns out closed (bodiless and idempotent). */
  retryable: boolean
}

/** A request head with what this path needs to know of it. */
class Head implements RequestHead {
  readonly method: string
  readonly url: string
  readonly rawHeaders: string[]
  readonly major: number
  readonly minor: number
  readonly upgrade: boolean
  readonly keepAlive: boolean
  /** When the head was complete (performance.now()). */
  readonly received = performance.now()

  constructor (method: string, url: string, rawHeaders: string[], major: number, minor: number, upgrade: boolean, keepAlive: boolean) {
    this.method = method
    this.url = url
    this.rawHeaders = rawHeaders
    this.major = major
    this.minor = minor
    this.upgrade = upgrade
    this.keepAlive = keepAlive
  }

  header (name: string): string | undefined {
    const raw = this.rawHeaders
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].length === name.length && raw[i].toLowerCase() === name) return raw[i + 1]
    }
    return undefined
  }

  /** The head as it came (for Node's server, when the connection is handed over). */
  serialize (): Buffer {
    let text = `${this.method} ${this.url} HTTP/${this.major}.${this.minor}\r\n`
    for (let i = 0; i < this.rawHeaders.length; i += 2) text += `${this.rawHeaders[i]}: ${this.rawHeaders[i + 1]}\r\n`
    return Buffer.from(text + '\r\n', 'latin1')
  }
}

/** A head the parser stopped after: its request waits (for the answer before it, or a check). */
interface Parked {
  head: Head
  /** The bytes after it in the read it came in (known once the parser has returned). */
  rest: Buffer | undefined
  /** What to do once `rest` is known, when decided while the parser ran. */
  then: (() => void) | undefined
}

class Http1Connection implements ResponseSink {
  readonly socket: Socket
  private readonly server: FastHttp
  private readonly gate: Http1Gate
  private readonly options: HttpServeOptions
  private readonly parser: LlhttpParser
  private partialHeaders: string[] | undefined
  private partialUrl = ''
  private current: Exchange | undefined
  private parked: Parked | undefined
  private handingOver: Head | undefined
  /** The VM connection does not take more of the request body now. */
  private upstreamFull = false
  /** Corked while the parser runs, so a head and its body go out in one write. */
  private corked: UpstreamConnection | undefined
  /** The answer's bytes from one read of the VM, written at once by flush(). */
  private out = ''
  /** The socket's stream handle, when the parser reads it natively (no 'data' events). */
  private handle: StreamHandle | undefined
  /** The client will send nothing more (its FIN came). */
  private ended = false
  private done = false
  /** When the connection became idle (no request in progress), or when a request head began. */
  private idleSince: number
  private headSince = 0
  /** Heads completed during the read being parsed. */
  private headsThisRead = 0
  /** The last request's target and Host, for the next one (targetOf). */
  private lastTarget: { host: string | undefined, target: HttpTarget } | undefined
  private readonly onRequestComplete = (): void => { this.requestComplete() }

  constructor (server: FastHttp, socket: Socket, gate: Http1Gate, options: HttpServeOptions) {
    this.server = server
    this.socket = socket
    this.gate = gate
    this.options = options
    this.idleSince = performance.now()
    const { llhttp } = server
    const parser = this.parser = llhttp.create('request')
    parser[llhttp.kOnHeaders] = (headers: string[], url: string) => {
      this.partialHeaders = this.partialHeaders == null ? headers : this.partialHeaders.concat(headers)
      this.partialUrl += url
    }
    parser[llhttp.kOnHeadersComplete] = (major: number, minor: number, headers: string[] | undefined, method: number, url: string | undefined, _s: unknown, _m: unknown, upgrade: boolean, keepAlive: boolean): number => {
      const head = new Head(llhttp.methods[method], url ?? this.partialUrl, headers ?? this.partialHeaders ?? [], major, minor, upgrade, keepAlive)
      this.partialHeaders = undefined
      this.partialUrl = ''
      this.headSince = 0
      this.headsThisRead++
      if (this.current != null) {
        // Pipelined: it waits for the answer in flight.
        this.parked = { head, rest: undefined, then: undefined }
        return PAUSE
      }
      return this.dispatch(head, true)
    }
    parser[llhttp.kOnBody] = (chunk: Buffer) => { this.requestBody(chunk) }
    // Set only while a request body is read (start()): a call into JS per request saved otherwise.
    parser[llhttp.kOnMessageComplete] = null
    // As Node's server reads its connections: the parser takes what the socket reads, natively
    // (no buffer and no 'data' event per read in JS). Else 'data' events.
    const handle = (socket as unknown as { _handle?: StreamHandle })._handle
    if (handle?.isStreamBase === true && handle._consumed !== true && typeof handle.readStop === 'function') {
      this.handle = handle
      handle._consumed = true
      parser[llhttp.kOnExecute] = (result: number | ParseError) => { this.executed(result, undefined) }
      parser.consume(handle)
    } else {
      socket.on('data', this.onData)
    }
    socket.on('end', this.onEnd)
    socket.on('error', this.onError)
    socket.on('close', this.onClose)
    socket.on('drain', this.onDrain)
  }

  destroy (): void {
    this.socket.destroy()
  }

  checkTimeouts (now: number): void {
    if (this.headSince > 0 && now - this.headSince > this.options.headersTimeoutMs) {
      this.socket.destroy()
    } else if (this.current == null && this.parked == null && this.headSince === 0 && now - this.idleSince > this.options.keepAliveTimeoutMs) {
      this.socket.destroy()
    }
  }

  // --- the client's bytes ---

  private readonly onData = (chunk: Buffer): void => {
    if (this.parked != null) {
      // Read before reading stopped: kept for when the parked request goes on.
      this.parked.rest = this.parked.rest == null ? chunk : Buffer.concat([this.parked.rest, chunk])
      return
    }
    this.execute(chunk)
  }

  private execute (chunk: Buffer): void {
    this.executed(this.parser.execute(chunk), chunk)
  }

  /** After the parser ran over `chunk` (undefined: the read it consumed itself). */
  private executed (result: number | ParseError, chunk: Buffer | undefined): void {
    // Bytes with no whole head and no request in flight: a head has begun (headers timeout).
    if (this.headsThisRead === 0 && this.current == null && this.parked == null && this.headSince === 0) this.headSince = performance.now()
    this.headsThisRead = 0
    if (this.corked != null) {
      this.corked.stream.uncork()
      this.corked = undefined
    }
    if (this.handingOver != null) {
      const read = chunk ?? this.parser.getCurrentBuffer()
      this.handover(this.handingOver, read.subarray(typeof result === 'number' ? result : result.bytesParsed))
      return
    }
    const parked = this.parked
    if (parked != null && parked.rest == null) {
      // The parser stopped after the parked head: paused there, or (an upgrade) done with HTTP.
      const at = typeof result === 'number' ? result : result.code === 'HPE_PAUSED' ? result.bytesParsed : -1
      if (at >= 0) {
        parked.rest = (chunk ?? this.parser.getCurrentBuffer()).subarray(at)
        this.syncReading()
        parked.then?.()
        return
      }
    }
    if (typeof result !== 'number') this.badRequest(result)
  }

  /**
   * What becomes of a request: forwarded now (CONTINUE: the parser goes on with its body), or
   * parked (PAUSE) for a check or a connection, a refusal, or the handover.
   */
  private dispatch (head: Head, inParser: boolean): number {
    const target = this.eligible(head) ? this.targetOf(head) : undefined
    if (target == null || target.upstreamPath === '') return this.handOverAt(head, inParser)
    let admitted: ConnectionInfo | Promise<ConnectionInfo> | null
    try {
      admitted = this.gate.admit(head, target, this.socket)
    } catch (err) {
      return this.refuseAt(head, target, err, inParser)
    }
    if (admitted == null) return this.handOverAt(head, inParser)
    if (admitted instanceof Promise) {
      const parked = this.park(head, inParser)
      admitted.then(
        info => { if (!this.done) this.connect(parked, target, info) },
        err => { if (!this.done) this.refuse(parked, target, err) }
      )
      return PAUSE
    }
    const conn = this.server.pool.take(target)
    if (conn != null) {
      this.start(head, target, admitted, conn)
      if (!inParser) this.goOn(this.parked as Parked)
      return CONTINUE
    }
    this.connect(this.park(head, inParser), target, admitted)
    return PAUSE
  }

  /** Requests this path takes when they are for a VM port; the rest go to Node's server. */
  private eligible (head: Head): boolean {
    return head.major === 1 && head.minor === 1 && !head.upgrade && head.header('expect') == null
  }

  private park (head: Head, inParser: boolean): Parked {
    if (!inParser) return this.parked as Parked
    const parked: Parked = { head, rest: undefined, then: undefined }
    this.parked = parked
    return parked
  }

  /** Once `rest` is known (right away outside the parser, after it returns inside). */
  private whenParked (parked: Parked, action: () => void): void {
    if (parked.rest != null) action()
    else parked.then = action
  }

  private handOverAt (head: Head, inParser: boolean): number {
    if (inParser) {
      this.handingOver = head
      return PAUSE
    }
    const parked = this.parked as Parked
    this.handover(head, parked.rest ?? Buffer.alloc(0))
    return PAUSE
  }

  private refuseAt (head: Head, target: HttpTarget, err: unknown, inParser: boolean): number {
    this.refuse(this.park(head, inParser), target, err)
    return PAUSE
  }

  private connect (parked: Parked, target: HttpTarget, info: ConnectionInfo): void {
    const conn = this.server.pool.take(target)
    if (conn != null) {
      this.whenParked(parked, () => {
        if (this.done) {
          this.server.pool.release(conn)
          return
        }
        this.start(parked.head, target, info, conn)
        this.goOn(parked)
      })
      return
    }
    this.server.pool.connect(target, info).then(
      conn => {
        this.whenParked(parked, () => {
          if (this.done) {
            conn.destroy()
            return
          }
          this.start(parked.head, target, info, conn)
          this.goOn(parked)
        })
      },
      err => { this.refuse(parked, target, err) }
    )
  }

  /** The parked request went ahead: parse on from after its head. */
  private goOn (parked: Parked): void {
    if (this.parked !== parked) return
    this.parked = undefined
    this.parser.resume()
    this.syncReading()
    // Even with nothing left, this runs the parser to the end of a request without a body.
    this.execute(parked.rest ?? Buffer.alloc(0))
  }

  // --- one exchange ---

  private start (head: Head, target: HttpTarget, info: ConnectionInfo, conn: UpstreamConnection): void {
    const contentLength = head.header('content-length')
    const transferEncoding = head.header('transfer-encoding')
    const chunkedRequest = transferEncoding != null
    const bodiless = !chunkedRequest && (contentLength == null || contentLength === '0')
    const headers = requestHeadersForVm(head.rawHeaders, { client: this.socket.remoteAddress ?? '', encrypted: (this.socket as { encrypted?: boolean }).encrypted === true, prefix: target.prefix, credentialHeader: info.credentialHeader })
    let text = `${head.method} ${withoutGrant(target.upstreamPath)} HTTP/1.1\r\n`
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`
    // The body is framed as it came: its length kept, or chunked again (with the codings named).
    if (chunkedRequest) text += `Transfer-Encoding: ${transferEncoding}\r\n`
    text += '\r\n'
    const exchange: Exchange = {
      head,
      target,
      info,
      conn,
      upstreamHead: text,
      started: head.received,
      status: 0,
      chunkedRequest,
      chunkedResponse: false,
      requestDone: bodiless,
      responseStarted: false,
      retryable: bodiless && IDEMPOTENT.has(head.method)
    }
    this.current = exchange
    if (!bodiless) this.parser[this.server.llhttp.kOnMessageComplete] = this.onRequestComplete
    if (!bodiless && this.corked == null) {
      this.corked = conn
      conn.stream.cork()
    }
    conn.begin(text, this, head.method === 'HEAD')
  }

  private requestBody (chunk: Buffer): void {
    const exchange = this.current
    const conn = exchange?.conn
    if (exchange == null || conn == null || chunk.length === 0) return
    let ok: boolean
    if (exchange.chunkedRequest) {
      conn.write(`${chunk.length.toString(16)}\r\n`)
      conn.write(chunk)
      ok = conn.write('\r\n')
    } else {
      ok = conn.write(chunk)
    }
    if (!ok && !this.upstreamFull) {
      this.upstreamFull = true
      this.syncReading()
      conn.stream.once('drain', () => {
        this.upstreamFull = false
        this.syncReading()
      })
    }
  }

  private requestComplete (): void {
    this.parser[this.server.llhttp.kOnMessageComplete] = null
    const exchange = this.current
    if (exchange == null || exchange.requestDone) return
    exchange.requestDone = true
    if (exchange.chunkedRequest) exchange.conn?.write('0\r\n\r\n')
  }

  // ResponseSink: the VM's answer to the exchange in flight.

  head (status: number, message: string, raw: string[]): void {
    const exchange = this.current as Exchange
    exchange.status = status
    exchange.responseStarted = true
    const dropped = connectionTokens(raw)
    let text = `HTTP/1.1 ${status} ${message}\r\n`
    let length = false
    let codings: string | undefined
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]
      const lower = name.toLowerCase()
      if (lower === 'content-length') length = true
      else if (lower === 'transfer-encoding') codings = raw[i + 1]
      if (HOP_BY_HOP.has(lower) || (dropped != null && dropped.has(lower))) continue
      text += `${name}: ${raw[i + 1]}\r\n`
    }
    const bodiless = exchange.head.method === 'HEAD' || status === 204 || status === 304
    if (!bodiless && (codings != null || !length)) {
      // Chunked again (with the codings it came with), or chunked for an answer delimited by close.
      exchange.chunkedResponse = true
      text += `Transfer-Encoding: ${codings ?? 'chunked'}\r\n`
    }
    if (this.closesAfter(exchange)) text += 'Connection: close\r\n'
    this.out += text + '\r\n'
  }

  body (chunk: Buffer): void {
    const exchange = this.current as Exchange
    if (chunk.length === 0) return
    const framed = exchange.chunkedResponse
    if (chunk.length <= SMALL_BODY) {
      // With the head in one string: one write, no writev of pieces.
      this.out += framed ? `${chunk.length.toString(16)}\r\n${chunk.toString('latin1')}\r\n` : chunk.toString('latin1')
      return
    }
    if (framed) this.out += `${chunk.length.toString(16)}\r\n`
    this.flush()
    this.socket.write(chunk)
    if (framed) this.out += '\r\n'
  }

  flush (): void {
    const out = this.out
    if (out !== '') {
      this.out = ''
      this.socket.write(out, 'latin1')
    }
    // The VM waits while the client is slow; 'drain' reads it again.
    if (this.socket.writableNeedDrain) this.current?.conn?.stream.pause()
  }

  end (): void {
    const exchange = this.current as Exchange
    if (exchange.chunkedResponse) this.out += '0\r\n\r\n'
    this.flush()
    const conn = exchange.conn as UpstreamConnection
    exchange.conn = undefined
    const now = performance.now()
    if (conn.keepAlive && exchange.requestDone) this.server.pool.release(conn, now)
    else conn.destroy()
    this.finish(exchange, exchange.status, now)
  }

  fail (err: Error): void {
    const exchange = this.current as Exchange
    const conn = exchange.conn
    exchange.conn = undefined
    if (exchange.responseStarted) {
      // Cut mid-answer: the client must not take it for complete (what came of it still goes).
      this.flush()
      this.log(exchange, exchange.status)
      this.current = undefined
      this.socket.destroy()
      return
    }
    if (conn?.reused === true && exchange.retryable) {
      // The pooled connection was closed by the VM as it was reused: once more on another.
      exchange.retryable = false
      const retry = (next: UpstreamConnection): void => {
        if (this.done || this.current !== exchange) {
          next.destroy()
          return
        }
        exchange.conn = next
        next.begin(exchange.upstreamHead, this, exchange.head.method === 'HEAD')
      }
      const pooled = this.server.pool.take(exchange.target)
      if (pooled != null) retry(pooled)
      else this.server.pool.connect(exchange.target, exchange.info).then(retry, (e: Error) => { this.answerError(exchange, e) })
      return
    }
    this.answerError(exchange, upstreamError(err, exchange))
  }

  /** No answer from the VM: the error's answer instead. */
  private answerError (exchange: Exchange, err: unknown): void {
    if (this.done || this.current !== exchange) return
    const answer = this.gate.answer(err, exchange.head)
    exchange.status = answer.status
    exchange.responseStarted = true
    this.writeAnswer(answer.status, answer.contentType, answer.body, this.closesAfter(exchange))
    this.finish(exchange, answer.status)
  }

  private finish (exchange: Exchange, status: number, now = performance.now()): void {
    this.log(exchange, status, now)
    this.current = undefined
    this.idleSince = now
    if (this.closesAfter(exchange)) {
      this.close()
      return
    }
    if (this.parked != null) {
      const parked = this.parked
      this.whenParked(parked, () => { this.dispatch(parked.head, false) })
    }
  }

  /** The connection ends after this answer: asked by the client, or its request not read to the end. */
  private closesAfter (exchange: Exchange): boolean {
    return !exchange.head.keepAlive || this.ended || !exchange.requestDone
  }

  /** A refusal (or no connection to the VM) for a parked request, answered here. */
  private refuse (parked: Parked, target: HttpTarget, err: unknown): void {
    if (this.done) return
    this.whenParked(parked, () => {
      if (this.done || this.parked !== parked) return
      const head = parked.head
      const answer = this.gate.answer(err, head)
      const hasBody = head.header('transfer-encoding') != null || (head.header('content-length') ?? '0') !== '0'
      // Its body, if any, is not read: the connection ends after the answer.
      const closing = hasBody || !head.keepAlive || this.ended
      this.writeAnswer(answer.status, answer.contentType, answer.body, closing)
      this.server.counts.requests++
      this.gate.done({ head, target, status: answer.status, ms: performance.now() - head.received })
      if (closing) {
        this.parked = undefined
        this.close()
        return
      }
      this.idleSince = performance.now()
      this.goOn(parked)
    })
  }

  private writeAnswer (status: number, contentType: string, body: string, closing: boolean): void {
    this.flush()
    const text = `HTTP/1.1 ${status} ${statusText(status)}\r\ncontent-type: ${contentType}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${closing ? 'connection: close\r\n' : ''}\r\n${body}`
    this.socket.write(text)
  }

  private log (exchange: Exchange, status: number, now = performance.now()): void {
    this.server.counts.requests++
    this.gate.done({ head: exchange.head, target: exchange.target, subject: exchange.info.subject, status, ms: now - exchange.started })
  }

  /**
   * The VM port a request is for (targets.ts). A client sends request after request for the same
   * one: a target under the last one's prefix (same Host) is the same VM port, checked once.
   */
  private targetOf (head: Head): HttpTarget | undefined {
    const host = head.header('host')
    const last = this.lastTarget
    if (last != null && host === last.host) {
      const { target } = last
      if (target.kind === 'host') return { ...target, upstreamPath: head.url }
      if (head.url.startsWith(target.prefix) && head.url.charCodeAt(target.prefix.length) === 47 /* / */) {
        return { ...target, upstreamPath: head.url.slice(target.prefix.length) }
      }
    }
    const target = httpTargetFor(head.url, host, this.server.clusterDomain)
    if (target != null && target.upstreamPath !== '') this.lastTarget = { host, target }
    return target
  }

  // --- the connection ---

  /** Reading stops while a request waits or the VM takes no more of a body. */
  private syncReading (): void {
    if (this.done) return
    const read = this.parked == null && !this.upstreamFull
    const handle = this.handle
    if (handle == null) {
      if (read) this.socket.resume()
      else this.socket.pause()
    } else if (read !== handle.reading && !this.socket.destroyed) {
      // As Node's server starts and stops reading a socket its parser consumes.
      handle.reading = read
      if (read) handle.readStart()
      else handle.readStop()
    }
  }

  private readonly onDrain = (): void => {
    this.current?.conn?.stream.resume()
  }

  private readonly onEnd = (): void => {
    this.ended = true
    // As Node's server does (without httpAllowHalfOpen): the client's end aborts what is in
    // flight, else the connection ends.
    if (this.current != null || this.parked != null) this.socket.destroy()
    else this.close()
  }

  private readonly onError = (): void => undefined

  private readonly onClose = (): void => {
    const exchange = this.current
    this.current = undefined
    if (exchange != null) {
      exchange.conn?.abandon()
      this.log(exchange, exchange.responseStarted ? exchange.status : 499)
    }
    this.detach()
  }

  /** Ends the connection once what is written has gone (as Node's server does). */
  private close (): void {
    this.detach()
    const socket = this.socket
    socket.end(() => { socket.destroy() })
  }

  private badRequest (err: ParseError): void {
    this.detach()
    // As Node's server answers what it cannot parse.
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400
    const socket = this.socket
    if (this.current == null && socket.writable) socket.end(`HTTP/1.1 ${status} ${statusText(status)}\r\nConnection: close\r\n\r\n`, () => { socket.destroy() })
    else socket.destroy()
    this.current?.conn?.abandon()
  }

  /** The connection and the bytes from `head` on go to Node's HTTP server. */
  private handover (head: Head, rest: Buffer): void {
    this.handingOver = undefined
    this.parked = undefined
    this.detach()
    if (this.ended) {
      // Its FIN has been read already: Node's server could not see the end of this connection.
      this.socket.destroy()
      return
    }
    this.socket.pause()
    this.unconsume()
    this.server.counts.handovers++
    this.gate.handover(this.socket, rest.length > 0 ? Buffer.concat([head.serialize(), rest]) : head.serialize())
  }

  /** This path is done with the connection (closed, ending, or handed over). */
  private detach (): void {
    if (this.done) return
    this.done = true
    this.socket.removeListener('data', this.onData)
    this.socket.removeListener('end', this.onEnd)
    this.socket.removeListener('close', this.onClose)
    this.socket.removeListener('drain', this.onDrain)
    this.socket.removeListener('error', this.onError)
    // A late error (a reset after the end) must not crash the node.
    this.socket.on('error', () => undefined)
    this.server.forget(this)
    this.unconsume()
    // Not now: this may run inside the parser's own read callback, and close() frees it.
    const parser = this.parser
    setImmediate(() => { parser.close() })
  }

  /** The socket's reads go back to its own stream (for Node's server, or to end it). */
  private unconsume (): void {
    const handle = this.handle
    if (handle == null) return
    this.handle = undefined
    this.parser.unconsume()
    handle._consumed = false
    // Reading on, into the socket's own stream now: whoever takes it next (Node's server, which
    // consumes it again at once, or an upgrade's splice after that) expects a socket that reads.
    if (!handle.reading && !this.socket.destroyed) {
      handle.reading = true
      handle.readStart()
    }
  }
}

/** The parts of a socket's stream handle that consuming it uses (as Node's HTTP server does). */
interface StreamHandle {
  isStreamBase?: boolean
  _consumed?: boolean
  reading: boolean
  readStart: () => number
  readStop: () => number
}

function upstreamError (err: Error, exchange: Exchange): Error {
  if (err instanceof CorralError) return err
  const { vm, port } = exchange.target
  return new ProxyUpstreamError(`port ${port} of VM ${vm} closed the connection without answering (${(err as NodeJS.ErrnoException).code ?? err.message}); the service there may have crashed or refused the request`, { vm, port })
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' }

function statusText (status: number): string {
  return STATUS_TEXT[status] ?? 'Error'
}

