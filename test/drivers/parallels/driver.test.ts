import { describe, it, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { createServer, connect, type Server, type AddressInfo } from 'node:net'
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { createParallelsDriver, type ParallelsDriver, type ParallelsDriverInit } from '../../../src/drivers/parallels/index.ts'
import type { DriverImage, OutputStream } from '../../../src/drivers/types.ts'
import { powershellWords } from '../../../src/drivers/parallels/guest-command.ts'
import { FakeRunner, failure, fixture, fromFixture, ok } from './fake-runner.ts'

const logger = pino({ level: 'silent' })
const INFO = (name: string): string[] => ['prlctl', 'list', name, '--all', '--info', '--json']
const LIST = ['prlctl', 'list', '--all', '--info', '--json']
const TEMPLATES = ['prlctl', 'list', '--all', '--template', '--info', '--json']
const UBUNTU_UUID = 'd2c1b0a9-8f7e-4d6c-9b5a-4e3d2c1b0a98'

const ubuntu: DriverImage = {
  name: 'ubuntu-24.04-arm64', arch: 'arm64', os: 'linux', path: '/Users/ci/Parallels/ubuntu-24.04-arm64.pvm',
  defaultCpus: 2, defaultMemoryMiB: 2048, diskMiB: 65536, simulated: false
}

/** The running job42 record with its address swapped, e.g. for a loopback "guest". */
const runningAt = (ip: string | null): string => {
  const doc = JSON.parse(fixture('prlctl-info-job42-running.json'))
  doc[0].Network.ipAddresses = ip == null ? [] : [{ type: 'ipv4', ip }]
  return JSON.stringify(doc)
}

function setup (init: ParallelsDriverInit = {}, readTextFile?: (path: string) => Promise<string>): { fake: FakeRunner, driver: ParallelsDriver } {
  const fake = new FakeRunner()
  const driver = createParallelsDriver({ logger, runner: fake.run, ...(readTextFile != null ? { readTextFile } : {}) }, init)
  return { fake, driver }
}

describe('parallels driver: open, capacity, images', () => {
  it('open checks prlctl, the license and what VMs exist', async () => {
    const { fake, driver } = setup()
    fake.on(['prlctl', '--version'], fromFixture('prlctl-version.txt'))
      .on(['prlsrvctl', 'info', '--json'], fromFixture('prlsrvctl-info.json'))
      .on(LIST, fromFixture('prlctl-list-all.json'))
    await driver.open()
    assert.deepEqual(fake.argvs(), [['prlctl', '--version'], ['prlsrvctl', 'info', '--json'], LIST])
    await driver.close()
    await driver.close()
  })

  it('open refuses an expired license and a missing prlctl, saying what to do', async () => {
    const expired = setup()
    expired.fake.on(['prlctl', '--version'], fromFixture('prlctl-version.txt'))
      .on(['prlsrvctl', 'info', '--json'], fromFixture('prlsrvctl-info-license-expired.json'))
    await assert.rejects(expired.driver.open(), { name: 'HypervisorLicenseError', message: /"expired".*activate Parallels Desktop Pro or Business/ })

    const missing = createParallelsDriver({
      logger,
      runner: async () => { throw Object.assign(new Error('spawn prlctl ENOENT'), { code: 'ENOENT' }) }
    }, { prlctlPath: '/opt/nowhere/prlctl' })
    await assert.rejects(missing.open(), { name: 'DriverUnavailableError', message: /\/opt\/nowhere\/prlctl was not found: install Parallels Desktop Pro or Business/ })

    const serviceDown = setup()
    serviceDown.fake.on(['prlctl', '--version'], failure('service-unreachable'))
    await assert.rejects(serviceDown.driver.open(), { name: 'DriverUnavailableError' })
  })

  it('capacity comes from sysctl, uname, prlsrvctl and df, minus the host reserve', async () => {
    const { fake, driver } = setup({ labels: { xcode: '16' } })
    fake.on(['prlsrvctl', 'info', '--json'], fromFixture('prlsrvctl-info.json'))
      .on(['sysctl', '-n', 'hw.logicalcpu', 'hw.memsize'], fromFixture('sysctl-cpu-memory.txt'))
      .on(['uname', '-m'], fromFixture('uname-m.txt'))
      .on(['df', '-Pk', '/Users/ci/Parallels'], fromFixture('df-vm-home.txt'))
      .on(LIST, fromFixture('prlctl-list-all.json'))
    const capacity = await driver.capacity()
    // corral's four VMs hold 65536 + 131072 + 102400 + 32768 MiB of virtual disk; 409600 MiB are free.
    assert.deepEqual(capacity, {
      cpus: 11,
      memoryMiB: 32768 - 4096,
      diskMiB: 409600 + 331776 - 20480,
      arch: 'arm64',
      os: 'macos',
      driver: 'parallels',
      labels: { xcode: '16' },
      simulated: false,
      accelerator: {
        name: 'parallels',
        reason: 'Parallels Desktop 20.1.2 runs VMs hardware-accelerated on this arm64 Mac (Apple Hypervisor/Virtualization frameworks; arm64 guests only)'
      }
    })
    // Static host facts are read once.
    await driver.capacity()
    assert.equal(fake.argvs().filter(a => a[0] === 'sysctl').length, 1)
  })

  it('lists Parallels templates as images', async () => {
    const { fake, driver } = setup()
    fake.on(TEMPLATES, fromFixture('prlctl-list-templates.json'))
      .on(['sysctl', '-n', 'hw.logicalcpu', 'hw.memsize'], fromFixture('sysctl-cpu-memory.txt'))
      .on(['uname', '-m'], fromFixture('uname-m.txt'))
    const images = await driver.listImages()
    assert.deepEqual(images, [
      { ...ubuntu },
      { name: 'macos-15-xcode16', arch: 'arm64', os: 'macos', path: '/Users/ci/Parallels/macos-15-xcode16.macvm', defaultCpus: 4, defaultMemoryMiB: 8192, diskMiB: 102400, simulated: false },
      { name: 'windows-11-arm', arch: 'arm64', os: 'windows', path: '/Users/ci/Parallels/windows-11-arm.pvm', defaultCpus: 4, defaultMemoryMiB: 8192, diskMiB: 131072, simulated: false }
    ])
  })
})

describe('parallels driver: inspectImage', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'corral-parallels-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  const hostFacts = (fake: FakeRunner): void => {
    fake.on(['sysctl', '-n', 'hw.logicalcpu', 'hw.memsize'], fromFixture('sysctl-cpu-memory.txt')).on(['uname', '-m'], fromFixture('uname-m.txt'))
  }

  it('describes a .pvm bundle from its config.pvs', async () => {
    const bundle = join(dir, 'ubuntu.pvm')
    await mkdir(bundle)
    await writeFile(join(bundle, 'config.pvs'), fixture('config.pvs'))
    const { fake, driver } = setup()
    hostFacts(fake)
    assert.deepEqual(await driver.inspectImage('ubuntu', bundle + '/'), {
      name: 'ubuntu', path: bundle, os: 'linux', arch: 'arm64', defaultCpus: 2, defaultMemoryMiB: 2048, diskMiB: 65536, simulated: false
    })
  })

  it('a .macvm bundle is a macOS arm64 image', async () => {
    const bundle = join(dir, 'sonoma.macvm')
    await mkdir(bundle)
    await writeFile(join(bundle, 'config.pvs'), fixture('config.pvs').replace('<OsType>9</OsType>', '<OsType>255</OsType>'))
    const { driver } = setup()
    const image = await driver.inspectImage('sonoma', bundle)
    assert.equal(image.os, 'macos')
    assert.equal(image.arch, 'arm64')
  })

  it('refuses what is not a complete bundle, saying what to do', async () => {
    const { driver } = setup()
    await assert.rejects(driver.inspectImage('x', join(dir, 'disk.qcow2')), { name: 'ImageInvalidError', message: /\.pvm or \.macvm folder/ })
    await assert.rejects(driver.inspectImage('x', join(dir, 'absent.pvm')), { name: 'ImageInvalidError', message: /does not exist on this host/ })
    await mkdir(join(dir, 'empty.pvm'))
    await assert.rejects(driver.inspectImage('x', join(dir, 'empty.pvm')), { name: 'ImageInvalidError', message: /has no config\.pvs/ })
    await mkdir(join(dir, 'odd.pvm'))
    await writeFile(join(dir, 'odd.pvm', 'config.pvs'), fixture('config.pvs').replace('<OsType>9</OsType>', '<OsType>255</OsType>'))
    await assert.rejects(driver.inspectImage('x', join(dir, 'odd.pvm')), { name: 'ImageInvalidError', message: /OsType 255.*--template on/ })
  })
})

