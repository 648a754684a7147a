/**
 * bench/qemu-boot: how long the test guest takes from spawning qemu to answering exec, through the
 * qemu driver, under whatever accelerator the host really has. Also the linked clone and the stop.
 * Builds the test guest first (cached). Prints the median of a few runs; asserts nothing.
 *
 *   node bench/qemu-boot.ts [--runs 5] [--accelerator auto|kvm|hvf|tcg]
 */
import { execFile } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { pino } from 'pino'
import { createQemuDriver } from '../src/drivers/qemu/index.ts'
import type { AcceleratorSetting } from '../src/drivers/qemu/index.ts'

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, accelerator: { type: 'string', default: 'auto' } } })
const runs = Math.max(1, Math.min(50, Number(values.runs)))
const repo = new URL('../', import.meta.url).pathname
const guestDir = process.env.CORRAL_TEST_GUEST_DIR ?? join(repo, '.cache/test-guest')

process.stderr.write('building the test guest (cached)...\n')
await promisify(execFile)('bash', [join(repo, 'scripts/build-test-guest.sh'), guestDir], { timeout: 15 * 60_000 })

const dataDir = await mkdtemp(join(tmpdir(), 'corral-bench-qemu-'))
const driver = createQemuDriver({ logger: pino({ level: 'warn' }) }, {
  dataDir,
  imageDirs: [guestDir],
  accelerator: values.accelerator as AcceleratorSetting,
  bootTimeoutMs: 120_000
})
const median = (xs: number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

try {
  await driver.open()
  const capacity = await driver.capacity()
  const image = await driver.inspectImage('corral-test-guest', guestDir)
  const clone: number[] = []
  const ready: number[] = []
  const stop: number[] = []
  for (let i = 0; i < runs; i++) {
    const id = `bench-${i}`
    let t = performance.now()
    await driver.create({ id, name: id, image, cpus: image.defaultCpus, memoryMiB: image.defaultMemoryMiB })
    clone.push(performance.now() - t)
    t = performance.now()
    await driver.start(id)
    const result = await driver.exec(id, { command: ['true'], timeoutMs: 60_000 })
    if (result.exitCode !== 0) throw new Error(`exec true exited ${result.exitCode}`)
    ready.push(performance.now() - t)
    t = performance.now()
    await driver.stop(id)
    stop.push(performance.now() - t)
    await driver.delete(id)
    process.stderr.write(`run ${i + 1}/${runs}: spawn to exec-ready ${Math.round(ready[i])} ms\n`)
  }
  console.log(`qemu boot (${capacity.accelerator?.name}: ${capacity.accelerator?.reason})`)
  console.log(`  linked clone:         median ${median(clone).toFixed(1)} ms over ${runs} runs`)
  console.log(`  spawn to exec-ready:  median ${Math.round(median(ready))} ms (min ${Math.round(Math.min(...ready))}, max ${Math.round(Math.max(...ready))})`)
  console.log(`  ACPI stop:            median ${Math.round(median(stop))} ms`)
} finally {
  for (const vm of await driver.list()) await driver.delete(vm.id).catch(() => {})
  await driver.close()
  await rm(dataDir, { recursive: true, force: true })
}
