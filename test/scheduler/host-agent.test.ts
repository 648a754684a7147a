import { test } from 'node:test'
import assert from 'node:assert/strict'
import { pino } from 'pino'
import { createSimDriver } from '../../src/drivers/sim/index.ts'
import { LocalImages } from '../../src/catalog/index.ts'
import { HostAgent, ReservationLedger, canDo, vmStates, type VmEvent } from '../../src/scheduler/index.ts'
import { MemoryStore } from '../helpers/memory-store.ts'

const logger = pino({ level: 'silent' })
const timings = { createMs: 0, startMs: 0, stopMs: 0, deleteMs: 0, execMs: 0 }

async function makeHost (store = new MemoryStore(), cpus = 8) {
  const driver = createSimDriver({ logger, store }, { cpus, memoryMiB: 16384, diskMiB: 1_000_000, arch: 'x86_64', labels: {}, timings })
  await driver.open()
  const images = new LocalImages({ driver, store, logger, clock: Date.now })
  const host = new HostAgent({ driver, store, images, logger, clock: Date.now }, { hostName: 'h1', execTimeoutSeconds: 30, maxExecTimeoutSeconds: 60 })
  await host.start()
  return { host, driver, store }
}

test('the ledger admits exactly what fits and names what is short', () => {
  const ledger = new ReservationLedger({ cpus: 4, memoryMiB: 4096, diskMiB: 100 })
  assert.deepEqual(ledger.reserve('a', { cpus: 3, memoryMiB: 1024, diskMiB: 10 }), { ok: true })
  const refused = ledger.reserve('b', { cpus: 2, memoryMiB: 4000, diskMiB: 10 })
  assert.equal(refused.ok, false)
  assert.ok(!refused.ok && refused.short.cpus === 1 && refused.short.memoryMiB === 928 && refused.short.diskMiB == null)
  ledger.release('a')
  assert.equal(ledger.reserve('b', { cpus: 2, memoryMiB: 4000, diskMiB: 10 }).ok, true)
})

test('every state allows delete or is transitional; exec only while running', () => {
  for (const state of vmStates) {
    const transitional = ['creating', 'starting', 'stopping', 'deleting'].includes(state)
    assert.equal(canDo('delete', state), !transitional, state)
    assert.equal(canDo('exec', state), state === 'running', state)
  }
})

test('a VM goes creating -> starting -> running, and events say so', async () => {
  const { host } = await makeHost()
  const seen: string[] = []
  host.addEventListener('vm', e => { seen.push((e as CustomEvent<VmEvent>).detail.vm.state) })
  const { vm, done } = await host.create({ image: 'sim-ubuntu-24.04', owner: 'alice' })
  assert.equal(vm.state, 'creating')
  assert.equal((await done).state, 'running')
  assert.deepEqual(seen, ['creating', 'starting', 'running'])
  assert.equal(host.get(vm.id).simulated, true)
})

test('illegal transitions are refused with the state named, and change nothing', async () => {
  const { host } = await makeHost()
  const { vm, done } = await host.create({ image: 'sim-ubuntu-24.04', owner: 'alice', start: false })
  await done
  await assert.rejects(host.act(vm.id, 'suspend'), (err: Error & { details: Record<string, unknown> }) => err.name === 'InvalidVmStateError' && err.details.state === 'stopped' && /while it is stopped/.test(err.message))
  await assert.rejects(host.exec(vm.id, { command: ['true'] }), { name: 'InvalidVmStateError' })
  assert.equal(host.get(vm.id).state, 'stopped')
})

test('a VM that does not fit is refused with what is short; delete frees its share', async () => {
  const { host } = await makeHost(new MemoryStore(), 4)
  const first = await host.create({ image: 'sim-ubuntu-24.04', cpus: 3, owner: 'a' })
  await first.done
  await assert.rejects(host.create({ image: 'sim-ubuntu-24.04', cpus: 2, owner: 'a' }), (err: Error & { details: { short: { cpus: number } } }) => err.name === 'InsufficientCapacityError' && err.details.short.cpus === 1)
  assert.equal(host.list().length, 1)
  await host.delete(first.vm.id)
  assert.equal(host.info().free.cpus, 4)
  await (await host.create({ image: 'sim-ubuntu-24.04', cpus: 2, owner: 'a' })).done
})

