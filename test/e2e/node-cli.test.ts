import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startNodeProcess, runCli, ADMIN_PASSWORD, type NodeProcess, type CliRun } from '../helpers/node-process.ts'

let node: NodeProcess | undefined
let configDir: string | undefined
after(async () => {
  await node?.destroy()
  if (configDir != null) await rm(configDir, { recursive: true, force: true })
})

/** Runs the real `corral` CLI as a user would, with a bounded wait. */
async function corral (args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return await runCli(args, { HOME: process.env.HOME ?? tmpdir(), CORRAL_URL: node?.url ?? '', CORRAL_CONFIG_DIR: configDir ?? '', ...env })
}

test('a CI job through the CLI: login, image list, vm create, exec, stop, delete, then not found', async () => {
  node = await startNodeProcess()
  configDir = await mkdtemp(join(tmpdir(), 'corral-cli-'))

  const bad = await corral(['login', '--password', 'wrong-password'])
  assert.notEqual(bad.code, 0)
  assert.match(bad.stderr, /401/)

  const login = await corral(['login', '--username', 'admin', '--password', ADMIN_PASSWORD])
  assert.equal(login.code, 0, login.stderr)
  assert.equal(((await stat(join(configDir, 'session.json'))).mode & 0o777), 0o600)

  const images = await corral(['image', 'list'])
  assert.equal(images.code, 0)
  assert.match(images.stdout, /sim-windows-11/)

  const created = await corral(['--json', 'vm', 'create', 'sim-ubuntu-24.04', '--name', 'e2e-cli', '--cpus', '1'])
  assert.equal(created.code, 0, created.stderr)
  const vm = JSON.parse(created.stdout) as { id: string, state: string }
  assert.equal(vm.state, 'running')

  const list = await corral(['vm', 'list'])
  assert.match(list.stdout, /e2e-cli/)

  const exec = await corral(['vm', 'exec', vm.id, '--', 'uname', '-a'])
  assert.equal(exec.code, 0)
  assert.match(exec.stdout, /Linux e2e-cli/)
  const failing = await corral(['vm', 'exec', vm.id, '--', 'exit', '7'])
  assert.equal(failing.code, 7, 'the CLI exits with the command\'s exit code')

  assert.equal((await corral(['vm', 'stop', vm.id])).code, 0)
  const wrong = await corral(['vm', 'suspend', vm.id])
  assert.notEqual(wrong.code, 0)
  assert.match(wrong.stderr, /409.*while it is stopped/)

  assert.equal((await corral(['vm', 'delete', vm.id])).code, 0)
  const gone = await corral(['vm', 'get', vm.id])
  assert.notEqual(gone.code, 0)
  assert.match(gone.stderr, /404/)
})

test('cluster commands: init writes a key and a token that joins; show and host list read the mesh', async () => {
  assert.ok(configDir != null)
  const keyFile = join(configDir, 'cluster.key')
  const init = await corral(['--json', 'cluster', 'init', '--advertise', '/ip4/127.0.0.1/tcp/7946', '--key-file', keyFile])
  assert.equal(init.code, 0, init.stderr)
  assert.equal(((await stat(keyFile)).mode & 0o777), 0o600)
  const { decodeJoinToken } = await import('../../src/node/index.ts')
  const token = decodeJoinToken(JSON.parse(init.stdout).joinToken)
  assert.deepEqual(token.bootstrap, ['/ip4/127.0.0.1/tcp/7946'])
  const again = await corral(['cluster', 'init', '--key-file', keyFile])
  assert.notEqual(again.code, 0)
  assert.match(again.stderr, /never overwrites/)

  const show = await corral(['cluster', 'show'])
  assert.equal(show.code, 0, show.stderr)
  assert.match(show.stdout, /alive/)
  const hosts = await corral(['--json', 'host', 'list'])
  assert.equal(JSON.parse(hosts.stdout).length, 1)
  const joinToken = await corral(['cluster', 'token'])
  assert.equal(joinToken.code, 0)
  assert.ok(decodeJoinToken(joinToken.stdout.trim()).bootstrap.length > 0)
})

test('vm create --dry-run explains; a VM that does not fit yet queues and shows its position', async () => {
  const dry = await corral(['vm', 'create', 'sim-ubuntu-24.04', '--dry-run', '--arch', 'x86_64'])
  assert.equal(dry.code, 0, dry.stderr)
  assert.match(dry.stdout, /would run on/)
  const big = await corral(['--json', 'vm', 'create', 'sim-ubuntu-24.04', '--cpus', '32', '--name', 'fills-it'])
  assert.equal(big.code, 0, big.stderr)
  const waiting = await corral(['vm', 'create', 'sim-ubuntu-24.04', '--cpus', '2', '--name', 'waits', '--priority', '80', '--timeout', '2'])
  assert.notEqual(waiting.code, 0)
  assert.match(waiting.stderr, /did not become running within 2 s \(it is queued\)/)
  const list = JSON.parse((await corral(['--json', 'vm', 'list'])).stdout) as Array<{ id: string, name: string, state: string }>
  const queued = list.find(v => v.name === 'waits')
  assert.equal(queued?.state, 'queued')
  const shown = await corral(['vm', 'get', queued.id])
  assert.match(shown.stdout, /queuePosition\s*│\s*1/)
  // Deleting the VM that fills the host lets the queued one run.
  assert.equal((await corral(['vm', 'delete', JSON.parse(big.stdout).id])).code, 0)
  const deadline = Date.now() + 20_000
  let state = ''
  while (Date.now() < deadline && state !== 'running') {
    state = JSON.parse((await corral(['--json', 'vm', 'get', queued.id])).stdout).state
  }
  assert.equal(state, 'running')
  assert.equal((await corral(['vm', 'delete', queued.id])).code, 0)
})

test('a bad config value stops the node with the key, the value and what is allowed', async () => {
  const out = await corral(['node'], { CORRAL_DRIVER: 'vmware', CORRAL_DATA_DIR: join(tmpdir(), 'corral-never-created') })
  assert.equal(out.code, 2)
  assert.match(out.stderr, /driver.*CORRAL_DRIVER.*"vmware".*auto, qemu, parallels, sim/)
})

test('with no hypervisor and no driver named, the node refuses to start and says how to get one', async () => {
  const out = await corral(['node', '--data-dir', join(tmpdir(), 'corral-no-driver')], { PATH: '/nonexistent', CORRAL_DRIVER: 'auto' })
  assert.notEqual(out.code, 0)
  assert.match(out.stderr, /no hypervisor found.*CORRAL_DRIVER=sim/)
})
