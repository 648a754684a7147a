import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../helpers/node-process.ts'
import { eventually } from '../helpers/eventually.ts'

// A catalog version's minimum host, through HTTP on two node processes (sim driver) that share a
// folder provider: a small host (4 CPUs, 8 GiB) and a big one (16 CPUs, 64 GiB).
const fast = {
  CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '800', CORRAL_CLUSTER_DEAD_AFTER_MS: '2500',
  CORRAL_SCHEDULER_LEASE_MS: '1000', CORRAL_SCHEDULER_RENEW_MS: '250', CORRAL_SCHEDULER_RESUBMIT_MS: '300',
  CORRAL_SIM_TIMINGS_START_MS: '20'
}
let work = ''
let small: NodeProcess | undefined
let big: NodeProcess | undefined
let token = ''

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'corral-minhost-'))
  const catalog = { CORRAL_CATALOG_FOLDER_PATH: join(work, 'store') }
  small = await startNodeProcess({ ...fast, ...catalog, CORRAL_NODE_NAME: 'small', CORRAL_NODE_LABELS: 'size=small', CORRAL_SIM_CPUS: '4', CORRAL_SIM_MEMORY_MI_B: '8192' })
  token = (await call(small.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
  const join_ = (await call(small.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token as string
  big = await startNodeProcess({ ...fast, ...catalog, CORRAL_NODE_NAME: 'big', CORRAL_NODE_LABELS: 'size=big', CORRAL_SIM_CPUS: '16', CORRAL_SIM_MEMORY_MI_B: '65536', CORRAL_JOIN_TOKEN: join_, CORRAL_ADMIN_PASSWORD: '' })
})

after(async () => {
  await small?.destroy()
  await big?.destroy()
  if (work !== '') await rm(work, { recursive: true, force: true })
})

test('a version\'s minimum host keeps VMs off smaller hosts: the dry run says why, a request only small hosts could take is refused (409), and lowering the minimum lets it through', { timeout: 120_000 }, async () => {
  assert.ok(small != null && big != null)
  const bundle = join(work, 'xcode')
  await mkdir(bundle)
  await writeFile(join(bundle, 'image.json'), JSON.stringify({ name: 'xcode', arch: 'x86_64', os: 'linux', disk: 'disk.qcow2', defaultCpus: 2, defaultMemoryMiB: 2048, agent: 'none' }))
  await writeFile(join(bundle, 'disk.qcow2'), Buffer.alloc(1024 * 1024, 3))
  const pushed = await call(small.url, 'POST', '/api/v1/catalog/push?wait=true', { token, body: { path: bundle, id: 'xcode', version: '16.1', minHost: { cpus: 12, memoryMiB: 32768 } } })
  assert.equal(pushed.status, 200, JSON.stringify(pushed.body))
  assert.equal(pushed.body.state, 'done', JSON.stringify(pushed.body))

  // Both hosts offer it (pullable) once gossip has the new version.
  const dry = await eventually('both hosts offer xcode:16.1', async () => {
    const plan = await call(small!.url, 'POST', '/api/v1/vms', { token, body: { image: 'xcode', dryRun: true } })
    return plan.status === 200 && plan.body.placed === true && plan.body.rejected.some((r: { host: string }) => r.host === 'small') ? plan.body : undefined
  })
  assert.equal(dry.host.name, 'big')
  const smallReasons = dry.rejected.find((r: { host: string }) => r.host === 'small').reasons
  assert.deepEqual(smallReasons, ['image xcode:16.1 needs a host with at least 12 CPUs (host has 4), 32768 MiB memory (host has 8192)'])

  // Only the small host may take it: no host ever could, so it is refused at once, not queued.
  const onSmall = { image: 'xcode', hostLabels: { size: 'small' } }
  const explained = await call(big.url, 'POST', '/api/v1/vms', { token, body: { ...onSmall, dryRun: true } })
  assert.equal(explained.body.placed, false)
  assert.match(explained.body.reason, /xcode:16\.1 needs a host with at least 12 CPUs, 32768 MiB memory and no host that matches is that big/)
  const refused = await call(big.url, 'POST', '/api/v1/vms', { token, body: onSmall })
  assert.equal(refused.status, 409, JSON.stringify(refused.body))
  assert.match(refused.type, /application\/problem\+json/)
  assert.match(refused.body.detail, /needs a host with at least 12 CPUs/)
  assert.equal((await call(big.url, 'GET', '/api/v1/vms', { token })).body.items.length, 0, 'nothing queued')

  // Anywhere: the big host takes it (pulling it first).
  const created = await call(small.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'xcode' } })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  assert.equal(created.body.host, 'big')

  // The minimum was wrong: lowered for that version, the small host qualifies.
  const lowered = await call(small.url, 'PUT', '/api/v1/catalog/xcode', { token, body: { version: '16.1', minHost: { cpus: 2 } } })
  assert.equal(lowered.status, 200, JSON.stringify(lowered.body))
  const now = await eventually('the small host qualifies', async () => {
    const plan = await call(big!.url, 'POST', '/api/v1/vms', { token, body: { ...onSmall, dryRun: true } })
    return plan.body.placed === true ? plan.body : undefined
  })
  assert.equal(now.host.name, 'small')
  const onSmallVm = await call(big.url, 'POST', '/api/v1/vms?wait=true', { token, body: onSmall })
  assert.equal(onSmallVm.status, 201, JSON.stringify(onSmallVm.body))
  assert.equal(onSmallVm.body.host, 'small')
})
