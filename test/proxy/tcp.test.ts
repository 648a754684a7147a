import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer as createTcpServer, connect, type Server, type Socket } from 'node:net'
import WebSocket, { createWebSocketStream } from 'ws'
import { RawClient } from '../helpers/port-forward.ts'
import { startProxyFixture, listen, eventually, type ProxyFixture } from './fixture.ts'

// Raw TCP through the proxy: route listeners on node ports (cluster-wide records, here without a
// mesh) and the port-forward websocket `corral port-forward` uses.
let fx: ProxyFixture
let vm = ''
const servers: Server[] = []

before(async () => {
  fx = await startProxyFixture()
  vm = (await fx.createVm()).id
})
after(async () => {
  await fx?.stop()
  for (const s of servers) s.close()
})

async function api (method: string, path: string, token: string, body?: unknown): Promise<{ status: number, body: any }> {
  const res = await fetch(fx.url + path, { method, headers: { authorization: `Bearer ${token}`, ...(body != null ? { 'content-type': 'application/json' } : {}) }, body: body != null ? JSON.stringify(body) : undefined, signal: AbortSignal.timeout(10_000) })
  const text = await res.text()
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) }
}

async function refused (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const s = connect({ port, host: '127.0.0.1' })
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', () => resolve(true))
  })
}

test('a TCP route listens on a node port from the range and carries bytes both ways to the VM port', async () => {
  const created = await api('POST', '/api/v1/proxy/routes', fx.tokens.operator, { vm, port: 22, protocol: 'tcp', description: 'ssh' })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  const route = created.body
  assert.equal(route.public, false)
  assert.ok(route.listenPort >= 31100 && route.listenPort <= 31199)
  await eventually('the route listens', () => fx.proxy.getRoute(route.id).listening?.address != null)
  // Private: loopback is always let in (a CI runner on the node itself).
  const client = await RawClient.connect(route.listenPort)
  const payload = randomBytes(256 * 1024)
  client.socket.write(payload)
  await client.until('the echo', r => r.length >= payload.length)
  assert.ok(client.received.equals(payload))
  client.socket.end()
  await eventually('the connection is in the log', () => fx.logs.some(l => l.msg === 'proxy connection closed' && l.route === route.id && l.bytesIn === payload.length))
  // Listing and reading it need proxy:read; ci has it, deleting needs proxy:write, which ci lacks.
  assert.equal((await api('GET', '/api/v1/proxy/routes', fx.tokens.ci)).body.items.length, 1)
  assert.equal((await api('DELETE', `/api/v1/proxy/routes/${route.id as string}`, fx.tokens.ci)).status, 403)
  assert.equal((await api('DELETE', `/api/v1/proxy/routes/${route.id as string}`, fx.tokens.operator)).status, 204)
  await eventually('the listener is closed', async () => await refused(route.listenPort))
  assert.equal((await api('GET', `/api/v1/proxy/routes/${route.id as string}`, fx.tokens.ci)).status, 404)
})

test('node ports: the first free one is taken, an explicit one must be free and in range, and HTTP routes have none', async () => {
  const first = await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm, port: 22, protocol: 'tcp', public: true })
  const second = await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm, port: 23, protocol: 'tcp' })
  assert.equal(second.body.listenPort, first.body.listenPort + 1)
  const clash = await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm, port: 24, protocol: 'tcp', listenPort: first.body.listenPort })
  assert.equal(clash.status, 409)
  assert.match(clash.body.detail, /taken by route/)
  assert.equal((await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm, port: 24, protocol: 'tcp', listenPort: 80 })).status, 400)
  assert.equal((await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm, port: 80, protocol: 'http', listenPort: 31150 })).status, 400)
  assert.equal((await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm, port: 24, protocol: 'tcp', allowFrom: ['not-a-cidr'] })).status, 400)
  assert.equal((await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm: 'vm-000000000000', port: 24, protocol: 'tcp' })).status, 404)
  for (const r of [first, second]) await api('DELETE', `/api/v1/proxy/routes/${r.body.id as string}`, fx.tokens.admin)
})

