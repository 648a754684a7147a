/**
 * Real qemu tests: they build (or reuse) the test guest and boot it. They run wherever qemu is
 * installed, under whatever accelerator the host really has (TCG on machines without vmx/svm).
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { access, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import { createQemuDriver, type QemuDriver } from '../../../src/drivers/qemu/index.ts'
import type { DriverImage, DriverVm } from '../../../src/drivers/types.ts'
import { buildTestGuest, capturingLogger, httpGet, killProcessesMentioning, qemuInstalled, sha256File } from './helpers.ts'

const run = promisify(execFile)
const installed = await qemuInstalled()
const skip = installed ? false : 'qemu-system-x86_64 and qemu-img are not installed (apt-get install qemu-system-x86 qemu-utils)'
const BOOT_TIMEOUT_MS = 120_000

/** HTTP through a fresh forward: the guest's httpd may start a moment after its agent. */
async function getWithRetry (port: number): Promise<{ status: number, body: string }> {
  let lastError: unknown
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      return await httpGet(port)
    } catch (err) {
      lastError = err
      await sleep(500)
    }
  }
  throw lastError
}

async function within<T> (promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(message)), ms) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** True while `pid` is a live process with `marker` on its command line (a zombie's is empty). */
async function processMentions (pid: number, marker: string): Promise<boolean> {
  return await readFile(`/proc/${pid}/cmdline`, 'utf8').then(c => c.includes(marker), () => false)
}

async function exists (path: string): Promise<boolean> {
  return await access(path).then(() => true, () => false)
}

describe('qemu driver with the test guest', { skip, timeout: 15 * 60_000 }, () => {
  let dataDir: string
  let guestDir: string
  let baseHash: string
  let image: DriverImage
  let driver: QemuDriver
  const captured = capturingLogger()
  const extraDrivers: QemuDriver[] = []

  before(async () => {
    guestDir = await buildTestGuest()
    baseHash = await sha256File(join(guestDir, 'base.qcow2'))
    dataDir = await mkdtemp(join(tmpdir(), 'corral-qemu-test-'))
    driver = createQemuDriver({ logger: captured.logger }, { dataDir, imageDirs: [guestDir], bootTimeoutMs: BOOT_TIMEOUT_MS, stopTimeoutMs: 30_000 })
    await driver.open()
  })

  after(async () => {
    await driver?.close()
    for (const d of extraDrivers) await d.close()
    if (dataDir != null) {
      await killProcessesMentioning(dataDir)
      await rm(dataDir, { recursive: true, force: true })
    }
  })

  it('reports capacity and the accelerator it chose, with the reason, in the log too', async () => {
    const capacity = await driver.capacity()
    assert.equal(capacity.driver, 'qemu')
    assert.equal(capacity.simulated, false)
    assert.equal(capacity.arch, process.arch === 'arm64' ? 'arm64' : 'x86_64')
    assert.ok(capacity.cpus >= 1 && capacity.memoryMiB > 0 && capacity.diskMiB > 0)
    assert.ok(capacity.accelerator != null && ['kvm', 'hvf', 'tcg'].includes(capacity.accelerator.name))
    assert.ok(capacity.accelerator.reason.length > 10)
    const line = captured.lines.find(l => l.accelerator === capacity.accelerator?.name && typeof l.reason === 'string')
    assert.ok(line != null, 'the log names the accelerator and why')
  })

  it('lists and inspects the test guest image', async () => {
    const images = await driver.listImages()
    const found = images.find(i => i.name === 'corral-test-guest')
    assert.ok(found != null)
    assert.equal(found.arch, 'x86_64')
    assert.equal(found.os, 'linux')
    assert.deepEqual(found.ports, [80])
    assert.equal(found.diskMiB, 64)
    image = await driver.inspectImage('my-guest', guestDir)
    assert.equal(image.name, 'my-guest')
    assert.equal(image.path, guestDir)
  })

  let vm: DriverVm
  const id = 'vm-one'

  it('creates a stopped linked clone: an overlay backed by the untouched base', async () => {
    vm = await driver.create({ id, name: 'one', image, cpus: 1, memoryMiB: 256 })
    assert.equal(vm.state, 'stopped')
    assert.deepEqual(vm.ports, [])
    const overlay = vm.info?.overlay as string
    const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', overlay])
    const info = JSON.parse(stdout) as { format: string, 'backing-filename': string }
    assert.equal(info.format, 'qcow2')
    assert.equal(info['backing-filename'], join(guestDir, 'base.qcow2'))
    // Creating again with the same id is idempotent.
    assert.equal((await driver.create({ id, name: 'one', image, cpus: 1, memoryMiB: 256 })).id, id)
  })

  it('starts it, names the accelerator on the VM and forwards port 80 to loopback', async () => {
    vm = await driver.start(id)
    assert.equal(vm.state, 'running')
    assert.ok(typeof vm.info?.pid === 'number')
    assert.ok(['kvm', 'hvf', 'tcg'].includes(vm.info?.accelerator as string))
    assert.ok(String(vm.info?.acceleratorReason).length > 10)
    assert.equal(vm.ports.length, 1)
    assert.equal(vm.ports[0].guestPort, 80)
    assert.equal(vm.ports[0].hostAddress, '127.0.0.1')
    assert.equal(vm.ports[0].protocol, 'tcp')
  })

  it('exec runs a command through the guest agent', async () => {
    const result = await driver.exec(id, { command: ['uname', '-a'], timeoutMs: 30_000 })
    assert.equal(result.exitCode, 0)
    assert.match(result.stdout, /Linux/)
    assert.equal(result.stderr, '')
  })

  it('exec returns stderr and a non-zero exit code, and hands output to onOutput', async () => {
    const chunks: string[] = []
    const result = await driver.exec(id, {
      command: ['sh', '-c', 'echo to-out; echo to-err >&2; exit 3'],
      timeoutMs: 30_000,
      onOutput: (stream, chunk) => chunks.push(`${stream}:${Buffer.from(chunk).toString()}`)
    })
    assert.equal(result.exitCode, 3)
    assert.equal(result.stdout, 'to-out\n')
    assert.equal(result.stderr, 'to-err\n')
    assert.deepEqual(chunks, ['stdout:to-out\n', 'stderr:to-err\n'])
  })

  it('exec passes env and reports a missing program as exit 127', async () => {
    const withEnv = await driver.exec(id, { command: ['sh', '-c', 'echo "$GREETING"'], env: { GREETING: 'hello from corral' }, timeoutMs: 30_000 })
    assert.equal(withEnv.stdout, 'hello from corral\n')
    const missing = await driver.exec(id, { command: ['no-such-program'], timeoutMs: 30_000 })
    assert.equal(missing.exitCode, 127)
    assert.match(missing.stderr, /no-such-program/)
  })

  it('exec times out, kills the command and the agent keeps working', async () => {
    await assert.rejects(driver.exec(id, { command: ['sleep', '300'], timeoutMs: 1500 }), { name: 'ExecTimeoutError' })
    const left = await driver.exec(id, { command: ['sh', '-c', 'pidof sleep || echo none'], timeoutMs: 30_000 })
    assert.equal(left.stdout.trim(), 'none')
  })

  it('serves HTTP on guest port 80 through the loopback forward', async () => {
    const response = await getWithRetry(vm.ports[0].hostPort)
    assert.equal(response.status, 200)
    assert.match(response.body, /corral test guest/)
  })

  it('forwardPort reuses an existing forward and adds one at run time', async () => {
    const same = await driver.forwardPort(id, 80)
    assert.equal(same.hostPort, vm.ports[0].hostPort)
    const started = await driver.exec(id, { command: ['httpd', '-p', '8080', '-h', '/www'], timeoutMs: 30_000 })
    assert.equal(started.exitCode, 0)
    const added = await driver.forwardPort(id, 8080)
    assert.equal(added.hostAddress, '127.0.0.1')
    assert.notEqual(added.hostPort, same.hostPort)
    const response = await getWithRetry(added.hostPort)
    assert.equal(response.status, 200)
    const listed = (await driver.list()).find(v => v.id === id)
    assert.deepEqual(listed?.ports.map(p => p.guestPort).sort(), [80, 8080])
  })

  it('writes from the guest land in the overlay, not the base', async () => {
    const before = await driver.exec(id, { command: ['head', '-c', '22', '/dev/vda'], timeoutMs: 30_000 })
    assert.equal(before.stdout, 'corral-test-guest-base')
    const write = await driver.exec(id, { command: ['sh', '-c', 'echo overlay-was-here | dd of=/dev/vda conv=fsync 2>/dev/null && head -c 16 /dev/vda'], timeoutMs: 30_000 })
    assert.equal(write.stdout, 'overlay-was-here')
    assert.equal(await sha256File(join(guestDir, 'base.qcow2')), baseHash)
  })

  it('suspends and resumes', async () => {
    assert.equal((await driver.suspend(id)).state, 'suspended')
    assert.equal((await driver.list()).find(v => v.id === id)?.state, 'suspended')
    await assert.rejects(driver.exec(id, { command: ['true'], timeoutMs: 5000 }), { name: 'HypervisorError' })
    assert.equal((await driver.resume(id)).state, 'running')
    assert.equal((await driver.exec(id, { command: ['true'], timeoutMs: 30_000 })).exitCode, 0)
  })

  it('restarts with a system reset: the guest boots again', async () => {
    await driver.exec(id, { command: ['touch', '/tmp/before-restart'], timeoutMs: 30_000 })
    assert.equal((await driver.restart(id)).state, 'running')
    const after = await driver.exec(id, { command: ['sh', '-c', 'test -e /tmp/before-restart && echo kept || echo fresh'], timeoutMs: 30_000 })
    assert.equal(after.stdout, 'fresh\n')
  })

  it('stops gracefully with the ACPI power button', async () => {
    const pid = vm.info?.pid as number
    const stopped = await driver.stop(id)
    assert.equal(stopped.state, 'stopped')
    assert.deepEqual(stopped.ports, [])
    assert.match(String(stopped.info?.exitReason), /powered off after the ACPI power button/)
    assert.equal(await processMentions(pid, dataDir), false)
    assert.equal((await driver.list()).find(v => v.id === id)?.state, 'stopped')
    // Stopping a stopped VM is harmless.
    assert.equal((await driver.stop(id)).state, 'stopped')
    await assert.rejects(driver.exec(id, { command: ['true'], timeoutMs: 5000 }), { name: 'HypervisorError' })
  })

  it('deletes the VM: the overlay is gone and the base is unchanged', async () => {
    const overlay = vm.info?.overlay as string
    assert.ok(await exists(overlay))
    await driver.delete(id)
    assert.equal(await exists(overlay), false)
    assert.equal(await exists(join(dataDir, 'vms', id)), false)
    assert.equal(await sha256File(join(guestDir, 'base.qcow2')), baseHash)
    assert.equal((await driver.list()).some(v => v.id === id), false)
    await driver.delete(id)
    await assert.rejects(driver.start(id), { name: 'VmNotFoundInDriverError' })
  })

  it('notices a killed qemu: vm-exited event and the VM listed as failed', async () => {
    const crashId = 'vm-crash'
    await driver.create({ id: crashId, name: 'crash', image, cpus: 1, memoryMiB: 256 })
    const running = await driver.start(crashId)
    const event = new Promise<CustomEvent>(resolve => {
      driver.addEventListener('vm-exited', e => resolve(e as CustomEvent), { once: true })
    })
    process.kill(running.info?.pid as number, 'SIGKILL')
    const exited = await within(event, 30_000, 'no vm-exited event within 30 s of SIGKILL')
    assert.equal(exited.detail.id, crashId)
    assert.equal(exited.detail.state, 'failed')
    assert.match(exited.detail.reason, /exited unexpectedly/)
    const listed = (await driver.list()).find(v => v.id === crashId)
    assert.equal(listed?.state, 'failed')
    assert.deepEqual(listed?.ports, [])
  })

  it('a new driver on the same data folder re-attaches to a running VM', async () => {
    const crashId = 'vm-crash'
    const running = await driver.start(crashId)
    assert.equal(running.state, 'running')
    await driver.close()

    const second = createQemuDriver({ logger: captured.logger }, { dataDir, imageDirs: [guestDir], bootTimeoutMs: BOOT_TIMEOUT_MS, stopTimeoutMs: 30_000 })
    extraDrivers.push(second)
    await second.open()
    const listed = (await second.list()).find(v => v.id === crashId)
    assert.equal(listed?.state, 'running')
    assert.equal(listed?.info?.pid, running.info?.pid)
    assert.deepEqual(listed?.ports, running.ports)
    const result = await second.exec(crashId, { command: ['echo', 'still here'], timeoutMs: 30_000 })
    assert.equal(result.stdout, 'still here\n')
    const response = await getWithRetry(running.ports[0].hostPort)
    assert.equal(response.status, 200)
  })

  it('forces a guest off when it ignores the ACPI power button', async () => {
    const crashId = 'vm-crash'
    const impatient = createQemuDriver({ logger: captured.logger }, { dataDir, imageDirs: [guestDir], bootTimeoutMs: BOOT_TIMEOUT_MS, stopTimeoutMs: 1000 })
    await extraDrivers.at(-1)?.close()
    extraDrivers.push(impatient)
    await impatient.open()
    await impatient.exec(crashId, { command: ['rm', '/etc/acpi/PWRF/00000080'], timeoutMs: 30_000 })
    const stopped = await impatient.stop(crashId)
    assert.equal(stopped.state, 'stopped')
    assert.match(String(stopped.info?.exitReason), /forced off/)
  })

  it('reports a guest that powers itself off as stopped, with an event', async () => {
    const crashId = 'vm-crash'
    const current = extraDrivers.at(-1) as QemuDriver
    await current.start(crashId)
    const event = new Promise<CustomEvent>(resolve => {
      current.addEventListener('vm-exited', e => resolve(e as CustomEvent), { once: true })
    })
    // Delayed, so exec can return before init kills the agent; detached from the output pipes.
    await current.exec(crashId, { command: ['sh', '-c', '(sleep 1; poweroff) >/dev/null 2>&1 &'], timeoutMs: 30_000 })
    const exited = await within(event, 60_000, 'no vm-exited event within 60 s of poweroff')
    assert.equal(exited.detail.state, 'stopped')
    assert.match(exited.detail.reason, /powered itself off/)
    assert.equal((await current.list()).find(v => v.id === crashId)?.state, 'stopped')
    await current.delete(crashId)
    assert.equal((await current.list()).length, 0)
  })
})
