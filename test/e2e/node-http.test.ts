import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../helpers/node-process.ts'

let node: NodeProcess | undefined
after(async () => { await node?.destroy() })

test('a CI job over HTTP: log in, list images, create a VM, exec, stop, delete, then 404', async () => {
  node = await startNodeProcess()
  const { url } = node
  assert.equal((await call(url, 'GET', '/health')).status, 200)
  assert.equal((await call(url, 'GET', '/api/v1/vms')).status, 401)

  const login = await call(url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })
  assert.equal(login.status, 200)
  const token = login.body.token as string

  const images = await call(url, 'GET', '/api/v1/images', { token })
  assert.ok(images.body.items.some((i: { name: string }) => i.name === 'sim-ubuntu-24.04'))

  const created = await call(url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04', name: 'e2e-http', cpus: 1 } })
  assert.equal(created.status, 201)
  assert.equal(created.body.state, 'running')
  assert.equal(created.body.simulated, true)
  const id = created.body.id as string

  const exec = await call(url, 'POST', `/api/v1/vms/${id}/exec`, { token, body: { command: ['uname', '-a'] } })
  assert.equal(exec.status, 200)
  assert.equal(exec.body.exitCode, 0)
  assert.match(exec.body.stdout, /Linux e2e-http/)

  // The websocket form streams output and ends with the exit code.
  const frames = await new Promise<any[]>((resolve, reject) => {
    const got: any[] = []
    const ws = new WebSocket(url.replace('http', 'ws') + `/api/v1/vms/${id}/exec`, { headers: { authorization: `Bearer ${token}` } })
    ws.on('open', () => ws.send(JSON.stringify({ command: ['echo', 'streamed'] })))
    ws.on('message', (d: Buffer) => got.push(JSON.parse(d.toString())))
    ws.on('close', () => resolve(got))
    ws.on('error', reject)
  })
  assert.deepEqual(frames, [{ type: 'stdout', data: 'streamed\n' }, { type: 'exit', exitCode: 0 }])

  assert.equal((await call(url, 'POST', `/api/v1/vms/${id}/stop`, { token })).body.state, 'stopped')
  const conflict = await call(url, 'POST', `/api/v1/vms/${id}/exec`, { token, body: { command: ['true'] } })
  assert.equal(conflict.status, 409)
  assert.match(conflict.type, /problem\+json/)
  assert.match(conflict.body.detail, /while it is stopped/)

  assert.equal((await call(url, 'DELETE', `/api/v1/vms/${id}`, { token })).status, 204)
  const gone = await call(url, 'GET', `/api/v1/vms/${id}`, { token })
  assert.equal(gone.status, 404)
  assert.match(gone.body.detail, new RegExp(id))
})

test('VM records survive a node restart and are reconciled', async () => {
  assert.ok(node != null)
  const login = await call(node.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })
  const created = await call(node.url, 'POST', '/api/v1/vms?wait=true', { token: login.body.token, body: { image: 'sim-macos-15', name: 'survivor' } })
  assert.equal(created.body.state, 'running')
  await node.stop('SIGKILL')
  node = await startNodeProcess({}, { dataDir: node.dataDir })
  // The token was signed by a key kept in the data folder, so it still works after the restart.
  const vm = await call(node.url, 'GET', `/api/v1/vms/${created.body.id as string}`, { token: login.body.token })
  assert.equal(vm.status, 200)
  assert.equal(vm.body.state, 'running')
})
