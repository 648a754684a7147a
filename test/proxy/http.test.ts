import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http'
import WebSocket, { WebSocketServer } from 'ws'
import { startProxyFixture, listen, eventually, DOMAIN, type ProxyFixture } from './fixture.ts'

// The HTTP side of the proxy through a real API server: routing by path and host name, who may
// pass, headers on the way in and out, streamed bodies, upgrades, and failures that answer fast.
let fx: ProxyFixture
let vm = ''
/** What the plugged-in upstream saw of the last request. */
let seen: { method: string, url: string, headers: IncomingHttpHeaders, rawHeaders: string[] } | undefined
let upstreamPort = 0
/** Servers made by tests, closed (with their connections) at the end. */
const servers: Array<import('node:http').Server> = []
function track<T extends import('node:http').Server> (server: T): T {
  servers.push(server)
  return server
}

before(async () => {
  fx = await startProxyFixture()
  vm = (await fx.createVm()).id
  const upstream = track(createServer((req, res) => {
    seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders }
    if (req.url === '/hop') {
      res.writeHead(200, { Connection: 'keep-alive, X-Upstream-Hop', 'Keep-Alive': 'timeout=99', 'X-Upstream-Hop': 'gone', 'X-Kept': 'here', 'Proxy-Authenticate': 'Basic' })
      res.end('ok')
      return
    }
    if (req.url === '/echo') {
      req.pipe(res)
      return
    }
    res.setHeader('content-type', 'text/plain')
    res.end(`upstream saw ${req.method ?? ''} ${req.url ?? ''}`)
  }))
  const wss = new WebSocketServer({ server: upstream })
  wss.on('connection', ws => { ws.on('message', (data, binary) => ws.send(data, { binary })) })
  await listen(upstream)
  upstreamPort = (upstream.address() as { port: number }).port
  fx.serve(vm, 8080, upstream)
})
after(async () => {
  await fx?.stop()
  for (const server of servers) {
    server.closeAllConnections()
    server.close()
  }
})

interface Answer { status: number, headers: IncomingHttpHeaders, body: Buffer }

