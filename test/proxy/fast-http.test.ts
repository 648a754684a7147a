import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { createServer, request, type IncomingMessage, type Server } from 'node:http'
import { connect, createServer as createTcpServer, type Socket } from 'node:net'
import fc from 'fast-check'
import { WebSocketServer } from 'ws'
import { startProxyFixture, listen, eventually, DOMAIN, type ProxyFixture } from './fixture.ts'

// The proxy's own HTTP/1.1 path (src/proxy/fast-http.ts), driven over raw loopback connections:
// keep-alive and pipelining, the handover to Node's server for everything else, framing of
// bodies both ways, retries, cuts and refusals, backpressure, and a property test over random
// request sequences split at random points.
let fx: ProxyFixture
let vm = ''
let token = ''
const servers: Array<Server | import('node:net').Server> = []
function track<T extends Server | import('node:net').Server> (server: T): T {
  servers.push(server)
  return server
}
/** The last request the upstream saw. */
let seen: { method: string, url: string, rawHeaders: string[] } | undefined

const digest = (data: Buffer): string => createHash('sha256').update(data).digest('hex').slice(0, 16)

before(async () => {
  fx = await startProxyFixture()
  vm = (await fx.createVm()).id
  token = fx.tokens.ci
  const upstream = track(createServer((req, res) => {
    seen = { method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders }
    const url = new URL(req.url ?? '/', 'http://vm')
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      const summary = `${req.method ?? ''} ${url.pathname} ${body.length} ${digest(body)}`
      switch (url.searchParams.get('frame')) {
        case 'chunked':
          res.write(summary.slice(0, 5))
          res.end(summary.slice(5))
          return
        case '204':
          res.writeHead(204).end()
          return
        case '304':
          res.writeHead(304, { etag: '"x"' }).end()
          return
        case '103':
          res.writeEarlyHints({ link: '</style.css>; rel=preload' })
          res.end(summary)
          return
        default:
          res.writeHead(200, { 'content-length': Buffer.byteLength(summary), 'x-frame': 'length' })
          res.end(req.method === 'HEAD' ? undefined : summary)
      }
    })
  }))
  new WebSocketServer({ server: upstream }).on('connection', ws => { ws.on('message', (data, binary) => ws.send(data, { binary })) })
  await listen(upstream)
  fx.serve(vm, 8080, upstream)
})
after(async () => {
  await fx?.stop()
  for (const server of servers) {
    (server as Server).closeAllConnections?.()
    server.close()
  }
})

interface Answer { status: number, headers: Record<string, string>, body: Buffer }

/** A raw client connection that reads HTTP/1.1 answers, framed by length, chunks or close. */
class RawClient {
  readonly socket: Socket
  private buffer = Buffer.alloc(0)
  private closed = false
  private wake: (() => void) | undefined

  constructor (socket: Socket) {
    this.socket = socket
    socket.on('data', (c: Buffer) => { this.buffer = Buffer.concat([this.buffer, c]); this.wake?.() })
    socket.on('close', () => { this.closed = true; this.wake?.() })
    socket.on('error', () => undefined)
  }

  static async open (): Promise<RawClient> {
    const url = new URL(fx.url)
    const socket = connect(Number(url.port), url.hostname)
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    return new RawClient(socket)
  }

  get isClosed (): boolean {
    return this.closed
  }

