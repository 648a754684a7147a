import { describe, test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import type { Driver, DriverImage } from '../../src/drivers/types.ts'

export interface ComplianceSetup {
  driver: Driver
  /** An image the driver can clone; its guest must answer echo, uname, false and sleep. */
  image: DriverImage
  /** A guest port that accepts TCP connections once the VM runs (e.g. 80). */
  port: number
  cleanup: () => Promise<void>
}

/**
 * Behaviour every driver owes the host agent, whatever the hypervisor. Each driver's test file calls
 * this with its own setup; the same assertions then hold for sim, qemu and (with fakes) parallels.
 */
export function driverCompliance (name: string, setup: () => Promise<ComplianceSetup>, options: { timeoutMs?: number } = {}): void {
  describe(`driver compliance: ${name}`, { timeout: options.timeoutMs ?? 600_000 }, () => {
    let s: ComplianceSetup
    const id = `vm-compliance${Math.floor(Math.random() * 1e6).toString(16)}`

    before(async () => { s = await setup() })
    after(async () => {
      await s?.driver.delete(id).catch(() => undefined)
      await s?.cleanup()
    })

    test('reports capacity with positive resources and its own name', async () => {
      const c = await s.driver.capacity()
      assert.ok(c.cpus > 0 && c.memoryMiB > 0 && c.diskMiB > 0)
      assert.equal(c.driver, s.driver.name)
      assert.equal(c.simulated, s.driver.simulated)
    })

    test('create makes a stopped VM that list() reports', async () => {
      const vm = await s.driver.create({ id, name: id, image: s.image, cpus: 1, memoryMiB: Math.min(256, s.image.defaultMemoryMiB) })
      assert.equal(vm.id, id)
      assert.equal(vm.state, 'stopped')
      assert.ok((await s.driver.list()).some(v => v.id === id && v.state === 'stopped'))
    })

    test('start runs it; exec returns output and exit codes', async () => {
      assert.equal((await s.driver.start(id)).state, 'running')
      const echoed: string[] = []
      const r = await s.driver.exec(id, { command: ['echo', 'hello corral'], timeoutMs: 60_000, onOutput: (_s, c) => echoed.push(Buffer.from(c).toString()) })
      assert.equal(r.exitCode, 0)
      assert.equal(r.stdout.trim(), 'hello corral')
      assert.equal(echoed.join('').trim(), 'hello corral')
      assert.equal((await s.driver.exec(id, { command: ['false'], timeoutMs: 60_000 })).exitCode, 1)
    })

    test('exec past its timeout fails with ExecTimeoutError', async () => {
      await assert.rejects(s.driver.exec(id, { command: ['sleep', '30'], timeoutMs: 1000 }), { name: 'ExecTimeoutError' })
    })

    test('forwardPort gives a loopback address that accepts connections, and reuses it', async () => {
      const f = await s.driver.forwardPort(id, s.port)
      assert.match(f.hostAddress, /^127\.|^::1$/)
      await new Promise<void>((resolve, reject) => {
        const socket = connect(f.hostPort, f.hostAddress, () => { socket.end(); resolve() })
        socket.once('error', reject)
      })
      assert.equal((await s.driver.forwardPort(id, s.port)).hostPort, f.hostPort)
    })

    test('suspend, resume, restart and stop move it through its states', async () => {
      assert.equal((await s.driver.suspend(id)).state, 'suspended')
      assert.equal((await s.driver.resume(id)).state, 'running')
      assert.equal((await s.driver.restart(id)).state, 'running')
      assert.equal((await s.driver.exec(id, { command: ['echo', 'after restart'], timeoutMs: 120_000 })).exitCode, 0)
      assert.equal((await s.driver.stop(id)).state, 'stopped')
    })

    test('delete removes it, and deleting again is harmless', async () => {
      await s.driver.delete(id)
      assert.ok(!(await s.driver.list()).some(v => v.id === id))
      await s.driver.delete(id)
    })

    test('operations on an unknown VM fail with VmNotFoundInDriverError', async () => {
      await assert.rejects(s.driver.start('vm-does-not-exist'), { name: 'VmNotFoundInDriverError' })
      await assert.rejects(s.driver.exec('vm-does-not-exist', { command: ['true'], timeoutMs: 1000 }), { name: 'VmNotFoundInDriverError' })
    })
  })
}
