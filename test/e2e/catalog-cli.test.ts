import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'
import { startNodeProcess, call, runCli, ADMIN_PASSWORD, type NodeProcess, type CliRun } from '../helpers/node-process.ts'

// `corral catalog ...` as a user runs it, against one node (sim driver) with a folder provider.
let node: NodeProcess | undefined
let work = ''
let token = ''

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'corral-catalog-cli-'))
  node = await startNodeProcess({ CORRAL_CATALOG_FOLDER_PATH: join(work, 'store') })
  token = (await call(node.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token
})

after(async () => {
  await node?.destroy()
  if (work !== '') await rm(work, { recursive: true, force: true })
})

async function corral (args: string[]): Promise<CliRun> {
  return await runCli(args, { HOME: work, CORRAL_URL: node?.url ?? '', CORRAL_TOKEN: token, CORRAL_CONFIG_DIR: join(work, 'cli') })
}

test('push, list, show, tag, pull with progress, create a VM, revoke, cache: all through the CLI', { timeout: 180_000 }, async () => {
  assert.ok(node != null)
  const image = join(work, 'ubuntu-ci')
  await mkdir(image)
  await writeFile(join(image, 'image.json'), JSON.stringify({ name: 'ubuntu-ci', arch: 'x86_64', os: 'linux', disk: 'disk.qcow2', defaultCpus: 2, defaultMemoryMiB: 2048, agent: 'none' }))
  await writeFile(join(image, 'disk.qcow2'), Buffer.alloc(3 * 1024 * 1024, 7))

  const pushed = await corral(['catalog', 'push', image, '--id', 'ubuntu-ci', '--version', '24.04.1', '--tag', 'latest', 'stable', '--description', 'CI runner'])
  assert.equal(pushed.code, 0, pushed.stderr)
  assert.match(pushed.stdout, /pushed ubuntu-ci:24\.04\.1 \(x86_64\) to folder/)
  const again = await corral(['catalog', 'push', image, '--id', 'ubuntu-ci', '--version', '24.04.1'])
  assert.notEqual(again.code, 0)
  assert.match(again.stderr, /immutable/)

  const list = await corral(['--json', 'catalog', 'list'])
  assert.equal(list.code, 0, list.stderr)
  const items = JSON.parse(list.stdout)
  assert.deepEqual(items.map((i: { id: string }) => i.id), ['ubuntu-ci'])
  assert.deepEqual(items[0].tags, { latest: '24.04.1', stable: '24.04.1' })
  const show = await corral(['catalog', 'show', 'ubuntu-ci'])
  assert.match(show.stdout, /24\.04\.1/)
  assert.match(show.stdout, /CI runner/)
  const tag = await corral(['catalog', 'tag', 'ubuntu-ci', 'candidate', '24.04.1'])
  assert.equal(tag.code, 0, tag.stderr)
  assert.match(tag.stdout, /candidate=24\.04\.1/)

  // Progress on the websocket while the CLI pulls (with its own progress bar on stderr).
  const events: Array<{ type: string, phase?: string }> = []
  const ws = new WebSocket(node.url.replace('http', 'ws') + '/api/v1/catalog/events', { headers: { authorization: `Bearer ${token}` } })
  await new Promise<void>((resolve, reject) => {
    ws.on('message', (d: Buffer) => { const e = JSON.parse(d.toString()); events.push(e); if (e.type === 'subscribed') resolve() })
    ws.on('error', reject)
  })
  const pulled = await corral(['catalog', 'pull', 'ubuntu-ci:stable'])
  assert.equal(pulled.code, 0, pulled.stderr)
  assert.match(pulled.stdout, /ubuntu-ci:24\.04\.1 \(x86_64\) is in the cache/)
  assert.match(pulled.stderr, /pull ubuntu-ci:stable: done/)
  ws.close()
  assert.ok(events.some(e => e.type === 'catalog.progress' && e.phase === 'done'), JSON.stringify(events.map(e => `${e.type}:${e.phase ?? ''}`)))

  const vm = await corral(['vm', 'create', 'ubuntu-ci', '--name', 'from-catalog'])
  assert.equal(vm.code, 0, vm.stderr)
  assert.match(vm.stdout, /running \(simulated\)/)
  const vms = await call(node.url, 'GET', '/api/v1/vms', { token })
  assert.equal(vms.body.items[0].image, 'ubuntu-ci:24.04.1')

  const revoked = await corral(['catalog', 'revoke', 'ubuntu-ci:24.04.1', '--reason', 'CVE-2024-0001'])
  assert.equal(revoked.code, 0, revoked.stderr)
  const refused = await corral(['vm', 'create', 'ubuntu-ci'])
  assert.notEqual(refused.code, 0)
  assert.match(refused.stderr, /CVE-2024-0001/)

  const cache = await corral(['catalog', 'cache'])
  assert.equal(cache.code, 0, cache.stderr)
  assert.match(cache.stdout, /ubuntu-ci:24\.04\.1/)
  const jobs = await corral(['--json', 'catalog', 'jobs'])
  assert.deepEqual(JSON.parse(jobs.stdout).map((j: { kind: string }) => j.kind).sort(), ['pull', 'push', 'push'])
})

