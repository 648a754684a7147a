import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import WebSocket from 'ws'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../helpers/node-process.ts'
import { startPortForward, RawClient } from '../helpers/port-forward.ts'
import { buildTestGuest, killProcessesMentioning } from '../drivers/qemu/helpers.ts'

// The proxy with a real VM: the qemu test guest runs on node A (HTTP on 80 with /cgi-bin/zeros, a
// websocket echo on 8081, an SSH-like banner-then-echo service on 22); every request goes through
// node B, which does not run it, so the bytes cross the mesh to A and into the VM.
const fast = { CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '1000', CORRAL_CLUSTER_DEAD_AFTER_MS: '3000' }
let a: NodeProcess | undefined
let b: NodeProcess | undefined
let token = ''
let vm = ''

before(async () => {
  const guestDir = await buildTestGuest()
  a = await startNodeProcess({ ...fast, CORRAL_NODE_NAME: 'vm-host', CORRAL_NODE_LABELS: 'node=vm-host', CORRAL_DRIVER: 'qemu', CORRAL_QEMU_IMAGE_DIRS: guestDir })
  token = (await call(a.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
  const join = (await call(a.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token as string
  // B serves no TCP routes of its own (A already binds their ports on this machine's loopback).
  b = await startNodeProcess({ ...fast, CORRAL_NODE_NAME: 'gateway', CORRAL_JOIN_TOKEN: join, CORRAL_ADMIN_PASSWORD: '', CORRAL_PROXY_TCP_LISTEN_HOST: 'off' })
  await eventually('B sees both hosts alive', async () => (await call((b as NodeProcess).url, 'GET', '/api/v1/hosts', { token })).body.items?.filter((h: { state: string }) => h.state === 'alive').length === 2)
  const created = await call(b.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'corral-test-guest', name: 'proxied', hostLabels: { node: 'vm-host' } } })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  assert.equal(created.body.state, 'running', created.body.stateReason)
  assert.equal(created.body.host, 'vm-host')
  vm = created.body.id
})

after(async () => {
  for (const node of [b, a]) {
    if (node == null) continue
    await node.stop()
    await killProcessesMentioning(node.dataDir)
    await node.destroy()
  }
})

async function eventually (what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }
}

test('HTTP GET of the guest\'s page through the node that does not run the VM', { timeout: 120_000 }, async () => {
  const gateway = b as NodeProcess
  // The guest's services start a moment after its agent answers: retry briefly on 502.
  let res: Response | undefined
  await eventually('the guest web server answers through B', async () => {
    res = await fetch(`${gateway.url}/proxy/vms/${vm}/80/`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) })
    return res.status !== 502
  })
  assert.equal(res?.status, 200)
  assert.match(await (res as Response).text(), /corral test guest is up/)
  // Without a credential the route is private.
  const anonymous = await fetch(`${gateway.url}/proxy/vms/${vm}/80/`)
  assert.equal(anonymous.status, 401)
  assert.match(((await anonymous.json()) as { detail: string }).detail, /private/)
  // Both appear in B's access log with the VM port they were for.
  const lines = gateway.log().split('\n').filter(l => l.includes('"msg":"request"') && l.includes(`"vm":"${vm}"`)).map(l => JSON.parse(l))
  assert.ok(lines.some(l => l.status === 200 && l.subject === 'admin' && l.proxy.port === 80), 'the proxied GET is in the access log')
  assert.ok(lines.some(l => l.status === 401), 'the refused one too')
})

test('a websocket through the other node reaches the echo service inside the VM', { timeout: 120_000 }, async () => {
  const gateway = b as NodeProcess
  const echo = async (): Promise<Array<{ data: Buffer, binary: boolean }>> => await new Promise((resolve, reject) => {
    const ws = new WebSocket(`${gateway.url.replace('http', 'ws')}/proxy/vms/${vm}/8081/echo`, { headers: { authorization: `Bearer ${token}` } })
    const got: Array<{ data: Buffer, binary: boolean }> = []
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('no echo within 60 s')) }, 60_000)
    ws.on('unexpected-response', (_req, res) => { clearTimeout(timer); reject(new Error(`upgrade refused: ${res.statusCode ?? 0}`)) })
    ws.on('error', err => { clearTimeout(timer); reject(err) })
    ws.on('open', () => {
      ws.send('hello from the laptop')
      ws.send(Buffer.from([0, 1, 2, 253, 254, 255]), { binary: true })
    })
    ws.on('message', (data: Buffer, binary) => {
      got.push({ data, binary })
      if (got.length === 2) {
        clearTimeout(timer)
        ws.close()
        resolve(got)
      }
    })
  })
  let frames: Array<{ data: Buffer, binary: boolean }> = []
  await eventually('the echo service answers', async () => { frames = await echo(); return true }, 60_000)
  assert.equal(frames[0].data.toString(), 'hello from the laptop')
  assert.equal(frames[0].binary, false)
  assert.deepEqual([...frames[1].data], [0, 1, 2, 253, 254, 255])
  assert.equal(frames[1].binary, true)
})

