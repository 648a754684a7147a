import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { connect } from 'node:net'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../helpers/node-process.ts'
import { RawClient } from '../helpers/port-forward.ts'

// The proxy across node processes (sim VMs): the VM runs on A; B reaches it over a direct TLS
// tunnel, C (direct tunnels off) over libp2p streams. Routes are cluster-wide records every node
// serves; TCP route listeners bind 127.0.0.1 on A and ::1 on B (C serves none).
const fast = { CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '1000', CORRAL_CLUSTER_DEAD_AFTER_MS: '3000' }
const nodes: NodeProcess[] = []
let a: NodeProcess
let b: NodeProcess
let c: NodeProcess
let token = ''
let vm = ''

async function eventually (what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await Promise.resolve(check()).catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

before(async () => {
  a = await startNodeProcess({ ...fast, CORRAL_NODE_NAME: 'node-a', CORRAL_NODE_LABELS: 'node=node-a', CORRAL_LOG_LEVEL: 'debug' })
  nodes.push(a)
  token = (await call(a.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
  const join = (await call(a.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token as string
  ;[b, c] = await Promise.all([
    startNodeProcess({ ...fast, CORRAL_NODE_NAME: 'node-b', CORRAL_NODE_LABELS: 'node=node-b', CORRAL_JOIN_TOKEN: join, CORRAL_ADMIN_PASSWORD: '', CORRAL_PROXY_TCP_LISTEN_HOST: '::1' }),
    startNodeProcess({ ...fast, CORRAL_NODE_NAME: 'node-c', CORRAL_NODE_LABELS: 'node=node-c', CORRAL_JOIN_TOKEN: join, CORRAL_ADMIN_PASSWORD: '', CORRAL_PROXY_TCP_LISTEN_HOST: 'off', CORRAL_PROXY_DIRECT_TUNNEL: 'false' })
  ])
  nodes.push(b, c)
  for (const node of [b, c]) {
    await eventually(`${node.url} sees 3 alive hosts`, async () => (await call(node.url, 'GET', '/api/v1/hosts', { token })).body.items.filter((h: { state: string }) => h.state === 'alive').length === 3)
  }
  const created = await call(b.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04', name: 'proxied', hostLabels: { node: 'node-a' } } })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  assert.equal(created.body.host, 'node-a')
  vm = created.body.id
})
after(async () => { await Promise.all(nodes.map(async n => await n.destroy())) })

test('HTTP to a VM on A through B (direct TLS tunnel) and through C (libp2p stream)', { timeout: 60_000 }, async () => {
  for (const gateway of [b, c]) {
    await eventually(`${gateway.url} reaches the VM`, async () => {
      const res = await fetch(`${gateway.url}/proxy/vms/${vm}/80/`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) })
      return res.status === 200 && res.headers.get('x-corral-simulated') === 'true' && (await res.text()).includes('port 80')
    })
  }
  // A's own log says which way each came: B through its tunnel port, C as a mesh peer.
  await eventually('A served both kinds of tunnel', () => {
    const served = a.log().split('\n').filter(l => l.includes('proxy tunnel closed')).map(l => JSON.parse(l))
    return served.some(l => String(l.gateway).startsWith('direct:')) && served.some(l => String(l.gateway).startsWith('12D3'))
  })
})

test('a TCP route made on B is a record every node serves: A and B listen on its port and carry bytes to the VM', { timeout: 60_000 }, async () => {
  const created = await call(b.url, 'POST', '/api/v1/proxy/routes', { token, body: { vm, port: 22, protocol: 'tcp', public: true } })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  const { id, listenPort } = created.body
  let seenOnA: unknown
  await eventually('A knows and serves the route', async () => {
    seenOnA = (await call(a.url, 'GET', `/api/v1/proxy/routes/${id as string}`, { token })).body
    return (seenOnA as { listening?: { address?: string } }).listening?.address === `127.0.0.1:${listenPort as number}`
  }).catch(err => { throw new Error(`${(err as Error).message}; A has ${JSON.stringify(seenOnA)}; B made ${JSON.stringify(created.body)}`) })
  await eventually('B serves it', async () => (await call(b.url, 'GET', `/api/v1/proxy/routes/${id as string}`, { token })).body.listening?.address === `[::1]:${listenPort as number}`)
  const onC = await call(c.url, 'GET', `/api/v1/proxy/routes/${id as string}`, { token })
  assert.match(onC.body.listening.error, /serves no TCP routes/)
  for (const host of ['127.0.0.1', '::1']) {
    const client = await RawClient.connect(listenPort, host)
    const payload = randomBytes(1024 * 1024)
    client.socket.write(payload)
    await client.until(`the echo through ${host}`, r => r.length >= payload.length)
    assert.ok(client.received.equals(payload))
    client.socket.destroy()
  }
  assert.equal((await call(a.url, 'DELETE', `/api/v1/proxy/routes/${id as string}`, { token })).status, 204)
  await eventually('B closed its listener', async () => await new Promise<boolean>(resolve => {
    const s = connect({ port: listenPort, host: '::1' })
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', () => resolve(true))
  }))
})

test('a public HTTP route made on C opens the VM port on every node; deleting the VM removes its routes everywhere', { timeout: 60_000 }, async () => {
  const route = await call(c.url, 'POST', '/api/v1/proxy/routes', { token, body: { vm, port: 80, protocol: 'http', public: true } })
  assert.equal(route.status, 201)
  await eventually('B lets anyone in', async () => (await fetch(`${b.url}/proxy/vms/${vm}/80/`)).status === 200)
  const other = await call(b.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04', name: 'doomed', hostLabels: { node: 'node-a' } } })
  const doomed = other.body.id as string
  await call(b.url, 'POST', '/api/v1/proxy/routes', { token, body: { vm: doomed, port: 22, protocol: 'tcp' } })
  await eventually('C lists both routes', async () => (await call(c.url, 'GET', '/api/v1/proxy/routes', { token })).body.items.length === 2)
  assert.equal((await call(c.url, 'DELETE', `/api/v1/vms/${doomed}`, { token })).status, 204)
  await eventually('every node forgot the deleted VM\'s route', async () => {
    for (const node of [a, b, c]) if ((await call(node.url, 'GET', '/api/v1/proxy/routes', { token })).body.items.some((r: { vm: string }) => r.vm === doomed)) return false
    return true
  })
})

test('when the VM\'s host dies, the other nodes answer 503 quickly instead of hanging', { timeout: 60_000 }, async () => {
  await a.stop('SIGKILL')
  const started = Date.now()
  const res = await fetch(`${b.url}/proxy/vms/${vm}/80/`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) })
  assert.equal(res.status, 503)
  const problem = await res.json() as { detail: string }
  assert.match(problem.detail, /node-a/)
  assert.ok(Date.now() - started < 30_000)
})
