import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../helpers/node-process.ts'
import { eventually } from '../helpers/eventually.ts'
import { BlobServiceClient } from '@azure/storage-blob'
import { startAzurite, startS3Server, startWebdav, S3_TEST_CREDENTIALS, WEBDAV_API_KEY, type RunningServer } from '../helpers/storage-servers.ts'
import { buildTestGuest, killProcessesMentioning } from '../drivers/qemu/helpers.ts'
import { corruptInFolder } from '../catalog/pack-helpers.ts'

// The catalog end to end on real node processes: node A (sim driver) pushes the real qemu test
// guest to each provider (a folder, S3 on s3rver, Azure Blob on Azurite, Artifactory's protocol on
// nginx WebDAV, all on loopback); node B (qemu driver) joins the mesh, pulls, and boots it for real.
const fast = { CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '1000', CORRAL_CLUSTER_DEAD_AFTER_MS: '3000' }
let s3: RunningServer | undefined
let azurite: RunningServer | undefined
let webdav: RunningServer | undefined
let work = ''
let guestDir = ''
let a: NodeProcess | undefined
let b: NodeProcess | undefined
let admin = ''
let catalogEnv: Record<string, string> = {}
let envB: Record<string, string> = {}

before(async () => {
  guestDir = await buildTestGuest()
  s3 = await startS3Server(['corral'])
  const az = await startAzurite()
  azurite = az
  await BlobServiceClient.fromConnectionString(az.connectionString).getContainerClient('corral').create()
  const dav = await startWebdav()
  webdav = dav
  work = await mkdtemp(join(tmpdir(), 'corral-e2e-catalog-'))
  catalogEnv = {
    CORRAL_CATALOG_AZURE_CONTAINER: 'corral',
    AZURE_STORAGE_CONNECTION_STRING: az.connectionString,
    CORRAL_CATALOG_ARTIFACTORY_URL: dav.repoUrl,
    ARTIFACTORY_API_KEY: WEBDAV_API_KEY,
    CORRAL_CATALOG_FOLDER_PATH: join(work, 'shared-folder'),
    CORRAL_CATALOG_S3_BUCKET: 'corral',
    CORRAL_CATALOG_S3_PREFIX: 'images',
    CORRAL_CATALOG_S3_ENDPOINT: s3.endpoint,
    CORRAL_CATALOG_S3_FORCE_PATH_STYLE: 'true',
    AWS_ACCESS_KEY_ID: S3_TEST_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: S3_TEST_CREDENTIALS.secretAccessKey,
    CORRAL_CATALOG_DEFAULT_PROVIDER: 'folder'
  }
  a = await startNodeProcess({ ...fast, ...catalogEnv, CORRAL_NODE_NAME: 'node-a' })
  admin = (await call(a.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
  const joinToken = (await call(a.url, 'GET', '/api/v1/cluster/join-token', { token: admin })).body.token as string
  envB = { ...fast, ...catalogEnv, CORRAL_NODE_NAME: 'node-b', CORRAL_DRIVER: 'qemu', CORRAL_JOIN_TOKEN: joinToken, CORRAL_ADMIN_PASSWORD: '', CORRAL_CATALOG_CONCURRENCY: '2' }
  b = await startNodeProcess(envB)
  await eventually('node B is a member', async () => (await call(a!.url, 'GET', '/api/v1/hosts', { token: admin })).body.items.filter((h: { state: string }) => h.state === 'alive').length === 2 ? true : undefined)
})

after(async () => {
  if (process.env.CORRAL_E2E_DUMP != null) for (const node of [a, b]) process.stderr.write(node?.log().split('\n').slice(-30).join('\n') ?? '')
  for (const node of [b, a]) {
    if (node == null) continue
    await node.stop()
    await killProcessesMentioning(node.dataDir)
    await node.destroy()
  }
  await s3?.stop()
  await azurite?.stop()
  await webdav?.stop()
  if (work !== '') await rm(work, { recursive: true, force: true })
})

async function push (node: NodeProcess, body: Record<string, unknown>): Promise<any> {
  const res = await call(node.url, 'POST', '/api/v1/catalog/push?wait=true', { token: admin, body })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  assert.equal(res.body.state, 'done', JSON.stringify(res.body.error))
  return res.body
}

async function bootAndCheck (gateway: NodeProcess, image: string, token = admin): Promise<void> {
  const created = await call(gateway.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image, name: `vm-${image.replace(/[^a-z0-9]/g, '')}` } })
  assert.equal(created.status, 201, JSON.stringify(created.body))
  assert.equal(created.body.state, 'running', created.body.stateReason)
  assert.equal(created.body.host, 'node-b', 'the real qemu host, not the sim one')
  assert.match(created.body.image, /^[a-z0-9-]+:1\.0$/, 'the VM is pinned to the version the reference meant')
  const exec = await call(gateway.url, 'POST', `/api/v1/vms/${created.body.id as string}/exec`, { token, body: { command: ['uname', '-a'] } })
  assert.equal(exec.body.exitCode, 0, JSON.stringify(exec.body))
  assert.match(exec.body.stdout, /Linux/)
  assert.equal((await call(gateway.url, 'DELETE', `/api/v1/vms/${created.body.id as string}`, { token })).status, 204)
}