test('concurrent creates never over-commit the host', async () => {
  const { host } = await makeHost(new MemoryStore(), 8)
  const results = await Promise.allSettled(Array.from({ length: 20 }, async () => await host.create({ image: 'sim-ubuntu-24.04', cpus: 1, owner: 'a' })))
  assert.equal(results.filter(r => r.status === 'fulfilled').length, 8)
  assert.equal(host.info().allocated.cpus, 8)
})

test('after a restart, records are reconciled with what the hypervisor really has', async () => {
  const store = new MemoryStore()
  const { host, driver } = await makeHost(store)
  const kept = await host.create({ image: 'sim-ubuntu-24.04', owner: 'a' })
  const lost = await host.create({ image: 'sim-ubuntu-24.04', owner: 'a' })
  await Promise.all([kept.done, lost.done])
  await host.stop()
  // While the node is down the hypervisor loses one VM, and an interrupted create left an orphan.
  await store.delete('sim-vms', lost.vm.id)
  const [image] = await driver.listImages()
  await driver.create({ id: 'vm-orphan00000', name: 'orphan', image, cpus: 1, memoryMiB: 256 })

  const again = await makeHost(store)
  assert.equal(again.host.get(kept.vm.id).state, 'running')
  const gone = again.host.get(lost.vm.id)
  assert.equal(gone.state, 'failed')
  assert.match(gone.stateReason ?? '', /no longer has this VM/)
  assert.ok(!(await again.driver.list()).some(v => v.id === 'vm-orphan00000'), 'orphan removed')
  assert.equal(again.host.info().allocated.cpus, kept.vm.cpus + lost.vm.cpus, 'reservations restored until deleted')
  await again.host.delete(lost.vm.id)
})

test('a VM the driver reports exited is marked failed with the reason', async () => {
  const { host, driver } = await makeHost()
  const { vm, done } = await host.create({ image: 'sim-ubuntu-24.04', owner: 'a' })
  await done
  const failed = new Promise<VmEvent>(resolve => host.addEventListener('vm', e => { const d = (e as CustomEvent<VmEvent>).detail; if (d.vm.state === 'failed') resolve(d) }))
  driver.dispatchEvent(new CustomEvent('vm-exited', { detail: { id: vm.id, state: 'failed', reason: 'hypervisor process died' } }))
  const event = await failed
  assert.equal(event.vm.stateReason, 'hypervisor process died')
  await host.delete(vm.id)
})

test('exec timeouts above the node maximum are refused before running', async () => {
  const { host } = await makeHost()
  const { vm, done } = await host.create({ image: 'sim-ubuntu-24.04', owner: 'a' })
  await done
  await assert.rejects(host.exec(vm.id, { command: ['true'], timeoutSeconds: 61 }), { name: 'VmRequestError' })
  assert.equal((await host.exec(vm.id, { command: ['echo', 'hi'] })).stdout, 'hi\n')
})

test('two lifecycle actions on one VM at once: the second is refused, never interleaved', async () => {
  const store = new MemoryStore()
  const driver = createSimDriver({ logger, store }, { cpus: 8, memoryMiB: 16384, diskMiB: 1_000_000, arch: 'x86_64', labels: {}, timings: { ...timings, stopMs: 50 } })
  await driver.open()
  const images = new LocalImages({ driver, store, logger, clock: Date.now })
  const host = new HostAgent({ driver, store, images, logger, clock: Date.now }, { hostName: 'h1', execTimeoutSeconds: 30, maxExecTimeoutSeconds: 60 })
  await host.start()
  const { vm, done } = await host.create({ image: 'sim-ubuntu-24.04', owner: 'a' })
  await done
  const results = await Promise.allSettled([host.act(vm.id, 'suspend'), host.act(vm.id, 'stop')])
  assert.equal(results.filter(r => r.status === 'fulfilled').length, 1)
  const refused = results.find(r => r.status === 'rejected') as PromiseRejectedResult
  assert.equal(refused.reason.name, 'InvalidVmStateError')
  assert.match(refused.reason.message, /under way/)
})

test('a VM can be deleted the moment it is reported running', async () => {
  const { host } = await makeHost()
  for (let i = 0; i < 20; i++) {
    const { vm } = await host.create({ image: 'sim-ubuntu-24.04', owner: 'a' })
    // What a client polling GET sees: the first moment the record says running.
    await new Promise<void>(resolve => {
      const check = (): void => { if (host.get(vm.id).state === 'running') resolve(); else setImmediate(check) }
      check()
    })
    await host.delete(vm.id)
  }
  assert.equal(host.list().length, 0)
})
