/** The shared driver compliance suite against real qemu and the test guest (TCG where KVM is not real). */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe } from 'node:test'
import { pino } from 'pino'
import { createQemuDriver } from '../../../src/drivers/qemu/index.ts'
import { driverCompliance } from '../compliance.ts'
import { buildTestGuest, killProcessesMentioning, qemuInstalled } from './helpers.ts'

if (await qemuInstalled()) {
  driverCompliance('qemu', async () => {
    const guestDir = await buildTestGuest()
    const dataDir = await mkdtemp(join(tmpdir(), 'corral-qemu-compliance-'))
    const driver = createQemuDriver({ logger: pino({ level: 'silent' }) }, { dataDir, imageDirs: [guestDir], bootTimeoutMs: 120_000, stopTimeoutMs: 30_000 })
    await driver.open()
    const image = await driver.inspectImage('corral-test-guest', guestDir)
    return {
      driver,
      image,
      port: 80,
      cleanup: async () => {
        await driver.close()
        await killProcessesMentioning(dataDir)
        await rm(dataDir, { recursive: true, force: true })
      }
    }
  })
} else {
  describe('driver compliance: qemu', { skip: 'qemu-system-x86_64 and qemu-img are not installed (apt-get install qemu-system-x86 qemu-utils)' }, () => {})
}