const prune = async (node: NodeProcess): Promise<void> => {
  const res = await call(node.url, 'POST', '/api/v1/catalog/cache/prune', { token: admin, body: {} })
  assert.equal(res.status, 200, JSON.stringify(res.body))
}

test('push the qemu test guest to each provider from node A; node B pulls it from that provider and boots it', { timeout: 600_000 }, async () => {
  assert.ok(a != null && b != null)
  const providers = ['folder', 's3', 'azure', 'artifactory'] as const
  const pushed: Record<string, any> = {}
  for (const provider of providers) {
    pushed[provider] = await push(a, { path: guestDir, id: `guest-${provider}`, version: '1.0', provider, description: 'the corral test guest' })
    assert.equal(pushed[provider].result.provider, provider)
    assert.equal(pushed[provider].result.guest.format, 'qemu')
  }
  // Metadata is cluster-wide: B serves it, and offers every version as pullable.
  await eventually('node B lists every image', async () => {
    const list = await call(b!.url, 'GET', '/api/v1/catalog', { token: admin })
    return list.body.items.length >= providers.length ? true : undefined
  })
  await eventually('the leader sees B offer them', async () => {
    const plan = await call(a!.url, 'POST', '/api/v1/vms', { token: admin, body: { image: 'guest-folder', dryRun: true } })
    return plan.body.placed === true && plan.body.host.name === 'node-b' ? true : undefined
  })

  for (const provider of providers) {
    // Every version holds the same bytes: empty both caches so this pull reads this provider.
    await prune(a)
    await prune(b)
    const id = `guest-${provider}`
    if (provider === 'folder') {
      // On demand: placement puts the VM on B, which pulls while the VM is creating. A is the gateway.
      await bootAndCheck(a, id)
      const jobs = await call(b.url, 'GET', '/api/v1/catalog/cache', { token: admin })
      assert.deepEqual(jobs.body.images.map((i: { name: string }) => i.name), [`${id}:1.0`])
    } else {
      const pull = await call(b.url, 'POST', `/api/v1/catalog/${id}/pull?wait=true`, { token: admin, body: {} })
      assert.equal(pull.body.state, 'done', JSON.stringify(pull.body.error))
      assert.equal(pull.body.progress.chunksDone, pull.body.progress.chunksTotal)
      assert.equal(pull.body.progress.bytesFromProvider, pushed[provider].result.storedSize, `every chunk came from ${provider}`)
      await bootAndCheck(b, id)
    }
  }
  const cache = await call(b.url, 'GET', '/api/v1/catalog/cache', { token: admin })
  assert.ok(cache.body.metrics.providerBytesRead >= providers.length * pushed.folder.result.storedSize, JSON.stringify(cache.body.metrics))

  // B holds guest-artifactory now: A pulls it from B over the mesh and reads nothing from storage.
  const fromPeer = await call(a.url, 'POST', '/api/v1/catalog/guest-artifactory/pull?wait=true', { token: admin, body: {} })
  assert.equal(fromPeer.body.state, 'done', JSON.stringify(fromPeer.body.error))
  assert.equal(fromPeer.body.progress.bytesFromProvider, 0)
  // A host serves an image it unpacked uncompressed: peers are on the LAN, storage is not.
  assert.ok(fromPeer.body.progress.bytesFromPeers >= pushed.artifactory.result.storedSize)
})