test('a route whose node port another program holds says so over HTTP, and listens once the port is freed', async () => {
  // Another program on the node (here a listener; often a client socket's ephemeral port) holds it.
  const blocker = await new Promise<Server>((resolve, reject) => {
    const s = createTcpServer()
    s.once('error', reject)
    s.listen(31190, '127.0.0.1', () => resolve(s))
  })
  const created = await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm, port: 22, protocol: 'tcp', public: true, listenPort: 31190 })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  const id = created.body.id as string
  let shown: any
  await eventually('GET says why it does not listen', async () => {
    shown = (await api('GET', `/api/v1/proxy/routes/${id}`, fx.tokens.ci)).body
    return shown.listening?.error != null && /EADDRINUSE/.test(shown.listening.error as string)
  })
  assert.match(shown.listening.error, /trying again/)
  assert.deepEqual(shown.urls, [])
  await new Promise<void>(resolve => blocker.close(() => resolve()))
  await eventually('GET shows it listening once the port is free', async () => {
    shown = (await api('GET', `/api/v1/proxy/routes/${id}`, fx.tokens.ci)).body
    return shown.listening?.address === '127.0.0.1:31190'
  })
  assert.equal(shown.listening.error, undefined)
  assert.deepEqual(shown.urls, ['tcp://127.0.0.1:31190'])
  const client = await RawClient.connect(31190)
  client.socket.write('through')
  await client.until('the echo', r => r.toString() === 'through')
  client.socket.destroy()
  assert.equal((await api('DELETE', `/api/v1/proxy/routes/${id}`, fx.tokens.admin)).status, 204)
  await eventually('the listener is closed', async () => await refused(31190))
})

test('a TCP connection to a stopped VM is closed at once; deleting the VM deletes its routes', async () => {
  const other = await fx.createVm()
  const route = (await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm: other.id, port: 22, protocol: 'tcp', public: true })).body
  await eventually('the route listens', () => fx.proxy.getRoute(route.id).listening?.address != null)
  const open = await RawClient.connect(route.listenPort)
  open.socket.write('hi')
  await open.until('the echo', r => r.toString() === 'hi')
  await fx.host.act(other.id, 'stop')
  await open.until('the connection ends with the VM', () => open.ended, 5000).catch(() => undefined)
  assert.ok(open.ended, 'the open connection was cut when the VM stopped')
  const late = await RawClient.connect(route.listenPort)
  await late.until('a new connection is closed, not left hanging', () => late.ended, 5000).catch(() => undefined)
  assert.ok(late.ended)
  await fx.host.delete(other.id)
  await eventually('the route went with its VM', () => fx.proxy.listRoutes().every(r => r.vm !== other.id))
  await eventually('its listener is closed', async () => await refused(route.listenPort))
})

test('a server that speaks first (SSH-like) is heard through the route before the client says anything', async () => {
  const banner = await listen(createTcpServer((socket: Socket) => {
    socket.write('SSH-2.0-test-server\r\n')
    socket.on('data', (d: Buffer) => socket.write(d))
    socket.on('error', () => undefined)
  }))
  servers.push(banner)
  fx.serve(vm, 2222, banner)
  const route = (await api('POST', '/api/v1/proxy/routes', fx.tokens.admin, { vm, port: 2222, protocol: 'tcp', public: true })).body
  await eventually('the route listens', () => fx.proxy.getRoute(route.id).listening?.address != null)
  const client = await RawClient.connect(route.listenPort)
  await client.until('the banner', r => r.toString().includes('\r\n'))
  assert.equal(client.received.toString(), 'SSH-2.0-test-server\r\n')
  client.socket.destroy()
  await api('DELETE', `/api/v1/proxy/routes/${route.id as string}`, fx.tokens.admin)
})

test('the port-forward websocket: bytes both ways as binary frames; a bad VM or a stopped one is an HTTP answer, not a dead socket', async () => {
  const ws = new WebSocket(`${fx.wsUrl}/api/v1/vms/${vm}/port-forward/22`, { headers: { authorization: `Bearer ${fx.tokens.ci}` } })
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  const stream = createWebSocketStream(ws)
  const payload = randomBytes(200_000)
  stream.write(payload)
  const chunks: Buffer[] = []
  let got = 0
  await new Promise<void>(resolve => stream.on('data', (c: Buffer) => { chunks.push(c); got += c.length; if (got >= payload.length) resolve() }))
  assert.ok(Buffer.concat(chunks).equals(payload))
  stream.destroy()
  await eventually('the tunnel is logged with its subject', () => fx.logs.some(l => l.msg === 'proxy connection closed' && l.via === 'port-forward' && l.subject === 'ci'))

  const status = async (path: string, token?: string): Promise<number> => await new Promise((resolve, reject) => {
    const attempt = new WebSocket(fx.wsUrl + path, { headers: token != null ? { authorization: `Bearer ${token}` } : {} })
    attempt.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
    attempt.on('open', () => { attempt.close(); reject(new Error(`${path} opened`)) })
    attempt.on('error', () => undefined)
  })
  assert.equal(await status(`/api/v1/vms/${vm}/port-forward/22`), 401)
  assert.equal(await status(`/api/v1/vms/${vm}/port-forward/22`, fx.tokens.viewer), 403)
  assert.equal(await status('/api/v1/vms/vm-000000000000/port-forward/22', fx.tokens.ci), 404)
  const stopped = await fx.createVm()
  await fx.host.act(stopped.id, 'stop')
  assert.equal(await status(`/api/v1/vms/${stopped.id}/port-forward/22`, fx.tokens.ci), 503)
})