/** One request with full control of its headers (fetch refuses Connection, TE, Host...). */
async function send (path: string, headers: Record<string, string> = {}, body?: Buffer | string, method = body == null ? 'GET' : 'POST'): Promise<Answer> {
  const url = new URL(fx.url)
  return await new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method, headers, agent: false, timeout: 10_000 }, (res: IncomingMessage) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer within 10 s`)))
    req.on('error', reject)
    req.end(body)
  })
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

test('a path route reaches the VM port with the prefix stripped; a bare prefix redirects to its slash form', async () => {
  const res = await send(`/proxy/vms/${vm}/8080/some/page?x=1&y=2`, bearer(fx.tokens.ci))
  assert.equal(res.status, 200)
  assert.equal(res.body.toString(), 'upstream saw GET /some/page?x=1&y=2')
  const bare = await send(`/proxy/vms/${vm}/8080?x=1`, bearer(fx.tokens.ci))
  assert.equal(bare.status, 308)
  assert.equal(bare.headers.location, `/proxy/vms/${vm}/8080/?x=1`)
})

test('the sim VM\'s own port forward answers through the proxy too', async () => {
  const res = await send(`/proxy/vms/${vm}/80/`, bearer(fx.tokens.admin))
  assert.equal(res.status, 200)
  assert.equal(res.headers['x-corral-simulated'], 'true')
})

test('private by default: no credential is 401, a role without vm:exec is 403, a token or an API key passes', async () => {
  const anonymous = await send(`/proxy/vms/${vm}/8080/`)
  assert.equal(anonymous.status, 401)
  assert.match(anonymous.headers['content-type'] ?? '', /problem\+json/)
  assert.match(JSON.parse(anonymous.body.toString()).detail, /private/)
  const viewer = await send(`/proxy/vms/${vm}/8080/`, bearer(fx.tokens.viewer))
  assert.equal(viewer.status, 403)
  assert.equal(JSON.parse(viewer.body.toString()).claim, 'vm:exec')
  const key = await fx.auth.createApiKey({ username: 'ci', name: 'pipeline' })
  const withKey = await send(`/proxy/vms/${vm}/8080/k`, { 'x-api-key': key.apiKey })
  assert.equal(withKey.status, 200)
  assert.equal(seen?.headers['x-api-key'], undefined, 'the API key stays with corral')
})

test('headers: hop-by-hop dropped both ways, corral\'s credentials and grant cookie kept from the VM, X-Forwarded-* set', async () => {
  const res = await send(`/proxy/vms/${vm}/8080/hop`, {
    ...bearer(fx.tokens.ci),
    connection: 'keep-alive, X-Client-Hop',
    'x-client-hop': 'should vanish',
    te: 'trailers',
    'proxy-authorization': 'Basic c2VjcmV0',
    cookie: 'session=abc; corral_proxy_grant=not-for-the-vm; theme=dark',
    'x-forwarded-for': '203.0.113.7',
    'x-end-to-end': 'kept'
  })
  assert.equal(res.status, 200)
  const h = seen?.headers ?? {}
  assert.equal(h.authorization, undefined, 'the corral token is not passed to the VM')
  assert.equal(h['x-client-hop'], undefined)
  assert.equal(h.te, undefined)
  assert.equal(h['proxy-authorization'], undefined)
  assert.equal(h.cookie, 'session=abc; theme=dark')
  assert.equal(h['x-end-to-end'], 'kept')
  assert.equal(h['x-forwarded-for'], '203.0.113.7, 127.0.0.1')
  assert.equal(h['x-forwarded-proto'], 'http')
  assert.equal(h['x-forwarded-host'], new URL(fx.url).host)
  assert.equal(h['x-forwarded-prefix'], `/proxy/vms/${vm}/8080`)
  assert.equal(h.host, new URL(fx.url).host, 'the client\'s Host reaches the VM')
  // And on the way back.
  assert.equal(res.headers['x-upstream-hop'], undefined)
  assert.notEqual(res.headers['keep-alive'], 'timeout=99', 'the VM\'s Keep-Alive is about its own connection (this node sets its own)')
  assert.equal(res.headers['proxy-authenticate'], undefined)
  assert.equal(res.headers['x-kept'], 'here')
})

test('a host-name route {vm}-{port}.{domain} gives the whole host to the VM port, path unchanged', async () => {
  const res = await send('/api/v1/vms?not=corral', { ...bearer(fx.tokens.ci), host: `${vm}-8080.${DOMAIN}` })
  assert.equal(res.status, 200)
  assert.equal(res.body.toString(), 'upstream saw GET /api/v1/vms?not=corral')
  assert.equal(seen?.headers['x-forwarded-prefix'], undefined)
  const other = await send('/', { ...bearer(fx.tokens.ci), host: `${vm}-8080.elsewhere.test` })
  assert.equal(other.status, 404, 'another domain is not the proxy\'s')
})

test('a public route is open to anyone and passes the caller\'s own Authorization on to the VM', async () => {
  const created = await send('/api/v1/proxy/routes', { ...bearer(fx.tokens.operator), 'content-type': 'application/json' }, JSON.stringify({ vm, port: 8080, protocol: 'http', public: true }))
  assert.equal(created.status, 201, created.body.toString())
  const route = JSON.parse(created.body.toString())
  assert.ok(route.urls.some((u: string) => u.endsWith(`/proxy/vms/${vm}/8080/`)))
  assert.ok(route.urls.some((u: string) => u.includes(`${vm}-8080.${DOMAIN}`)))
  try {
    const res = await send(`/proxy/vms/${vm}/8080/open`, { authorization: 'Basic YXBwOnVzZXI=' })
    assert.equal(res.status, 200)
    assert.equal(seen?.headers.authorization, 'Basic YXBwOnVzZXI=')
    const line = fx.logs.findLast(l => l.msg === 'request' && l.path === `/proxy/vms/${vm}/8080/open`)
    assert.equal(line?.subject, 'public')
    assert.deepEqual(line?.proxy, { vm, port: 8080 })
  } finally {
    assert.equal((await send(`/api/v1/proxy/routes/${route.id as string}`, bearer(fx.tokens.operator), undefined, 'DELETE')).status, 204)
  }
  assert.equal((await send(`/proxy/vms/${vm}/8080/open`)).status, 401, 'private again once the route is gone')
})

test('a signed URL opens the port without a credential and leaves a cookie for the next pages; forged, foreign or expired ones are refused', async () => {
  const made = await send('/api/v1/proxy/grants', { ...bearer(fx.tokens.ci), 'content-type': 'application/json' }, JSON.stringify({ vm, port: 8080, ttlSeconds: 60 }))
  assert.equal(made.status, 201, made.body.toString())
  const { path, url } = JSON.parse(made.body.toString())
  assert.ok(url.endsWith(path))
  const first = await send(path)
  assert.equal(first.status, 200)
  assert.equal(seen?.url, '/', 'the grant is not passed on to the VM')
  const cookie = String(first.headers['set-cookie']?.[0] ?? '')
  assert.match(cookie, new RegExp(`Path=/proxy/vms/${vm}/8080/; Max-Age=\\d+; HttpOnly; SameSite=Lax`))
  const next = await send(`/proxy/vms/${vm}/8080/style.css`, { cookie: cookie.split(';')[0] })
  assert.equal(next.status, 200)
  assert.equal(seen?.headers.cookie, undefined)
  const grant = new URLSearchParams(path.split('?')[1]).get('corral_grant') as string
  const forged = grant.slice(0, -4) + (grant.endsWith('AAAA') ? 'BBBB' : 'AAAA')
  assert.equal((await send(`/proxy/vms/${vm}/8080/?corral_grant=${forged}`)).status, 401)
  assert.equal((await send(`/proxy/vms/${vm}/80/?corral_grant=${grant}`)).status, 401, 'a grant for another port')
  fx.clock.now = Date.now() + 120_000
  try {
    const expired = await send(path)
    assert.equal(expired.status, 401)
    assert.match(JSON.parse(expired.body.toString()).detail, /expired/)
  } finally {
    fx.clock.now = undefined
  }
  // Minting one needs vm:exec, like using the port.
  assert.equal((await send('/api/v1/proxy/grants', { ...bearer(fx.tokens.viewer), 'content-type': 'application/json' }, JSON.stringify({ vm, port: 8080 }))).status, 403)
})

test('bodies stream both ways: the VM sees an upload before it is complete, the client a download before it is complete', async () => {
  let release: () => void = () => undefined
  const halfway = new Promise<void>(resolve => { release = resolve })
  const streaming = await listen(track(createServer((req, res) => {
    if (req.url === '/upload') {
      let got = 0
      req.on('data', (c: Buffer) => { got += c.length; if (got >= 1024 * 1024) release() })
      req.on('end', () => res.end(String(got)))
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    res.write(Buffer.alloc(1024 * 1024, 1))
    // The rest only once the client has the first MiB: a buffering proxy would never deliver it.
    halfwayDownload.then(() => res.end(Buffer.alloc(1024 * 1024, 2)), () => res.destroy())
  })))
  let gotFirst: () => void = () => undefined
  const halfwayDownload = new Promise<void>(resolve => { gotFirst = resolve })
  fx.serve(vm, 9090, streaming)
  const target = new URL(fx.url)

  const uploaded = await new Promise<string>((resolve, reject) => {
    const req = request({ host: target.hostname, port: target.port, path: `/proxy/vms/${vm}/9090/upload`, method: 'PUT', headers: bearer(fx.tokens.ci), agent: false }, res => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => resolve(text))
    })
    req.on('error', reject)
    req.write(Buffer.alloc(1024 * 1024))
    // The second half is sent only after the VM has seen the first (chunked, no length known).
    halfway.then(() => req.end(Buffer.alloc(1024 * 1024)), reject)
  })
  assert.equal(uploaded, String(2 * 1024 * 1024))

  const downloaded = await new Promise<number>((resolve, reject) => {
    const req = request({ host: target.hostname, port: target.port, path: `/proxy/vms/${vm}/9090/download`, headers: bearer(fx.tokens.ci), agent: false }, res => {
      let got = 0
      res.on('data', (c: Buffer) => { got += c.length; if (got >= 1024 * 1024) gotFirst() })
      res.on('end', () => resolve(got))
    })
    req.on('error', reject)
    req.end()
  })
  assert.equal(downloaded, 2 * 1024 * 1024)
  streaming.close()
})

test('32 MiB echoed through the proxy arrives intact', async () => {
  const body = randomBytes(32 * 1024 * 1024)
  const res = await send(`/proxy/vms/${vm}/8080/echo`, bearer(fx.tokens.ci), body)
  assert.equal(res.status, 200)
  assert.equal(createHash('sha256').update(res.body).digest('hex'), createHash('sha256').update(body).digest('hex'))
})

test('websockets pass through (binary and text), and a refused upgrade passes the VM\'s answer on', async () => {
  const ws = new WebSocket(`${fx.wsUrl}/proxy/vms/${vm}/8080/socket`, { headers: bearer(fx.tokens.ci) })
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  const replies: Array<{ data: Buffer, binary: boolean }> = []
  const both = new Promise<void>(resolve => ws.on('message', (data: Buffer, binary) => { replies.push({ data, binary }); if (replies.length === 2) resolve() }))
  ws.send('text frame')
  ws.send(Buffer.from([0, 255, 1]), { binary: true })
  await both
  assert.equal(replies[0].data.toString(), 'text frame')
  assert.deepEqual([...replies[1].data], [0, 255, 1])
  assert.equal(seen?.headers.authorization, undefined)
  ws.close()
  // No credential: refused before anything reaches the VM.
  const refused = await new Promise<number>((resolve, reject) => {
    const anon = new WebSocket(`${fx.wsUrl}/proxy/vms/${vm}/8080/socket`)
    anon.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
    anon.on('open', () => reject(new Error('opened without a credential')))
    anon.on('error', () => undefined)
  })
  assert.equal(refused, 401)
  // The VM port does not speak websocket (the sim responder answers a plain page): its answer comes back.
  const notWs = await new Promise<number>((resolve, reject) => {
    const other = new WebSocket(`${fx.wsUrl}/proxy/vms/${vm}/80/`, { headers: bearer(fx.tokens.ci) })
    other.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
    other.on('open', () => reject(new Error('upgraded against a server that does not upgrade')))
    other.on('error', () => undefined)
  })
  assert.equal(notWs, 200)
})

test('nothing listening on the port is a 502 that says so; the upstream port answers nothing useful either way', async () => {
  const closed = await listen(track(createServer()))
  const port = (closed.address() as { port: number }).port
  await new Promise<void>(resolve => closed.close(() => resolve()))
  fx.serve(vm, 7070, { address: () => ({ port }) } as never)
  const res = await send(`/proxy/vms/${vm}/7070/`, bearer(fx.tokens.ci))
  assert.equal(res.status, 502)
  const problem = JSON.parse(res.body.toString())
  assert.equal(problem.title, 'ProxyUpstreamError')
  assert.match(problem.detail, /nothing accepted the connection on port 7070/)
})

test('an unknown VM is 404; a stopped VM is 503 at once, and its open connections are cut instead of hanging', async () => {
  assert.equal((await send('/proxy/vms/vm-000000000000/80/', bearer(fx.tokens.ci))).status, 404)
  const other = await fx.createVm()
  const slow = await listen(track(createServer((_req, res) => { res.writeHead(200); res.write('first part, then nothing') })))
  fx.serve(other.id, 8080, slow)
  const target = new URL(fx.url)
  let timer: NodeJS.Timeout | undefined
  const cut = new Promise<string>((resolve, reject) => {
    const req = request({ host: target.hostname, port: target.port, path: `/proxy/vms/${other.id}/8080/`, headers: bearer(fx.tokens.ci), agent: false }, res => {
      res.once('data', () => { void fx.host.act(other.id, 'stop') })
      res.on('end', () => resolve('ended'))
      res.on('aborted', () => resolve('aborted'))
      res.on('error', () => resolve('error'))
      res.on('close', () => resolve('closed'))
    })
    req.on('error', () => resolve('error'))
    req.end()
    timer = setTimeout(() => reject(new Error('the response stayed open after the VM stopped')), 10_000)
  })
  assert.notEqual(await cut.finally(() => clearTimeout(timer)), 'ended', 'a cut response must not look complete')
  await eventually('the VM\'s connections are gone', () => fx.proxy.openConnections(other.id) === 0)
  const res = await send(`/proxy/vms/${other.id}/8080/`, bearer(fx.tokens.ci))
  assert.equal(res.status, 503)
  assert.match(JSON.parse(res.body.toString()).detail, /is stopped.*start it/)
  slow.close()
})

test('keep-alive: many requests reuse pooled connections to the VM port', async () => {
  const before = fx.logs.length
  for (let i = 0; i < 20; i++) assert.equal((await send(`/proxy/vms/${vm}/8080/n${i}`, bearer(fx.tokens.ci))).status, 200)
  assert.ok(fx.proxy.openConnections(vm) <= 4, `pooled connections: ${fx.proxy.openConnections(vm)}`)
  assert.equal(fx.logs.slice(before).filter(l => l.msg === 'request' && l.proxy?.port === 8080).length, 20, 'each request has its access-log line')
  assert.ok(upstreamPort > 0)
})