test('a user without the image\'s claims can neither pull it nor create a VM from it', { timeout: 120_000 }, async () => {
  assert.ok(a != null && b != null)
  await push(a, { path: guestDir, id: 'guest-secret', version: '1.0', requiredClaims: ['macos-builders'] })
  assert.equal((await call(a.url, 'POST', '/api/v1/users', { token: admin, body: { username: 'pipeline', password: 'pipeline-pass', roles: ['ci'] } })).status, 201)
  const ci = (await call(a.url, 'POST', '/api/v1/auth/token', { body: { username: 'pipeline', password: 'pipeline-pass' } })).body.token as string
  await eventually('B knows the image', async () => (await call(b!.url, 'GET', '/api/v1/catalog/guest-secret', { token: admin })).status === 200 ? true : undefined)
  for (const node of [a, b]) {
    const pull = await call(node.url, 'POST', '/api/v1/catalog/guest-secret/pull', { token: ci, body: {} })
    assert.equal(pull.status, 403, JSON.stringify(pull.body))
    assert.match(pull.body.detail, /macos-builders/)
    const vm = await call(node.url, 'POST', '/api/v1/vms', { token: ci, body: { image: 'guest-secret' } })
    assert.equal(vm.status, 403, JSON.stringify(vm.body))
  }
  const listed = await call(a.url, 'GET', '/api/v1/catalog', { token: ci })
  assert.equal(listed.body.items.find((i: { id: string }) => i.id === 'guest-secret').usable, false)
  // Nothing was pulled on the user's behalf.
  const cache = await call(b.url, 'GET', '/api/v1/catalog/cache', { token: admin })
  assert.ok(!cache.body.images.some((i: { name: string }) => i.name.startsWith('guest-secret')))
})

test('a pull interrupted by killing the node resumes at restart and does not fetch again what it had', { timeout: 300_000 }, async () => {
  assert.ok(a != null && b != null)
  // 48 MiB that does not compress: about 48 chunks, fetched 2 at a time from s3rver.
  const bulk = join(work, 'bulk-image')
  await mkdir(bulk, { recursive: true })
  await writeFile(join(bulk, 'image.json'), await readFile(join(guestDir, 'image.json')))
  for (const f of ['vmlinuz', 'initrd.img', 'base.qcow2']) await writeFile(join(bulk, f), await readFile(join(guestDir, f)))
  await writeFile(join(bulk, 'payload.bin'), randomBytes(48 * 1024 * 1024))
  const pushed = await push(a, { path: bulk, id: 'bulk', version: '1.0', provider: 's3' })
  const total = pushed.result.chunks as number
  await eventually('B knows the bulk image', async () => (await call(b!.url, 'GET', '/api/v1/catalog/bulk', { token: admin })).status === 200 ? true : undefined)

  const started = await call(b.url, 'POST', '/api/v1/catalog/bulk/pull', { token: admin, body: {} })
  assert.equal(started.status, 202)
  const dataDir = b.dataDir
  const journalPath = join(dataDir, 'catalog', 'images', 'bulk@1.0@x86_64', '.unpacking-bulk-image.placed')
  // A third of the way, and some of it journalled: chunks the node already held (the guest's files)
  // count as done before any fetched chunk is journalled, so progress alone can run ahead of the file.
  const before = await eventually('the pull is a third of the way, with chunks journalled', async () => {
    const job = await call(b!.url, 'GET', `/api/v1/catalog/jobs/${started.body.id as string}`, { token: admin })
    const journalled = await readFile(journalPath, 'utf8').then(text => text.trim() !== '', () => false)
    return job.body.progress.chunksDone >= total / 3 && journalled ? job.body.progress : undefined
  })
  await b.stop('SIGKILL')
  // What it had written is journalled beside the half-written image.
  const journal = await readFile(journalPath, 'utf8')
  assert.ok(journal.trim().split('\n').length > 0)
  b = await startNodeProcess(envB, { dataDir })
  const resumed = await eventually('the restarted node resumes the pull and finishes it', async () => {
    const jobs = await call(b!.url, 'GET', '/api/v1/catalog/jobs', { token: admin })
    const job = jobs.body.items.find((j: { kind: string, ref: string }) => j.kind === 'pull' && j.ref === 'bulk:1.0')
    return job?.state === 'done' ? job : undefined
  }, 120_000)
  const p = resumed.progress
  assert.ok(p.chunksReused >= before.chunksDone, `it kept the ${before.chunksDone as number} chunks it had (reused ${p.chunksReused as number})`)
  assert.equal(p.chunksDone, total)
  const fetched = (p.bytesFromProvider as number) + (p.bytesFromPeers as number)
  assert.ok(fetched < pushed.result.storedSize * 0.8, `fetched ${fetched} of ${pushed.result.storedSize as number} bytes after the restart`)
  const cache = await call(b.url, 'GET', '/api/v1/catalog/cache', { token: admin })
  assert.ok(cache.body.images.some((i: { name: string }) => i.name === 'bulk:1.0'))
})