  async answer (options: { head?: boolean } = {}): Promise<Answer> {
    const end = await this.until(() => this.buffer.indexOf('\r\n\r\n'))
    const lines = this.buffer.subarray(0, end).toString('latin1').split('\r\n')
    this.buffer = this.buffer.subarray(end + 4)
    const status = Number(lines[0].split(' ')[1])
    const headers: Record<string, string> = {}
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
    }
    if (options.head === true || status === 204 || status === 304) return { status, headers, body: Buffer.alloc(0) }
    if (headers['content-length'] != null) {
      const length = Number(headers['content-length'])
      await this.until(() => this.buffer.length >= length ? length : -1)
      const body = this.buffer.subarray(0, length)
      this.buffer = this.buffer.subarray(length)
      return { status, headers, body }
    }
    if (headers['transfer-encoding'] === 'chunked') {
      const parts: Buffer[] = []
      for (let i = 0; i < 100_000; i++) {
        const lineEnd = await this.until(() => this.buffer.indexOf('\r\n'))
        const size = parseInt(this.buffer.subarray(0, lineEnd).toString('latin1'), 16)
        await this.until(() => this.buffer.length >= lineEnd + 2 + size + 2 ? 0 : -1)
        parts.push(this.buffer.subarray(lineEnd + 2, lineEnd + 2 + size))
        this.buffer = this.buffer.subarray(lineEnd + 2 + size + 2)
        if (size === 0) return { status, headers, body: Buffer.concat(parts) }
      }
      throw new Error('too many chunks')
    }
    await this.until(() => this.closed ? 0 : -1)
    const body = this.buffer
    this.buffer = Buffer.alloc(0)
    return { status, headers, body }
  }

  /** The next `n` raw bytes. */
  async bytes (n: number): Promise<Buffer> {
    await this.until(() => this.buffer.length >= n ? 0 : -1)
    const out = this.buffer.subarray(0, n)
    this.buffer = this.buffer.subarray(n)
    return out
  }

  /** Resolves once the connection has closed (bounded). */
  async closing (): Promise<void> {
    await this.until(() => this.closed ? 0 : -1)
  }

  private async until (found: () => number): Promise<number> {
    const deadline = Date.now() + 10_000
    for (;;) {
      const at = found()
      if (at >= 0) return at
      if (this.closed) throw new Error(`connection closed; had: ${JSON.stringify(this.buffer.toString('latin1').slice(0, 200))}`)
      if (Date.now() > deadline) throw new Error('no answer within 10 s')
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, 200)
        this.wake = () => { clearTimeout(timer); resolve() }
      })
    }
  }
}

