import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { createJsonStore } from '../../src/store/json-store.ts'
import type { Store } from '../../src/store/types.ts'
import { createSimDriver } from '../../src/drivers/sim/index.ts'
import { selectDriver } from '../../src/drivers/select.ts'
import { MemoryStore } from '../helpers/memory-store.ts'
import { driverCompliance } from './compliance.ts'

const timings = { createMs: 0, startMs: 0, stopMs: 0, deleteMs: 0, execMs: 0 }
const makeSim = (store: Store = new MemoryStore()) => createSimDriver({ logger: pino({ level: 'silent' }), store }, { cpus: 8, memoryMiB: 16384, diskMiB: 500000, arch: 'x86_64', labels: { rack: 'a' }, timings })

driverCompliance('sim', async () => {
  const driver = makeSim()
  await driver.open()
  const [image] = await driver.listImages()
  return { driver, image, port: 80, cleanup: async () => await driver.close() }
})

test('sim says it is simulated everywhere it answers', async () => {
  const driver = makeSim()
  const capacity = await driver.capacity()
  assert.equal(capacity.simulated, true)
  assert.equal(driver.simulated, true)
  for (const image of await driver.listImages()) assert.equal(image.simulated, true)
})

test('sim offers a macOS, a Windows and a Linux image at once', async () => {
  const os = (await makeSim().listImages()).map(i => i.os).sort()
  assert.deepEqual(os, ['linux', 'macos', 'windows'])
})

test('an unknown command exits 127 and lists what a simulated guest understands', async () => {
  const driver = makeSim()
  const [image] = await driver.listImages()
  await driver.create({ id: 'vm-1', name: 'one', image, cpus: 1, memoryMiB: 512 })
  await driver.start('vm-1')
  const r = await driver.exec('vm-1', { command: ['gcc', '--version'], timeoutMs: 1000 })
  assert.equal(r.exitCode, 127)
  assert.match(r.stderr, /command not found: gcc.*understands: echo/)
})

test('simulated VMs outlive the driver instance (a node restart), as real ones do', async () => {
  const store = new MemoryStore()
  const first = makeSim(store)
  const [image] = await first.listImages()
  await first.create({ id: 'vm-2', name: 'two', image, cpus: 1, memoryMiB: 512 })
  await first.start('vm-2')
  await first.close()
  const second = makeSim(store)
  await second.open()
  assert.deepEqual((await second.list()).map(v => [v.id, v.state]), [['vm-2', 'running']])
})

test('a simulated VM\'s state is on disk when the call that changed it returns, so it outlives a node killed with SIGKILL', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'corral-sim-'))
  const store = createJsonStore({ logger: pino({ level: 'silent' }) }, { dataDir })
  await store.start()
  try {
    const driver = makeSim(store)
    // What a node killed this instant would find: the file, not the store's memory.
    const onDisk = async (): Promise<Record<string, { state: string }>> => JSON.parse(await readFile(join(dataDir, 'state', 'sim-vms.json'), 'utf8')).records
    const [image] = await driver.listImages()
    await driver.create({ id: 'vm-3', name: 'three', image, cpus: 1, memoryMiB: 512 })
    assert.equal((await onDisk())['vm-3']?.state, 'stopped')
    await driver.start('vm-3')
    assert.equal((await onDisk())['vm-3']?.state, 'running')
    await driver.stop('vm-3')
    assert.equal((await onDisk())['vm-3']?.state, 'stopped')
    await driver.delete('vm-3')
    assert.equal((await onDisk())['vm-3'], undefined)
  } finally {
    await store.stop()
    await rm(dataDir, { recursive: true, force: true })
  }
})

test('auto never picks sim; it finds prlctl, then qemu, or refuses with install advice', () => {
  const probe = (present: string[]) => ({ which: (c: string) => present.includes(c) ? `/usr/bin/${c}` : undefined, platform: 'linux' as const, qemuArch: 'x86_64' })
  assert.equal(selectDriver('auto', probe(['prlctl', 'qemu-system-x86_64'])), 'parallels')
  assert.equal(selectDriver('auto', probe(['qemu-system-x86_64'])), 'qemu')
  assert.throws(() => selectDriver('auto', probe([])), (err: Error) => err.name === 'DriverUnavailableError' && /apt-get install qemu-system-x86/.test(err.message) && /CORRAL_DRIVER=sim/.test(err.message))
  assert.throws(() => selectDriver('qemu', probe([])), { name: 'DriverUnavailableError' })
  assert.equal(selectDriver('sim', probe([])), 'sim')
})