test('a chunk corrupted in storage comes from a peer with a good copy; with none, the pull fails cleanly and no VM boots from bad bytes', { timeout: 300_000 }, async () => {
  assert.ok(a != null && b != null)
  // A copy of the guest with one changed byte in its kernel command line file, so its chunks differ.
  const copy = join(work, 'corrupt-guest')
  await mkdir(copy, { recursive: true })
  for (const f of ['image.json', 'vmlinuz', 'base.qcow2']) await writeFile(join(copy, f), await readFile(join(guestDir, f)))
  const initrd = await readFile(join(guestDir, 'initrd.img'))
  await writeFile(join(copy, 'initrd.img'), Buffer.concat([initrd, Buffer.from('corral-e2e-corrupt')]))
  const pushed = await push(a, { path: copy, id: 'guest-corrupt', version: '1.0', provider: 'folder' })
  // Damage one chunk of that version in the provider (one only it has: the tail of the initrd).
  const manifest = JSON.parse(await readFile(join(catalogEnv.CORRAL_CATALOG_FOLDER_PATH, 'manifests', `${pushed.result.manifest as string}.json`), 'utf8'))
  const initrdEntry = manifest.entries.find((e: { path: string }) => e.path === 'initrd.img')
  const victim = initrdEntry.chunks.at(-1)[0] as string
  await corruptInFolder(catalogEnv.CORRAL_CATALOG_FOLDER_PATH, manifest, victim)
  await eventually('B knows the image', async () => (await call(b!.url, 'GET', '/api/v1/catalog/guest-corrupt', { token: admin })).status === 200 ? true : undefined)

  // A still holds a good copy of every chunk (it pushed them): B's pull takes the bad one from A.
  const rescued = await call(b.url, 'POST', '/api/v1/catalog/guest-corrupt/pull?wait=true', { token: admin, body: {} })
  assert.equal(rescued.body.state, 'done', JSON.stringify(rescued.body.error))
  assert.ok(rescued.body.progress.bytesFromPeers > 0)
  // Without that copy anywhere, the damage is final: every source gives bad bytes.
  for (const node of [a, b]) assert.equal((await call(node.url, 'POST', '/api/v1/catalog/cache/prune', { token: admin, body: {} })).status, 200)
  const pull = await call(b.url, 'POST', '/api/v1/catalog/guest-corrupt/pull?wait=true', { token: admin, body: {} })
  assert.equal(pull.status, 502, JSON.stringify(pull.body))
  assert.match(pull.body.detail, /corrupt/)
  const vm = await call(b.url, 'POST', '/api/v1/vms?wait=true', { token: admin, body: { image: 'guest-corrupt', name: 'never-boots' } })
  assert.notEqual(vm.body.state, 'running', 'no VM runs from an image with a bad chunk')
  if (vm.body.id != null) await call(b.url, 'DELETE', `/api/v1/vms/${vm.body.id as string}`, { token: admin })
  const cache = await call(b.url, 'GET', '/api/v1/catalog/cache', { token: admin })
  assert.ok(!cache.body.images.some((i: { name: string }) => i.name.startsWith('guest-corrupt')), 'nothing unpacked')
})