describe('parallels driver: VM lifecycle', () => {
  it('create makes a linked clone of the template, sizes it and reports it stopped', async () => {
    const { fake, driver } = setup()
    fake.on(INFO('corral-job42'), failure('vm-not-found'), fromFixture('prlctl-info-job42-stopped.json'))
      .on(TEMPLATES, fromFixture('prlctl-list-templates.json'))
      .on(['prlctl', 'clone', UBUNTU_UUID, '--name', 'corral-job42', '--linked'], fromFixture('prlctl-clone.txt'))
      .on(['prlctl', 'set', 'corral-job42', '--cpus', '4', '--memsize', '4096'], ok())
    const vm = await driver.create({ id: 'job42', name: 'build 42', image: ubuntu, cpus: 4, memoryMiB: 4096 })
    assert.equal(vm.id, 'job42')
    assert.equal(vm.state, 'stopped')
    assert.deepEqual(vm.ports, [])
    assert.equal(vm.info?.linkedClone, true)
    assert.equal(vm.info?.name, 'corral-job42')
    assert.deepEqual(fake.argvs(), [
      INFO('corral-job42'),
      TEMPLATES,
      ['prlctl', 'clone', UBUNTU_UUID, '--name', 'corral-job42', '--linked'],
      ['prlctl', 'set', 'corral-job42', '--cpus', '4', '--memsize', '4096'],
      INFO('corral-job42')
    ])
    // A clone copies a whole disk: it gets the long timeout, not the default one.
    assert.equal(fake.calls[2].options.timeoutMs, 3_600_000)
  })

  it('macOS (.macvm) templates are cloned in full, into the configured folder', async () => {
    const { fake, driver } = setup({ vmDirectory: '/Volumes/VMs' })
    const macImage: DriverImage = { ...ubuntu, name: 'macos-15-xcode16', os: 'macos', path: '/Users/ci/Parallels/macos-15-xcode16.macvm' }
    const clone = ['prlctl', 'clone', '3f2e1d0c-b9a8-4765-8432-10fedcba9876', '--name', 'corral-m1', '--dst', '/Volumes/VMs']
    fake.on(INFO('corral-m1'), failure('vm-not-found'), fromFixture('prlctl-info-job42-stopped.json'))
      .on(TEMPLATES, fromFixture('prlctl-list-templates.json'))
      .on(clone, ok())
      .on(['prlctl', 'set', 'corral-m1', '--cpus', '4', '--memsize', '8192'], ok())
    const vm = await driver.create({ id: 'm1', name: 'mac', image: macImage, cpus: 4, memoryMiB: 8192 })
    assert.equal(vm.info?.linkedClone, false)
    assert.deepEqual(fake.argvs()[2], clone)
  })

  it('create on a full disk fails with HostDiskFullError and leaves nothing behind', async () => {
    const { fake, driver } = setup()
    fake.on(INFO('corral-job42'), failure('vm-not-found'))
      .on(TEMPLATES, fromFixture('prlctl-list-templates.json'))
      .on(['prlctl', 'clone', UBUNTU_UUID, '--name', 'corral-job42', '--linked'], failure('disk-full-clone'))
    await assert.rejects(driver.create({ id: 'job42', name: 'x', image: ubuntu, cpus: 2, memoryMiB: 2048 }), { name: 'HostDiskFullError' })
    // After the failure the driver looked for a half-made clone (there was none) and deleted nothing.
    assert.deepEqual(fake.argvs().at(-1), INFO('corral-job42'))
    assert.equal(fake.argvs().some(a => a[1] === 'delete'), false)
  })

  it('create refuses an id whose VM already exists, and an unregistered non-bundle image', async () => {
    const taken = setup()
    taken.fake.on(INFO('corral-job42'), fromFixture('prlctl-info-job42-stopped.json'))
    await assert.rejects(taken.driver.create({ id: 'job42', name: 'x', image: ubuntu, cpus: 2, memoryMiB: 2048 }), { name: 'HypervisorError', message: /already exists/ })

    const unknown = setup()
    unknown.fake.on(INFO('corral-job42'), failure('vm-not-found'))
      .on(TEMPLATES, ok('[]'))
      .on(LIST, ok('[]'))
    await assert.rejects(unknown.driver.create({ id: 'job42', name: 'x', image: { ...ubuntu, name: 'nope', path: 'nope' }, cpus: 2, memoryMiB: 2048 }),
      { name: 'ImageInvalidError', message: /prlctl list --template/ })
  })

  it('create registers a bundle that Parallels does not know yet, then clones it', async () => {
    const { fake, driver } = setup()
    const bundle = '/Users/ci/Images/ubuntu-24.04-arm64.pvm'
    const registered = fixture('prlctl-list-templates.json').replaceAll('/Users/ci/Parallels/ubuntu-24.04-arm64.pvm/', bundle + '/')
    fake.on(INFO('corral-b1'), failure('vm-not-found'), fromFixture('prlctl-info-job42-stopped.json'))
      .on(TEMPLATES, ok('[]'))
      .on(LIST, ok('[]'), ok(registered))
      .on(['prlctl', 'register', bundle], ok())
      .on(['prlctl', 'clone', UBUNTU_UUID, '--name', 'corral-b1', '--linked'], ok())
      .on(['prlctl', 'set', 'corral-b1', '--cpus', '2', '--memsize', '2048'], ok())
    await driver.create({ id: 'b1', name: 'x', image: { ...ubuntu, name: 'custom', path: bundle }, cpus: 2, memoryMiB: 2048 })
    assert.ok(fake.argvs().some(a => a[1] === 'register'))
  })

  it('start, suspend, resume and restart run the matching prlctl command and report the new state', async () => {
    const { fake, driver } = setup()
    fake.on(INFO('corral-job42'),
      fromFixture('prlctl-info-job42-stopped.json'), fromFixture('prlctl-info-job42-running.json'), // start
      fromFixture('prlctl-info-job42-running.json'), fromFixture('prlctl-info-job42-suspended.json'), // suspend
      fromFixture('prlctl-info-job42-suspended.json'), fromFixture('prlctl-info-job42-running.json'), // resume
      fromFixture('prlctl-info-job42-running.json'), fromFixture('prlctl-info-job42-running.json')) // restart
      .on(['prlctl', 'start', 'corral-job42'], ok())
      .on(['prlctl', 'suspend', 'corral-job42'], ok())
      .on(['prlctl', 'resume', 'corral-job42'], ok())
      .on(['prlctl', 'restart', 'corral-job42'], ok())
    const started = await driver.start('job42')
    assert.equal(started.state, 'running')
    assert.equal(started.info?.ip, '10.211.55.7')
    assert.equal((await driver.suspend('job42')).state, 'suspended')
    assert.equal((await driver.resume('job42')).state, 'running')
    assert.equal((await driver.restart('job42')).state, 'running')
    assert.deepEqual(fake.argvs().filter(a => a[1] !== 'list'), [
      ['prlctl', 'start', 'corral-job42'],
      ['prlctl', 'suspend', 'corral-job42'],
      ['prlctl', 'resume', 'corral-job42'],
      ['prlctl', 'restart', 'corral-job42']
    ])
  })

  it('restart falls back to a hard reset when the guest cannot restart itself', async () => {
    const { fake, driver } = setup()
    fake.on(INFO('corral-job42'), fromFixture('prlctl-info-job42-running.json'))
      .on(['prlctl', 'restart', 'corral-job42'], failure('tools-unavailable-exec'))
      .on(['prlctl', 'reset', 'corral-job42'], ok())
    assert.equal((await driver.restart('job42')).state, 'running')
    assert.deepEqual(fake.argvs().filter(a => a[1] !== 'list').map(a => a[1]), ['restart', 'reset'])
  })

  it('start maps Parallels refusals: running-VM limit and a VM deleted behind corral\'s back', async () => {
    const limited = setup()
    limited.fake.on(INFO('corral-mac3'), fromFixture('prlctl-info-job42-stopped.json'))
      .on(['prlctl', 'start', 'corral-mac3'], failure('license-running-vms-limit'))
    await assert.rejects(limited.driver.start('mac3'), { name: 'HypervisorLicenseError', message: /another host/ })

    const gone = setup()
    gone.fake.on(INFO('corral-job42'), failure('vm-not-found'))
    await assert.rejects(gone.driver.start('job42'), { name: 'VmNotFoundInDriverError', message: /corral-job42/ })
  })

  it('stop shuts down gracefully within stopTimeoutMs, then kills', async () => {
    const { fake, driver } = setup({ stopTimeoutMs: 1500 })
    fake.on(INFO('corral-job42'), fromFixture('prlctl-info-job42-running.json'), fromFixture('prlctl-info-job42-stopped.json'))
      .on(['prlctl', 'stop', 'corral-job42'], { exitCode: 143, timedOut: true })
      .on(['prlctl', 'stop', 'corral-job42', '--kill'], ok())
    const vm = await driver.stop('job42')
    assert.equal(vm.state, 'stopped')
    const graceful = fake.calls.find(c => c.argv.length === 3 && c.argv[1] === 'stop')
    assert.equal(graceful?.options.timeoutMs, 1500)
    assert.deepEqual(fake.argvs().filter(a => a[1] === 'stop'), [['prlctl', 'stop', 'corral-job42'], ['prlctl', 'stop', 'corral-job42', '--kill']])
  })

  it('stop of a suspended VM drops its saved state; stop of a stopped VM does nothing', async () => {
    const { fake, driver } = setup()
    fake.on(INFO('corral-job42'), fromFixture('prlctl-info-job42-suspended.json'), fromFixture('prlctl-info-job42-stopped.json'))
      .on(['prlctl', 'stop', 'corral-job42', '--drop-state'], ok())
    assert.equal((await driver.stop('job42')).state, 'stopped')
    assert.equal((await driver.stop('job42')).state, 'stopped')
    assert.deepEqual(fake.argvs().filter(a => a[1] === 'stop'), [['prlctl', 'stop', 'corral-job42', '--drop-state']])
  })

  it('delete kills a running VM, removes it, and is idempotent', async () => {
    const { fake, driver } = setup()
    fake.on(INFO('corral-job42'), fromFixture('prlctl-info-job42-running.json'), failure('vm-not-found'))
      .on(['prlctl', 'stop', 'corral-job42', '--kill'], ok())
      .on(['prlctl', 'delete', 'corral-job42'], ok())
    await driver.delete('job42')
    await driver.delete('job42')
    assert.deepEqual(fake.argvs(), [
      INFO('corral-job42'),
      ['prlctl', 'stop', 'corral-job42', '--kill'],
      ['prlctl', 'delete', 'corral-job42'],
      INFO('corral-job42')
    ])
  })

  it('list reports only corral VMs, with their states', async () => {
    const { fake, driver } = setup()
    fake.on(LIST, fromFixture('prlctl-list-all.json'))
    const vms = await driver.list()
    assert.deepEqual(vms.map(v => [v.id, v.state]), [['job42', 'running'], ['win7', 'stopped'], ['mac1', 'suspended'], ['broken', 'failed']])
    assert.equal(vms[0].info?.parallelsState, 'running')
    assert.equal(vms[3].info?.parallelsState, 'invalid')
  })

  it('snapshots: create, list, revert, delete', async () => {
    const { fake, driver } = setup()
    fake.on(['prlctl', 'snapshot', 'corral-job42', '--name', 'clean'], fromFixture('prlctl-snapshot-create.txt'))
      .on(['prlctl', 'snapshot-list', 'corral-job42', '--json'], fromFixture('prlctl-snapshot-list.json'))
      .on(['prlctl', 'snapshot-switch', 'corral-job42', '--id', 'e78bb2b8-7a99-4c8b-ab9a-491a47648c44'], ok())
      .on(['prlctl', 'snapshot-delete', 'corral-job42', '--id', 'e78bb2b8-7a99-4c8b-ab9a-491a47648c44'], ok())
      .on(INFO('corral-job42'), fromFixture('prlctl-info-job42-running.json'))
    const id = await driver.createSnapshot('job42', 'clean')
    assert.equal(id, 'e78bb2b8-7a99-4c8b-ab9a-491a47648c44')
    assert.equal((await driver.listSnapshots('job42')).length, 2)
    assert.equal((await driver.revertSnapshot('job42', id)).state, 'running')
    await driver.deleteSnapshot('job42', id)

    const full = setup()
    full.fake.on(['prlctl', 'snapshot', 'corral-job42', '--name', 'before-tests'], failure('disk-full-snapshot'))
    await assert.rejects(full.driver.createSnapshot('job42', 'before-tests'), { name: 'HostDiskFullError' })
  })
})

