import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import WebSocket from 'ws'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../helpers/node-process.ts'
import { eventually } from '../helpers/eventually.ts'

// Real node processes on loopback, joined into one mesh; every request goes through HTTP.
const fast = { CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '1000', CORRAL_CLUSTER_DEAD_AFTER_MS: '3000' }
const nodes: NodeProcess[] = []
after(async () => { await Promise.all(nodes.map(async n => await n.destroy())) })


const login = async (node: NodeProcess, username = 'admin', password = ADMIN_PASSWORD): Promise<string> => {
  const res = await call(node.url, 'POST', '/api/v1/auth/token', { body: { username, password } })
  if (res.status !== 200) throw new Error(`login ${username} on ${node.url}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.token
}

async function everyNodeSeesAll (group: NodeProcess[], token: string): Promise<void> {
  for (const node of group) {
    await eventually(`${node.url} lists ${group.length} alive hosts`, async () => {
      const hosts = await call(node.url, 'GET', '/api/v1/hosts', { token })
      return hosts.body.items.filter((h: { state: string }) => h.state === 'alive').length === group.length ? true : undefined
    })
  }
}

test('3 nodes joined with a join token: shared hosts, users, tokens and VMs through any node', { timeout: 180_000 }, async () => {
  const a = await startNodeProcess({ ...fast, CORRAL_NODE_NAME: 'node-a', CORRAL_NODE_LABELS: 'node=node-a' })
  nodes.push(a)
  const adminA = await login(a)
  const joinToken = (await call(a.url, 'GET', '/api/v1/cluster/join-token', { token: adminA })).body.token as string
  const others = await Promise.all(['node-b', 'node-c'].map(async name => await startNodeProcess({ ...fast, CORRAL_NODE_NAME: name, CORRAL_NODE_LABELS: `node=${name}`, CORRAL_JOIN_TOKEN: joinToken, CORRAL_ADMIN_PASSWORD: '' })))
  nodes.push(...others)
  const [b, c] = others
  const trio = [a, b, c]

  // A token from node A works on every node (each node's signing key is a cluster-wide record).
  await everyNodeSeesAll(trio, adminA)
  const cluster = await call(c.url, 'GET', '/api/v1/cluster', { token: adminA })
  assert.equal(cluster.status, 200)
  assert.equal(cluster.body.members.length, 3)
  assert.ok(cluster.body.self.multiaddrs.every((m: string) => m.includes('/p2p/')))
  // What the node took in from the others, for ops: gossip accepted (heartbeats at least) and drops.
  assert.ok(cluster.body.metrics.accepted.gossip > 0 && cluster.body.metrics.heartbeatsReceived > 0, JSON.stringify(cluster.body.metrics))
  assert.equal(typeof cluster.body.metrics.dropped.gossip, 'number')
  // Joining nodes made no admin of their own: the founding node's is the only one.
  const users = await call(b.url, 'GET', '/api/v1/users', { token: adminA })
  assert.deepEqual(users.body.items.map((u: { username: string }) => u.username), ['admin'])

  // A user created on B logs in on C.
  assert.equal((await call(b.url, 'POST', '/api/v1/users', { token: adminA, body: { username: 'pipeline', password: 'pipeline-pass', roles: ['ci'] } })).status, 201)
  const ciToken = await eventually('the new user logs in on node C', async () => await login(c, 'pipeline', 'pipeline-pass'))

  // A VM created through A (pinned to A by a host label) is listed, exec'd and deleted through the others.
  const vm = await call(a.url, 'POST', '/api/v1/vms?wait=true', { token: ciToken, body: { image: 'sim-ubuntu-24.04', name: 'mesh-vm', hostLabels: { node: 'node-a' } } })
  assert.equal(vm.status, 201, JSON.stringify(vm.body))
  assert.equal(vm.body.host, 'node-a')
  const id = vm.body.id as string
  await eventually('node C lists the VM', async () => (await call(c.url, 'GET', '/api/v1/vms', { token: ciToken })).body.items.some((v: { id: string }) => v.id === id) ? true : undefined)
  assert.equal((await call(b.url, 'GET', `/api/v1/vms/${id}`, { token: ciToken })).body.state, 'running')
  const exec = await call(c.url, 'POST', `/api/v1/vms/${id}/exec`, { token: ciToken, body: { command: ['uname', '-a'] } })
  assert.equal(exec.status, 200)
  assert.match(exec.body.stdout, /mesh-vm/)

  // The websocket exec on C streams output from the VM on A.
  const frames = await new Promise<any[]>((resolve, reject) => {
    const got: any[] = []
    const ws = new WebSocket(c.url.replace('http', 'ws') + `/api/v1/vms/${id}/exec`, { headers: { authorization: `Bearer ${ciToken}` } })
    ws.on('open', () => ws.send(JSON.stringify({ command: ['echo', 'through the mesh'] })))
    ws.on('message', (d: Buffer) => got.push(JSON.parse(d.toString())))
    ws.on('close', () => resolve(got))
    ws.on('error', reject)
  })
  assert.deepEqual(frames, [{ type: 'stdout', data: 'through the mesh\n' }, { type: 'exit', exitCode: 0 }])

  // Illegal transitions forwarded keep their status and message.
  const conflict = await call(b.url, 'POST', `/api/v1/vms/${id}/resume`, { token: ciToken })
  assert.equal(conflict.status, 409)
  assert.match(conflict.body.detail, /while it is running/)

  // Events of every node on any node's websocket.
  const events = new WebSocket(b.url.replace('http', 'ws') + '/api/v1/events', { headers: { authorization: `Bearer ${ciToken}` } })
  const stopped = new Promise<any>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no stopped event on node B within 20 s')), 20_000)
    events.on('message', (d: Buffer) => {
      const e = JSON.parse(d.toString())
      if (e.type === 'subscribed') void call(c.url, 'POST', `/api/v1/vms/${id}/stop`, { token: ciToken })
      if (e.type === 'vm.state' && e.vm.id === id && e.vm.state === 'stopped') { clearTimeout(timer); resolve(e) }
    })
  })
  assert.equal((await stopped).vm.host, 'node-a')
  events.close()

  assert.equal((await call(c.url, 'DELETE', `/api/v1/vms/${id}`, { token: ciToken })).status, 204)
  for (const node of trio) assert.equal((await call(node.url, 'GET', `/api/v1/vms/${id}`, { token: ciToken })).status, 404)

  // A revoked API key and a deleted user stop working on every node.
  const key = await call(a.url, 'POST', '/api/v1/api-keys', { token: adminA, body: { name: 'ci-key' } })
  await eventually('the key works on node C', async () => (await call(c.url, 'GET', '/api/v1/hosts', { token: key.body.apiKey })).status === 200 ? true : undefined)
  assert.equal((await call(b.url, 'DELETE', `/api/v1/api-keys/${key.body.id as string}`, { token: adminA })).status, 204)
  assert.equal((await call(b.url, 'DELETE', '/api/v1/users/pipeline', { token: adminA })).status, 204)
  for (const node of trio) {
    await eventually(`the revoked key fails on ${node.url}`, async () => (await call(node.url, 'GET', '/api/v1/hosts', { token: key.body.apiKey })).status === 401 ? true : undefined)
    await eventually(`the deleted user's token fails on ${node.url}`, async () => (await call(node.url, 'GET', '/api/v1/vms', { token: ciToken })).status === 401 ? true : undefined)
  }

  // A forward to a host that is gone answers 503 naming it, and does not hang.
  const doomed = await call(a.url, 'POST', '/api/v1/vms?wait=true', { token: adminA, body: { image: 'sim-ubuntu-24.04', name: 'on-c', hostLabels: { node: 'node-c' } } })
  assert.equal(doomed.body.host, 'node-c')
  await eventually('node A knows the VM on C', async () => (await call(a.url, 'GET', '/api/v1/vms', { token: adminA })).body.items.some((v: { id: string }) => v.id === doomed.body.id) ? true : undefined)
  await c.stop('SIGKILL')
  const gone = await call(a.url, 'POST', `/api/v1/vms/${doomed.body.id as string}/exec`, { token: adminA, body: { command: ['true'] } })
  assert.equal(gone.status, 503)
  assert.match(gone.body.detail, /node-c/)
  await eventually('node A marks node C dead', async () => {
    const hosts = await call(a.url, 'GET', '/api/v1/hosts', { token: adminA })
    return hosts.body.items.find((h: { name: string }) => h.name === 'node-c')?.state === 'dead' ? true : undefined
  })
})

