import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { access, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import WebSocket from 'ws'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../helpers/node-process.ts'
import { buildTestGuest, sha256File, killProcessesMentioning } from '../drivers/qemu/helpers.ts'

// Real VMs through a real node process: the qemu driver under whatever accelerator this machine
// really has (TCG here). Required in CI: .ci/run installs qemu and npm test builds the guest first.
let node: NodeProcess | undefined
let guestDir = ''
let token = ''
let baseHash = ''

before(async () => {
  guestDir = await buildTestGuest()
  baseHash = await sha256File(join(guestDir, 'base.qcow2'))
  node = await startNodeProcess({ CORRAL_DRIVER: 'qemu', CORRAL_QEMU_IMAGE_DIRS: guestDir })
  token = (await call(node.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
})

after(async () => {
  if (node != null) {
    await node.stop()
    await killProcessesMentioning(node.dataDir)
    await node.destroy()
  }
})

test('boot a real VM, uname -a, HTTP through its port forward, stop, delete: overlay gone, base untouched', { timeout: 300_000 }, async () => {
  assert.ok(node != null)
  const images = await call(node.url, 'GET', '/api/v1/images', { token })
  assert.ok(images.body.items.some((i: { name: string, simulated: boolean }) => i.name === 'corral-test-guest' && !i.simulated))

  const created = await call(node.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'corral-test-guest', name: 'e2e-qemu' } })
  assert.equal(created.status, 201)
  assert.equal(created.body.state, 'running', created.body.stateReason)
  assert.equal(created.body.simulated, false)
  assert.match(String(created.body.info?.accelerator), /^(kvm|hvf|tcg)$/, 'the VM record says which accelerator was chosen')
  assert.ok(String(created.body.info?.acceleratorReason).length > 0, 'and why')
  const id = created.body.id as string
  const overlay = String(created.body.info?.overlay)
  await access(overlay)

  const exec = await call(node.url, 'POST', `/api/v1/vms/${id}/exec`, { token, body: { command: ['uname', '-a'] } })
  assert.equal(exec.status, 200)
  assert.equal(exec.body.exitCode, 0)
  assert.match(exec.body.stdout, /Linux/)

  const forward = created.body.ports.find((p: { guestPort: number }) => p.guestPort === 80)
  assert.ok(forward != null, 'port 80 is forwarded')
  assert.equal(forward.hostAddress, '127.0.0.1')
  const page = await fetch(`http://127.0.0.1:${forward.hostPort as number}/`, { signal: AbortSignal.timeout(30_000) })
  assert.equal(page.status, 200)
  assert.match(await page.text(), /corral test guest/)

  const stopped = await call(node.url, 'POST', `/api/v1/vms/${id}/stop`, { token })
  assert.equal(stopped.body.state, 'stopped')
  assert.equal((await call(node.url, 'DELETE', `/api/v1/vms/${id}`, { token })).status, 204)
  await assert.rejects(access(overlay), 'the overlay is removed')
  assert.equal(await sha256File(join(guestDir, 'base.qcow2')), baseHash, 'the base image is untouched')
  assert.equal((await call(node.url, 'GET', `/api/v1/vms/${id}`, { token })).status, 404)
})

test('killing qemu under a running VM marks it failed with an event, and delete still cleans up', { timeout: 300_000 }, async () => {
  assert.ok(node != null)
  const created = await call(node.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'corral-test-guest', name: 'e2e-crash' } })
  assert.equal(created.body.state, 'running', created.body.stateReason)
  const id = created.body.id as string
  const pid = Number(created.body.info?.pid)
  assert.ok(pid > 0)

  const events = new WebSocket(node.url.replace('http', 'ws') + `/api/v1/events?vm=${id}`, { headers: { authorization: `Bearer ${token}` } })
  const failed = new Promise<any>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no failed event within 60 s')), 60_000)
    events.on('message', (d: Buffer) => {
      const e = JSON.parse(d.toString())
      if (e.type === 'subscribed') process.kill(pid, 'SIGKILL')
      if (e.type === 'vm.state' && e.vm.state === 'failed') { clearTimeout(timer); resolve(e) }
    })
    events.on('error', reject)
  })
  const event = await failed
  events.close()
  assert.equal(event.previous, 'running')
  assert.ok(String(event.vm.stateReason).length > 0)
  assert.equal((await call(node.url, 'GET', `/api/v1/vms/${id}`, { token })).body.state, 'failed')

  const folder = join(node.dataDir, 'vms', id)
  assert.equal((await call(node.url, 'DELETE', `/api/v1/vms/${id}`, { token })).status, 204)
  await assert.rejects(access(folder), 'the VM folder is removed')
})

test('restarting the node with a VM running: the record is reconciled and the VM still answers', { timeout: 300_000 }, async () => {
  assert.ok(node != null)
  const created = await call(node.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'corral-test-guest', name: 'e2e-restart' } })
  assert.equal(created.body.state, 'running', created.body.stateReason)
  const id = created.body.id as string

  await node.stop('SIGKILL')
  node = await startNodeProcess({ CORRAL_DRIVER: 'qemu', CORRAL_QEMU_IMAGE_DIRS: guestDir }, { dataDir: node.dataDir })
  const vm = await call(node.url, 'GET', `/api/v1/vms/${id}`, { token })
  assert.equal(vm.body.state, 'running')
  const exec = await call(node.url, 'POST', `/api/v1/vms/${id}/exec`, { token, body: { command: ['echo', 'still here'] } })
  assert.equal(exec.body.stdout, 'still here\n')
  assert.equal((await call(node.url, 'DELETE', `/api/v1/vms/${id}`, { token })).status, 204)
  const log = await readFile(join(node.dataDir, 'vms', id, 'console.log'), 'utf8').catch(() => 'gone')
  assert.equal(log, 'gone')
})