describe('parallels driver: exec', () => {
  const ready = (fake: FakeRunner): void => {
    fake.on(INFO('corral-job42'), fromFixture('prlctl-info-job42-running.json'))
  }

  it('streams output and returns the guest command\'s exit code', async () => {
    const { fake, driver } = setup()
    ready(fake)
    fake.on(['prlctl', 'exec', 'corral-job42', "'sh' '-c' 'make test; echo done'"], {
      exitCode: 2, chunks: [['stdout', 'building\n'], ['stderr', 'warning: x\n'], ['stdout', 'done\n']]
    })
    const seen: Array<[OutputStream, string]> = []
    const result = await driver.exec('job42', {
      command: ['sh', '-c', 'make test; echo done'],
      timeoutMs: 60_000,
      onOutput: (stream, chunk) => seen.push([stream, Buffer.from(chunk).toString('utf8')])
    })
    assert.deepEqual(result, { exitCode: 2, stdout: 'building\ndone\n', stderr: 'warning: x\n' })
    assert.deepEqual(seen, [['stdout', 'building\n'], ['stderr', 'warning: x\n'], ['stdout', 'done\n']])
    const call = fake.calls.find(c => c.argv[1] === 'exec')
    assert.equal(call?.options.timeoutMs, 60_000)
  })

  it('passes environment through env, and runs as the desktop user when configured', async () => {
    const { fake, driver } = setup({ execAsCurrentUser: true })
    ready(fake)
    fake.on(['prlctl', 'exec', 'corral-job42', '--current-user', "'env' 'CI=true' 'TOKEN=a b' 'printenv' 'CI'"], ok('true\n'))
    const result = await driver.exec('job42', { command: ['printenv', 'CI'], env: { CI: 'true', TOKEN: 'a b' }, timeoutMs: 10_000 })
    assert.equal(result.stdout, 'true\n')
  })

  it('Windows guests get PowerShell; the OS comes from Parallels when corral did not create the VM this run', async () => {
    const { fake, driver } = setup()
    const win = JSON.stringify([JSON.parse(fixture('prlctl-list-all.json'))[1]])
    const argv = ['prlctl', 'exec', 'corral-win7', ...powershellWords(['whoami'])]
    fake.on(INFO('corral-win7'), ok(win)).on(argv, ok('corral\\ci\r\n'))
    const result = await driver.exec('win7', { command: ['whoami'], timeoutMs: 10_000 })
    assert.equal(result.stdout, 'corral\\ci\r\n')
    assert.deepEqual(fake.argvs(), [INFO('corral-win7'), argv])
    assert.deepEqual(argv.slice(3, 7), ['powershell.exe', '-NoProfile', '-NonInteractive', '-EncodedCommand'])
    // The OS is remembered: a second exec does not ask Parallels again.
    await driver.exec('win7', { command: ['whoami'], timeoutMs: 10_000 })
    assert.equal(fake.argvs().filter(a => a[1] === 'list').length, 1)
  })

  it('a command that runs past its timeout fails with ExecTimeoutError', async () => {
    const { fake, driver } = setup()
    ready(fake)
    fake.on(['prlctl', 'exec', 'corral-job42', "'sleep' '600'"], { exitCode: 143, timedOut: true, chunks: [['stdout', 'partial']] })
    await assert.rejects(driver.exec('job42', { command: ['sleep', '600'], timeoutMs: 5000 }),
      { name: 'ExecTimeoutError', message: /"sleep 600" did not finish within 5000 ms in corral-job42.*raise timeoutSeconds/ })
  })

  it('cancelling the request stops prlctl exec', async () => {
    const { fake, driver } = setup()
    ready(fake)
    fake.on(['prlctl', 'exec', 'corral-job42', "'sleep' '600'"], { hang: true })
    const controller = new AbortController()
    const pending = driver.exec('job42', { command: ['sleep', '600'], timeoutMs: 600_000, signal: controller.signal })
    controller.abort(new Error('job cancelled'))
    await assert.rejects(pending, { message: 'job cancelled' })
  })

  it('prlctl\'s own failures become errors; the guest\'s do not', async () => {
    const { fake, driver } = setup()
    ready(fake)
    fake.on(['prlctl', 'exec', 'corral-job42', "'uname' '-a'"], failure('tools-unavailable-exec'))
      .on(['prlctl', 'exec', 'corral-job42', "'false'"], { exitCode: 255, stderr: 'tool: giving up\n' })
    await assert.rejects(driver.exec('job42', { command: ['uname', '-a'], timeoutMs: 10_000 }), { name: 'GuestAgentUnavailableError' })
    assert.deepEqual(await driver.exec('job42', { command: ['false'], timeoutMs: 10_000 }), { exitCode: 255, stdout: '', stderr: 'tool: giving up\n' })
  })
})