const path = (rest: string): string => `/proxy/vms/${vm}/8080${rest}`
const host = (): string => new URL(fx.url).host
function get (target: string, headers: string[] = [`Authorization: Bearer ${token}`]): string {
  return `GET ${target} HTTP/1.1\r\nHost: ${host()}\r\n${headers.map(h => `${h}\r\n`).join('')}\r\n`
}
function post (target: string, body: Buffer | string, chunked = false, headers: string[] = [`Authorization: Bearer ${token}`]): Buffer {
  const data = Buffer.from(body)
  const framing = chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${data.length}`
  const payload = chunked ? Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n0\r\n\r\n')]) : data
  return Buffer.concat([Buffer.from(`POST ${target} HTTP/1.1\r\nHost: ${host()}\r\n${headers.map(h => `${h}\r\n`).join('')}${framing}\r\n\r\n`), payload])
}
const summary = (method: string, p: string, body: Buffer | string): string => `${method} ${p} ${Buffer.byteLength(body)} ${digest(Buffer.from(body))}`
const counts = (): { requests: number, handovers: number } => fx.proxy.fastHttpCounts()

test('one keep-alive connection: proxied requests on the fast path, then an API request hands the connection to Node\'s server, which answers it and all after it', async () => {
  const before = counts()
  const logs = fx.logs.length
  const client = await RawClient.open()
  client.socket.write(get(path('/a?x=1')))
  assert.equal((await client.answer()).body.toString(), summary('GET', '/a', ''))
  assert.equal(seen?.url, '/a?x=1')
  client.socket.write(post(path('/b'), 'hello'))
  assert.equal((await client.answer()).body.toString(), summary('POST', '/b', 'hello'))
  client.socket.write(post(path('/c'), 'x'.repeat(100_000), true))
  assert.equal((await client.answer()).body.toString(), summary('POST', '/c', 'x'.repeat(100_000)))
  assert.deepEqual(counts(), { requests: before.requests + 3, handovers: before.handovers })
  client.socket.write(get('/health'))
  const health = await client.answer()
  assert.equal(health.status, 200)
  assert.equal(JSON.parse(health.body.toString()).status, 'ok')
  client.socket.write(get(path('/d')))
  assert.equal((await client.answer()).body.toString(), summary('GET', '/d', ''))
  assert.deepEqual(counts(), { requests: before.requests + 3, handovers: before.handovers + 1 })
  const lines = fx.logs.slice(logs).filter(l => l.msg === 'request' && l.proxy?.vm === vm)
  assert.deepEqual(lines.map(l => [l.method, l.path, l.status, l.subject]), [
    ['GET', path('/a'), 200, 'ci'], ['POST', path('/b'), 200, 'ci'], ['POST', path('/c'), 200, 'ci'], ['GET', path('/d'), 200, 'ci']
  ], 'every proxied request has its access-log line, on either path')
  client.socket.destroy()
})

test('one connection, several VM ports and routes: each request goes where its own target says', async () => {
  const other = await fx.createVm()
  const client = await RawClient.open()
  const sim = (id: string, port: number): RegExp => new RegExp(`corral simulated VM [^,]+, port ${port}`)
  client.socket.write(get(path('/one')))
  assert.equal((await client.answer()).body.toString(), summary('GET', '/one', ''))
  client.socket.write(get(`/proxy/vms/${vm}/80/`))
  assert.match((await client.answer()).body.toString(), sim(vm, 80))
  client.socket.write(get(`/proxy/vms/${vm}/8080x/`))
  assert.equal((await client.answer()).status, 404, 'not a VM port: Node\'s server answers')
  const again = await RawClient.open()
  again.socket.write(get(path('/two')))
  assert.equal((await again.answer()).body.toString(), summary('GET', '/two', ''))
  again.socket.write(get(`/proxy/vms/${other.id}/8080/`))
  assert.match((await again.answer()).body.toString(), sim(other.id, 8080), 'another VM, same port')
  again.socket.write(`GET /three HTTP/1.1\r\nHost: ${vm}-8080.${DOMAIN}\r\nAuthorization: Bearer ${token}\r\n\r\n`)
  assert.equal((await again.answer()).body.toString(), summary('GET', '/three', ''), 'a host-name route')
  again.socket.write(get(path('/four')))
  assert.equal((await again.answer()).body.toString(), summary('GET', '/four', ''))
  client.socket.destroy()
  again.socket.destroy()
})

test('pipelined requests are answered in order, the fast path\'s and Node\'s', async () => {
  const client = await RawClient.open()
  client.socket.write(Buffer.concat([
    Buffer.from(get(path('/p1')) + get(path('/p2?frame=chunked'))), post(path('/p3'), 'body of three'), Buffer.from(get('/health') + get(path('/p5')))
  ]))
  assert.equal((await client.answer()).body.toString(), summary('GET', '/p1', ''))
  assert.equal((await client.answer()).body.toString(), summary('GET', '/p2', ''))
  assert.equal((await client.answer()).body.toString(), summary('POST', '/p3', 'body of three'))
  assert.equal(JSON.parse((await client.answer()).body.toString()).status, 'ok')
  assert.equal((await client.answer()).body.toString(), summary('GET', '/p5', ''))
  client.socket.destroy()
})

test('a head that comes a byte at a time, and one with many fields, reach the VM whole', async () => {
  const client = await RawClient.open()
  const text = get(path('/slowly'))
  for (const byte of Buffer.from(text)) {
    client.socket.write(Buffer.from([byte]))
    await new Promise(resolve => setImmediate(resolve))
  }
  assert.equal((await client.answer()).body.toString(), summary('GET', '/slowly', ''))
  const many = Array.from({ length: 70 }, (_, i) => `X-Field-${i}: value ${i}`)
  client.socket.write(get(path('/many'), [`Authorization: Bearer ${token}`, ...many]))
  assert.equal((await client.answer()).status, 200)
  const fields = (seen?.rawHeaders ?? []).filter((_, i, raw) => i % 2 === 0 && raw[i].startsWith('X-Field-'))
  assert.deepEqual(fields, many.map(h => h.split(':')[0]))
  client.socket.destroy()
})

test('answers framed as they came: a length, chunks, HEAD, 204 and 304, a 103 dropped, and a body delimited by the VM\'s close, with keep-alive after each', async () => {
  const closing = await listen(track(createTcpServer(socket => {
    socket.once('data', () => { socket.end('HTTP/1.1 200 OK\r\nX-Frame: close\r\n\r\nuntil the VM closes') })
  })))
  fx.serve(vm, 8083, closing)
  const client = await RawClient.open()
  client.socket.write(get(path('/len')))
  const length = await client.answer()
  assert.equal(length.headers['x-frame'], 'length')
  assert.equal(length.body.toString(), summary('GET', '/len', ''))
  client.socket.write(get(path('/chunks?frame=chunked')))
  const chunked = await client.answer()
  assert.equal(chunked.headers['transfer-encoding'], 'chunked')
  assert.equal(chunked.body.toString(), summary('GET', '/chunks', ''))
  client.socket.write(`HEAD ${path('/head')} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`)
  const head = await client.answer({ head: true })
  assert.equal(head.headers['content-length'], String(Buffer.byteLength(summary('HEAD', '/head', ''))))
  client.socket.write(get(path('/none?frame=204')))
  assert.equal((await client.answer()).status, 204)
  client.socket.write(get(path('/same?frame=304')))
  const notModified = await client.answer()
  assert.equal(notModified.status, 304)
  assert.equal(notModified.headers.etag, '"x"')
  client.socket.write(get(path('/hints?frame=103')))
  const hinted = await client.answer()
  assert.equal(hinted.status, 200, 'the final answer, not the 103 before it')
  assert.equal(hinted.body.toString(), summary('GET', '/hints', ''))
  client.socket.write(get(`/proxy/vms/${vm}/8083/`))
  const delimited = await client.answer()
  assert.equal(delimited.headers['x-frame'], 'close')
  assert.equal(delimited.headers['transfer-encoding'], 'chunked', 'chunked for the client, whose connection stays open')
  assert.equal(delimited.body.toString(), 'until the VM closes')
  client.socket.write(get(path('/after')))
  assert.equal((await client.answer()).body.toString(), summary('GET', '/after', ''))
  assert.equal(client.isClosed, false)
  client.socket.destroy()
})

test('a kept connection the VM closes as it is reused: a GET is sent again on another, a POST is a 502', async () => {
  // Answers the first request of each connection, then drops the connection at its second.
  const oneShot = await listen(track(createTcpServer(socket => {
    let n = 0
    socket.on('data', () => {
      if (++n === 1) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst')
      else socket.destroy()
    })
    socket.on('error', () => undefined)
  })))
  fx.serve(vm, 8084, oneShot)
  const client = await RawClient.open()
  for (let i = 0; i < 3; i++) {
    client.socket.write(get(`/proxy/vms/${vm}/8084/again`))
    const answer = await client.answer()
    assert.equal(answer.status, 200, `GET ${i}`)
    assert.equal(answer.body.toString(), 'first')
  }
  // The kept connection has answered once: the VM drops it at this POST, which is not sent again.
  client.socket.write(post(`/proxy/vms/${vm}/8084/once`, 'payload'))
  const failed = await client.answer()
  assert.equal(failed.status, 502)
  assert.equal(JSON.parse(failed.body.toString()).title, 'ProxyUpstreamError')
  client.socket.write(post(`/proxy/vms/${vm}/8084/once`, 'payload'))
  assert.equal((await client.answer()).status, 200, 'a new connection for the next one')
  client.socket.destroy()
})

test('the VM cutting an answer short cuts the client\'s too; a client that leaves mid-answer closes the VM\'s connection and is logged', async () => {
  let upstreamClosed = 0
  const cutting = await listen(track(createTcpServer(socket => {
    socket.on('close', () => { upstreamClosed++ })
    socket.on('error', () => undefined)
    socket.once('data', (d: Buffer) => {
      if (d.toString().startsWith('GET /cut')) {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly half of it')
        setImmediate(() => socket.destroy())
      } else {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nthe start, and the rest never comes')
      }
    })
  })))
  fx.serve(vm, 8085, cutting)
  const client = await RawClient.open()
  client.socket.write(get(`/proxy/vms/${vm}/8085/cut`))
  await assert.rejects(client.answer(), /connection closed/, 'a cut answer must not look complete')
  await client.closing()

  const logs = fx.logs.length
  const leaving = await RawClient.open()
  const closedBefore = upstreamClosed
  const started = new Promise<void>(resolve => { leaving.socket.once('data', () => resolve()) })
  leaving.socket.write(get(`/proxy/vms/${vm}/8085/stall`))
  await started
  leaving.socket.destroy()
  await eventually('the VM\'s connection is closed', () => upstreamClosed > closedBefore)
  await eventually('the request is logged', () => fx.logs.slice(logs).some(l => l.msg === 'request' && l.path === `/proxy/vms/${vm}/8085/stall`))
})

test('refusals answer on the same connection: a 401 then a request with a token; a refused upload closes the connection', async () => {
  const client = await RawClient.open()
  client.socket.write(get(path('/private'), []))
  const refused = await client.answer()
  assert.equal(refused.status, 401)
  assert.match(refused.headers['content-type'], /problem\+json/)
  assert.match(JSON.parse(refused.body.toString()).detail, /private/)
  client.socket.write(get(path('/private'), [`Authorization: Bearer ${fx.tokens.viewer}`]))
  assert.equal((await client.answer()).status, 403)
  client.socket.write(get(path('/private')))
  assert.equal((await client.answer()).body.toString(), summary('GET', '/private', ''))
  // Each request is admitted for its own credential, whatever came before on the connection.
  client.socket.write(get(path('/private'), [`Authorization: Bearer ${fx.tokens.viewer}`]))
  assert.equal((await client.answer()).status, 403)
  client.socket.write(get(path('/private'), [`Authorization: Bearer ${token}`, `Cookie: corral_proxy_grant=forged`]))
  assert.equal((await client.answer()).status, 200, 'a grant cookie that does not verify leaves the token to decide, as on Node\'s path')
  client.socket.write(get(path('/private')))
  assert.equal((await client.answer()).status, 200)
  client.socket.write(post(path('/upload'), 'x'.repeat(1000), false, []))
  const upload = await client.answer()
  assert.equal(upload.status, 401)
  assert.equal(upload.headers.connection, 'close')
  await client.closing()
  const unknown = await RawClient.open()
  unknown.socket.write(get('/proxy/vms/vm-000000000bad/80/'))
  assert.equal((await unknown.answer()).status, 404)
  unknown.socket.destroy()
})

test('Node\'s server takes HTTP/1.0, Expect: 100-continue and upgrades, also after proxied requests', async () => {
  const old = await RawClient.open()
  old.socket.write(`GET ${path('/old')} HTTP/1.0\r\nHost: ${host()}\r\nAuthorization: Bearer ${token}\r\n\r\n`)
  assert.equal((await old.answer()).body.toString(), summary('GET', '/old', ''))
  const url = new URL(fx.url)
  const continued = await new Promise<string>((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path: path('/expect'), method: 'POST', headers: { authorization: `Bearer ${token}`, expect: '100-continue', 'content-length': 4 } }, (res: IncomingMessage) => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => resolve(text))
    })
    req.on('continue', () => req.end('body'))
    req.on('error', reject)
  })
  assert.equal(continued, summary('POST', '/expect', 'body'))
  const client = await RawClient.open()
  client.socket.write(get(path('/before-upgrade')))
  assert.equal((await client.answer()).status, 200)
  client.socket.write(get(path('/socket'), [`Authorization: Bearer ${token}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']))
  const switched = await client.answer({ head: true })
  assert.equal(switched.status, 101)
  assert.equal(switched.headers['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=')
  client.socket.destroy()
  // Pipelined behind a proxied request (it waits, reading stopped, then is handed over): frames flow after the 101.
  const piped = await RawClient.open()
  piped.socket.write(get(path('/first')) + get(path('/socket'), [`Authorization: Bearer ${token}`, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']))
  assert.equal((await piped.answer()).body.toString(), summary('GET', '/first', ''))
  assert.equal((await piped.answer({ head: true })).status, 101)
  const mask = [1, 2, 3, 4]
  piped.socket.write(Buffer.from([0x81, 0x82, ...mask, 'h'.charCodeAt(0) ^ mask[0], 'i'.charCodeAt(0) ^ mask[1]]))
  assert.deepEqual([...await piped.bytes(4)], [0x81, 0x02, 'h'.charCodeAt(0), 'i'.charCodeAt(0)], 'the VM echoes the frame')
  piped.socket.destroy()
})

test('a client that ends its side after an answer gets the connection closed; one idle past the keep-alive timeout too', async () => {
  const client = await RawClient.open()
  client.socket.write(get(path('/then-fin')))
  assert.equal((await client.answer()).status, 200)
  client.socket.end()
  await client.closing()
  const idle = await RawClient.open()
  idle.socket.write(get(path('/then-idle')))
  assert.equal((await idle.answer()).status, 200)
  // Node's keepAliveTimeout (5 s) then the next 1 s sweep; bounded by closing()'s own limit.
  await idle.closing()
})

test('what is not HTTP is a 400, and the connection closes', async () => {
  const client = await RawClient.open()
  client.socket.write(get(path('/fine')))
  assert.equal((await client.answer()).status, 200)
  client.socket.write('GET /proxy/vms/ HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n')
  assert.equal((await client.answer()).status, 400)
  await client.closing()
})

test('backpressure both ways: a VM writing to a client that does not read is held back, and so is a client uploading to a VM that does not read', async () => {
  const total = 256 * 1024 * 1024
  let sent = 0
  let blocked = false
  let readUploads: () => void = () => undefined
  let uploadReceived = 0
  const bulk = await listen(track(createServer((req, res) => {
    if (req.method === 'PUT') {
      req.pause()
      readUploads = () => { req.resume() }
      req.on('data', (c: Buffer) => { uploadReceived += c.length })
      req.on('end', () => res.end(String(uploadReceived)))
      return
    }
    res.writeHead(200, { 'content-length': total })
    const block = Buffer.alloc(1024 * 1024, 7)
    const pump = (): void => {
      while (sent < total) {
        sent += block.length
        if (!res.write(block)) {
          blocked = true
          res.once('drain', () => { blocked = false; pump() })
          return
        }
      }
      res.end()
    }
    pump()
  })))
  fx.serve(vm, 8086, bulk)
  const client = await RawClient.open()
  client.socket.pause()
  client.socket.write(get(`/proxy/vms/${vm}/8086/bulk`))
  await eventually('the VM is held back', () => blocked && sent > 0)
  await new Promise(resolve => setTimeout(resolve, 200))
  assert.ok(sent < 64 * 1024 * 1024, `the VM got ahead by ${sent} bytes while nothing was read`)
  client.socket.destroy()

  const uploader = await RawClient.open()
  uploader.socket.write(`PUT /proxy/vms/${vm}/8086/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Length: ${total}\r\n\r\n`)
  const block = Buffer.alloc(1024 * 1024, 9)
  let written = 0
  while (written < total && uploader.socket.write(block)) written += block.length
  written += block.length
  await new Promise(resolve => setTimeout(resolve, 200))
  assert.ok(written < 64 * 1024 * 1024, `the client got ahead by ${written} bytes while the VM read nothing`)
  readUploads()
  for (let i = 0; i < 10_000 && written < total; i++) {
    if (!uploader.socket.write(block)) await new Promise(resolve => uploader.socket.once('drain', resolve))
    written += block.length
  }
  assert.equal((await uploader.answer()).body.toString(), String(total))
  uploader.socket.destroy()
})

test('property: random requests, bodies and framings, split at random points, get their own answers in order', async () => {
  const requestArb = fc.record({
    method: fc.constantFrom('GET', 'POST', 'PUT', 'HEAD', 'DELETE'),
    body: fc.uint8Array({ maxLength: 3000 }),
    chunkedRequest: fc.boolean(),
    frame: fc.constantFrom('length', 'chunked', '204'),
    forNode: fc.boolean()
  })
  await fc.assert(fc.asyncProperty(fc.array(requestArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), async (requests, cuts) => {
    const wire: Buffer[] = []
    const expected: Array<{ status: number, body?: string, head: boolean }> = []
    requests.forEach((r, i) => {
      if (r.forNode && i === requests.length - 1) {
        // Ends with one for Node's server: the handover must pick it up at the right byte.
        wire.push(Buffer.from(get('/health')))
        expected.push({ status: 200, head: false })
        return
      }
      const p = path(`/r${i}?frame=${r.frame}`)
      const hasBody = r.method !== 'GET' && r.method !== 'HEAD' && r.body.length > 0
      const body = hasBody ? Buffer.from(r.body) : Buffer.alloc(0)
      if (hasBody) {
        const framing = r.chunkedRequest ? 'Transfer-Encoding: chunked' : `Content-Length: ${body.length}`
        const payload = r.chunkedRequest ? Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]) : body
        wire.push(Buffer.from(`${r.method} ${p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n${framing}\r\n\r\n`), payload)
      } else {
        wire.push(Buffer.from(`${r.method} ${p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`))
      }
      const status = r.frame === '204' ? 204 : 200
      expected.push({ status, body: status === 204 || r.method === 'HEAD' ? '' : summary(r.method, `/r${i}`, body), head: r.method === 'HEAD' })
    })
    const bytes = Buffer.concat(wire)
    const points = [...new Set(cuts.map(c => c % bytes.length))].sort((a, b) => a - b)
    const client = await RawClient.open()
    try {
      let from = 0
      for (const at of [...points, bytes.length]) {
        if (at > from) client.socket.write(bytes.subarray(from, at))
        from = at
        await new Promise(resolve => setImmediate(resolve))
      }
      for (const want of expected) {
        const got = await client.answer({ head: want.head })
        assert.equal(got.status, want.status)
        if (want.body != null) assert.equal(got.body.toString(), want.body)
      }
    } finally {
      client.socket.destroy()
    }
  }), { numRuns: 60 })
})