test('5 nodes joined by a bootstrap list and the cluster key: every node lists every host', { timeout: 180_000 }, async () => {
  const first = await startNodeProcess({ ...fast, CORRAL_NODE_NAME: 'n1' })
  nodes.push(first)
  const token = await login(first)
  const key = await readFile(join(first.dataDir, 'keys', 'cluster.key'), 'utf8')
  const [bootstrap] = (await call(first.url, 'GET', '/api/v1/cluster', { token })).body.self.multiaddrs as string[]
  const rest = await Promise.all(['n2', 'n3', 'n4', 'n5'].map(async name => await startNodeProcess({ ...fast, CORRAL_NODE_NAME: name, CORRAL_CLUSTER_KEY: key, CORRAL_BOOTSTRAP: bootstrap, CORRAL_ADMIN_PASSWORD: '' })))
  nodes.push(...rest)
  const five = [first, ...rest]
  await everyNodeSeesAll(five, token)
  for (const node of five) {
    const hosts = await call(node.url, 'GET', '/api/v1/hosts', { token })
    assert.deepEqual(hosts.body.items.map((h: { name: string }) => h.name).sort(), ['n1', 'n2', 'n3', 'n4', 'n5'])
    assert.ok(hosts.body.items.every((h: { capacity: { cpus: number }, images: string[] }) => h.capacity.cpus > 0 && h.images.includes('sim-macos-15')))
  }
  // A VM placed by the scheduler, used through a node that does not run it.
  const vm = await call(rest[3].url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-windows-11' } })
  assert.equal(vm.body.state, 'running')
  const gateway = five.find((_n, i) => `n${i + 1}` !== vm.body.host) as NodeProcess
  const exec = await call(gateway.url, 'POST', `/api/v1/vms/${vm.body.id as string}/exec`, { token, body: { command: ['whoami'] } })
  assert.equal(exec.body.stdout, 'corral\\ci\n')
})