describe('parallels driver: forwardPort', () => {
  let guest: Server
  let guestPort: number
  beforeEach(async () => {
    // Stands in for a service in the guest: echoes what it receives.
    guest = createServer((socket) => socket.pipe(socket))
    await new Promise<void>((resolve) => guest.listen(0, '127.0.0.1', resolve))
    guestPort = (guest.address() as AddressInfo).port
  })
  afterEach(async () => { await new Promise<void>((resolve) => guest.close(() => resolve())) })

  const roundTrip = async (port: number, text: string): Promise<string> => await new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port }, () => socket.end(text))
    let got = ''
    socket.on('data', (d) => { got += d.toString() })
    socket.on('end', () => resolve(got))
    socket.on('error', reject)
  })

  it('relays a loopback port to the guest address Parallels reports, and reuses it', async () => {
    const { fake, driver } = setup()
    fake.on(INFO('corral-job42'), ok(runningAt('127.0.0.1')))
    const forward = await driver.forwardPort('job42', guestPort)
    assert.equal(forward.hostAddress, '127.0.0.1')
    assert.equal(forward.protocol, 'tcp')
    assert.equal(forward.guestPort, guestPort)
    assert.equal(await roundTrip(forward.hostPort, 'ping'), 'ping')
    assert.deepEqual(await driver.forwardPort('job42', guestPort), forward)
    fake.on(LIST, ok(runningAt('127.0.0.1')))
    const [listed] = await driver.list()
    assert.deepEqual(listed.ports, [forward])
    await driver.close()
    await assert.rejects(roundTrip(forward.hostPort, 'ping'), { code: 'ECONNREFUSED' })
  })

  it('falls back to Parallels\' DHCP leases when Parallels Tools report no address', async () => {
    const { fake, driver } = setup({ dhcpLeasesPath: '/fake/leases' }, async (path) => {
      assert.equal(path, '/fake/leases')
      return fixture('parallels_dhcp_leases.txt').replace('10.211.55.7=', '127.0.0.1=')
    })
    fake.on(INFO('corral-job42'), ok(runningAt(null)))
    const forward = await driver.forwardPort('job42', guestPort)
    assert.equal(await roundTrip(forward.hostPort, 'lease'), 'lease')
    await driver.close()
  })

  it('refuses stopped VMs and guests without an address, saying what to wait for', async () => {
    const stopped = setup()
    stopped.fake.on(INFO('corral-job42'), fromFixture('prlctl-info-job42-stopped.json'))
    await assert.rejects(stopped.driver.forwardPort('job42', 22), { name: 'HypervisorError', message: /start it first/ })

    const noIp = setup({}, async () => '')
    noIp.fake.on(INFO('corral-job42'), ok(runningAt(null)))
    await assert.rejects(noIp.driver.forwardPort('job42', 22), { name: 'GuestAgentUnavailableError', message: /no IPv4 address yet/ })
    await assert.rejects(noIp.driver.forwardPort('job42', 70000), { name: 'HypervisorError', message: /1-65535/ })
  })
})

