/**
 * Node's own HTTP/1 parser (llhttp, native), the one its HTTP server and client parse with, for the
 * proxy's lean data path (fast-http.ts, upstream-pool.ts). It is reached through `_http_common`,
 * which Node keeps for compatibility but does not document, so it is checked once at load: a
 * request and a response are parsed, paused and resumed as this module expects; anything else
 * (another Node, another shape) leaves the lean path off and every request on Node's full stack.
 */
import { createRequire } from 'node:module'

/** The binding's parser. Callbacks are installed under the numeric keys below. */
export interface LlhttpParser {
  initialize: (type: number, resource: object, maxHeaderSize: number, lenientFlags: number) => void
  /** Bytes parsed, or an Error with `code` (HPE_*) and `bytesParsed`. */
  execute: (data: Buffer) => number | ParseError
  /** End of input (a body delimited by the connection's close ends here). */
  finish: () => undefined | ParseError
  pause: () => void
  resume: () => void
  close: () => void
  /** Parse what a stream handle reads, natively (results come to the kOnExecute callback). */
  consume: (handle: object) => void
  unconsume: () => void
  /** The read being parsed, when consuming. */
  getCurrentBuffer: () => Buffer
  [callback: number]: unknown
}

export interface ParseError extends Error {
  code: string
  bytesParsed: number
}

export interface Llhttp {
  create: (type: 'request' | 'response') => LlhttpParser
  /** Method names by llhttp's numbers. */
  methods: string[]
  kOnMessageBegin: number
  kOnHeaders: number
  kOnHeadersComplete: number
  kOnBody: number
  kOnMessageComplete: number
  kOnExecute: number
}

/** Returned from the headers callback: go on with the body. */
export const CONTINUE = 0
/** Returned from a response's headers callback: this message has no body (answer to HEAD). */
export const SKIP_BODY = 1
/**
 * Returned from the headers callback: stop right after the head (llhttp's HPE_PAUSED). execute()
 * then answers a ParseError whose `bytesParsed` is where the head ended; resume() and execute the
 * rest to go on. Used only off the common path: creating that Error costs a stack trace.
 */
export const PAUSE = 21

interface Binding {
  HTTPParser: (new () => LlhttpParser) & Record<string, number>
  methods: string[]
}

function load (): Llhttp | undefined {
  let binding: Binding
  try {
    binding = createRequire(import.meta.url)('node:_http_common') as Binding
  } catch {
    return undefined
  }
  const { HTTPParser, methods } = binding
  if (typeof HTTPParser !== 'function' || !Array.isArray(methods)) return undefined
  const { REQUEST, RESPONSE, kOnMessageBegin, kOnHeaders, kOnHeadersComplete, kOnBody, kOnMessageComplete, kOnExecute } = HTTPParser
  if (![REQUEST, RESPONSE, kOnMessageBegin, kOnHeaders, kOnHeadersComplete, kOnBody, kOnMessageComplete, kOnExecute].every(Number.isInteger)) return undefined
  for (const method of ['consume', 'unconsume', 'getCurrentBuffer']) if (typeof (HTTPParser.prototype as unknown as Record<string, unknown>)[method] !== 'function') return undefined
  const resource = {}
  const llhttp: Llhttp = {
    create: type => {
      const parser = new HTTPParser()
      // Strict parsing (no lenient flags) and Node's default header size limit, as its server.
      parser.initialize(type === 'request' ? REQUEST : RESPONSE, resource, 0, 0)
      return parser
    },
    methods,
    kOnMessageBegin,
    kOnHeaders,
    kOnHeadersComplete,
    kOnBody,
    kOnMessageComplete,
    kOnExecute
  }
  try {
    return selfTest(llhttp) ? llhttp : undefined
  } catch {
    return undefined
  }
}

/** The behaviour the lean path relies on, checked on this Node. */
function selfTest (llhttp: Llhttp): boolean {
  const seen: string[] = []
  const req = llhttp.create('request')
  req[llhttp.kOnHeaders] = () => undefined
  req[llhttp.kOnHeadersComplete] = (major: number, minor: number, headers: string[], method: number, url: string, _s: unknown, _m: unknown, upgrade: boolean, keepAlive: boolean) => {
    seen.push(`${llhttp.methods[method]} ${url} ${major}.${minor} ${headers.join('|')} ${String(upgrade)} ${String(keepAlive)}`)
    return seen.length === 1 ? CONTINUE : PAUSE
  }
  req[llhttp.kOnBody] = (chunk: Buffer) => { seen.push(`body ${chunk.toString('latin1')}`) }
  req[llhttp.kOnMessageComplete] = () => { seen.push('complete') }
  const input = Buffer.from('POST /a?b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\nHost: h\r\n\r\nPU', 'latin1')
  const first = req.execute(input)
  req.resume()
  const second = typeof first === 'number' ? undefined : req.execute(input.subarray(first.bytesParsed))
  req.close()
  const res = llhttp.create('response')
  res[llhttp.kOnHeaders] = () => undefined
  res[llhttp.kOnHeadersComplete] = (_a: number, _b: number, headers: string[], _m: unknown, _u: unknown, status: number, message: string, _up: boolean, keepAlive: boolean) => {
    seen.push(`${status} ${message} ${headers.join('|')} ${String(keepAlive)}`)
    return CONTINUE
  }
  res[llhttp.kOnBody] = (chunk: Buffer) => { seen.push(`body ${chunk.toString('latin1')}`) }
  res[llhttp.kOnMessageComplete] = () => { seen.push('complete') }
  const answered = res.execute(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n', 'latin1'))
  res.close()
  return typeof first !== 'number' && first.code === 'HPE_PAUSED' && first.bytesParsed === 80 && second === 2 &&
    answered === 59 && seen.join('\n') === [
    'POST /a?b 1.1 Host|h|Content-Length|2 false true', 'body hi', 'complete', 'GET /c 1.1 Host|h false true', 'complete',
    '200 OK Transfer-Encoding|chunked true', 'body ok', 'complete'
  ].join('\n')
}

/** Node's llhttp binding, or undefined when this Node does not offer it as expected. */
export const llhttp: Llhttp | undefined = load()