test('an SSH-like exchange through corral port-forward: server speaks first, then bytes both ways', { timeout: 120_000 }, async () => {
  const gateway = b as NodeProcess
  const forward = await startPortForward(gateway.url, token, vm, 22)
  try {
    const client = await RawClient.connect(forward.port)
    await client.until('the server\'s version line', r => r.includes('\r\n'))
    assert.equal(client.received.toString('latin1'), 'SSH-2.0-corral-test-guest\r\n')
    client.socket.write('SSH-2.0-corral-laptop\r\n')
    await client.until('the greeting', r => r.toString('latin1').includes('hello SSH-2.0-corral-laptop\n'))
    // Then arbitrary bytes (a key exchange would be binary), echoed back intact.
    const mark = client.received.length
    const payload = randomBytes(64 * 1024)
    client.socket.write(payload)
    await client.until('the echo of 64 KiB', r => r.length >= mark + payload.length)
    assert.ok(client.received.subarray(mark, mark + payload.length).equals(payload))
    client.socket.destroy()
    // The connection is in B's log with who made it.
    await eventually('B logs the closed connection', async () => gateway.log().includes('"via":"port-forward"') && gateway.log().includes('proxy connection closed'))
  } finally {
    await forward.stop()
  }
})

test('1 GiB streamed from the VM through the other node, with the proxies\' memory bounded', { timeout: 600_000 }, async () => {
  const gateway = b as NodeProcess
  const owner = a as NodeProcess
  const total = 1024 * 1024 * 1024
  const rssMiB = async (node: NodeProcess): Promise<number> => {
    const status = await readFile(`/proc/${node.child.pid as number}/status`, 'utf8')
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024
  }
  const before = { gateway: await rssMiB(gateway), owner: await rssMiB(owner) }
  const peak = { ...before }
  const res = await fetch(`${gateway.url}/proxy/vms/${vm}/80/cgi-bin/zeros?1024`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(540_000) })
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-length'), String(total))
  const reader = (res.body as ReadableStream<Uint8Array>).getReader()
  let received = 0
  let nonZero = 0
  let nextSample = 0
  let pauses = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    received += value.length
    if (value[0] !== 0 || value[value.length - 1] !== 0) nonZero++
    if (received >= nextSample) {
      nextSample += 32 * 1024 * 1024
      peak.gateway = Math.max(peak.gateway, await rssMiB(gateway))
      peak.owner = Math.max(peak.owner, await rssMiB(owner))
      // Stop reading now and then: a proxy without backpressure would buffer what the VM sends meanwhile.
      if (pauses < 3 && received >= (pauses + 1) * 256 * 1024 * 1024) {
        pauses++
        await new Promise(resolve => setTimeout(resolve, 3000))
        peak.gateway = Math.max(peak.gateway, await rssMiB(gateway))
        peak.owner = Math.max(peak.owner, await rssMiB(owner))
      }
    }
  }
  assert.equal(received, total)
  assert.equal(nonZero, 0)
  const grown = { gateway: peak.gateway - before.gateway, owner: peak.owner - before.owner }
  // A bound far below the 1 GiB carried: each node holds at most a few windows of it at a time.
  assert.ok(grown.gateway < 200, `the gateway node grew by ${grown.gateway.toFixed(0)} MiB while streaming 1 GiB`)
  assert.ok(grown.owner < 200, `the VM's host grew by ${grown.owner.toFixed(0)} MiB while streaming 1 GiB`)
  process.stderr.write(`# 1 GiB through the proxy: RSS grew ${grown.gateway.toFixed(0)} MiB on the gateway, ${grown.owner.toFixed(0)} MiB on the VM's host\n`)
})

test('a stopped VM answers 503 through the other node, and its open websocket is closed, not left hanging', { timeout: 180_000 }, async () => {
  const gateway = b as NodeProcess
  const ws = new WebSocket(`${gateway.url.replace('http', 'ws')}/proxy/vms/${vm}/8081/`, { headers: { authorization: `Bearer ${token}` } })
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  const closed = new Promise<void>(resolve => ws.once('close', () => resolve()))
  const stopped = await call(gateway.url, 'POST', `/api/v1/vms/${vm}/stop`, { token })
  assert.equal(stopped.body.state, 'stopped')
  await Promise.race([closed, new Promise((_resolve, reject) => setTimeout(() => reject(new Error('the websocket stayed open after the VM stopped')), 30_000))])
  const res = await fetch(`${gateway.url}/proxy/vms/${vm}/80/`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) })
  assert.equal(res.status, 503)
  const problem = await res.json() as { detail: string }
  assert.match(problem.detail, /is stopped/)
})