describe('parallels driver: vm-exited', () => {
  it('announces a VM that stopped without corral asking, once', async () => {
    const { fake, driver } = setup()
    const stoppedJob = JSON.parse(fixture('prlctl-list-all.json'))
    stoppedJob[0].State = 'stopped'
    fake.on(LIST, fromFixture('prlctl-list-all.json'), ok(JSON.stringify(stoppedJob)))
    const events: Array<{ id: string, state: string, reason: string }> = []
    driver.addEventListener('vm-exited', (e) => events.push((e as CustomEvent).detail))
    await driver.checkForExits()
    assert.equal(events.length, 0)
    await driver.checkForExits()
    assert.deepEqual(events.map(e => [e.id, e.state]), [['job42', 'stopped']])
    assert.match(events[0].reason, /without corral asking/)
    await driver.checkForExits()
    assert.equal(events.length, 1, 'a VM that is still stopped is not announced again')
  })

  it('a list() between two polls does not hide an exit from the watch', async () => {
    const { fake, driver } = setup()
    const stoppedJob = JSON.parse(fixture('prlctl-list-all.json'))
    stoppedJob[0].State = 'stopped'
    fake.on(LIST, fromFixture('prlctl-list-all.json'), ok(JSON.stringify(stoppedJob)))
    const events: unknown[] = []
    driver.addEventListener('vm-exited', (e) => events.push((e as CustomEvent).detail))
    await driver.checkForExits()
    assert.equal((await driver.list())[0].state, 'stopped')
    await driver.checkForExits()
    assert.equal(events.length, 1)
  })

  it('announces a running VM that vanished from Parallels', async () => {
    const { fake, driver } = setup()
    fake.on(LIST, fromFixture('prlctl-list-all.json'), ok(JSON.stringify(JSON.parse(fixture('prlctl-list-all.json')).slice(1))))
    const events: Array<{ id: string, state: string, reason: string }> = []
    driver.addEventListener('vm-exited', (e) => events.push((e as CustomEvent).detail))
    await driver.checkForExits()
    await driver.checkForExits()
    assert.deepEqual(events.map(e => [e.id, e.state]), [['job42', 'failed']])
    assert.match(events[0].reason, /disappeared from Parallels/)
  })

  it('a VM corral itself stops is not reported as exited', async () => {
    const { fake, driver } = setup()
    fake.on(LIST, fromFixture('prlctl-list-all.json'), ok(JSON.stringify([{ ...JSON.parse(fixture('prlctl-info-job42-stopped.json'))[0] }])))
      .on(INFO('corral-job42'), fromFixture('prlctl-info-job42-running.json'), fromFixture('prlctl-info-job42-stopped.json'))
      .on(['prlctl', 'stop', 'corral-job42'], ok())
    const events: unknown[] = []
    driver.addEventListener('vm-exited', (e) => events.push((e as CustomEvent).detail))
    await driver.checkForExits()
    await driver.stop('job42')
    await driver.checkForExits()
    assert.deepEqual(events, [])
  })
})