test('catalog gc: a deleted version\'s packs and manifest are listed by a dry run, then removed; nothing a live version uses goes', { timeout: 120_000 }, async () => {
  assert.ok(node != null)
  const image = join(work, 'gc-image')
  await mkdir(image)
  await writeFile(join(image, 'image.json'), JSON.stringify({ name: 'gc-image', arch: 'x86_64', os: 'linux', disk: 'disk.qcow2', defaultCpus: 1, defaultMemoryMiB: 512, agent: 'none' }))
  await writeFile(join(image, 'disk.qcow2'), Buffer.from(Array.from({ length: 2 * 1024 * 1024 }, (_, i) => (i * 7919) % 251)))
  assert.equal((await corral(['catalog', 'push', image, '--id', 'gc-image', '--version', '1'])).code, 0)
  const storeKeys = async (sub: string): Promise<string[]> => (await readdir(join(work, 'store', sub), { recursive: true })).filter(f => /[0-9a-f]{64}/.test(f)).sort()
  const before = await storeKeys('packs')
  assert.ok(before.length > 0)

  const nothing = await corral(['--json', 'catalog', 'gc', '--dry-run', '--grace', '0'])
  assert.equal(nothing.code, 0, nothing.stderr)
  assert.deepEqual(JSON.parse(nothing.stdout).providers[0].items, [])

  assert.equal((await corral(['catalog', 'delete', 'gc-image:1'])).code, 0)
  const dry = await corral(['catalog', 'gc', '--dry-run', '--grace', '0'])
  assert.equal(dry.code, 0, dry.stderr)
  assert.match(dry.stdout, /folder: would remove \d+ objects/)
  assert.match(dry.stdout, /would-remove\s+│\s+manifest/)
  assert.match(dry.stdout, /holder records that would go: 1[\s\S]*no catalog version uses this manifest any more/)
  assert.deepEqual(await storeKeys('packs'), before, 'a dry run removes nothing')
  const young = await corral(['--json', 'catalog', 'gc'])
  assert.ok(JSON.parse(young.stdout).providers[0].items.every((i: { action: string }) => i.action === 'kept-young'), 'the default grace keeps what was just written')

  const run = await corral(['--json', 'catalog', 'gc', '--grace', '0'])
  assert.equal(run.code, 0, run.stderr)
  const removed = JSON.parse(run.stdout).providers[0].items.filter((i: { action: string }) => i.action === 'removed').map((i: { key: string }) => i.key)
  assert.ok(removed.some((k: string) => k.startsWith('manifests/')))
  assert.ok((await storeKeys('packs')).length < before.length, 'the deleted version\'s own packs are gone')
  // ubuntu-ci is still whole: a new pull of it on a fresh cache would read every chunk it names.
  const live = await corral(['--json', 'catalog', 'gc', '--dry-run', '--grace', '0'])
  assert.deepEqual(JSON.parse(live.stdout).providers[0].items, [])
})
