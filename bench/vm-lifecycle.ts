/**
 * bench/vm-lifecycle: what a VM's life costs through the API of a real `corral node` process.
 *   --driver sim (default): create+delete cycles per second with sim timings at zero, and the API's
 *     own overhead per call.
 *   --driver qemu: POST /api/v1/vms to exec-ready for the test guest, split into the hypervisor's part
 *     (a direct qemu boot of the same image, same command line, measured in the same run) and corral's
 *     own overhead.
 * Prints figures; asserts nothing.
 *
 *   npm run bench:vm-lifecycle -- [--driver sim|qemu] [--cycles 2000] [--concurrency 8] [--runs 7]
 */
import { parseArgs } from 'node:util'
import { startNodeProcess, call, ADMIN_PASSWORD } from '../test/helpers/node-process.ts'
import { cpuSeconds, machineLoad } from './proc-stats.ts'

const { values } = parseArgs({ options: { driver: { type: 'string', default: 'sim' }, runs: { type: 'string', default: '7' }, cycles: { type: 'string', default: '2000' }, concurrency: { type: 'string', default: '8' }, calls: { type: 'string', default: '2000' } } })
const cycles = Number(values.cycles)
const concurrency = Number(values.concurrency)
const calls = Number(values.calls)

if (values.driver === 'qemu') {
  await benchQemu(Math.max(1, Math.min(50, Number(values.runs))))
  process.exit(0)
}

const node = await startNodeProcess({
  CORRAL_LOG_LEVEL: 'warn',
  CORRAL_SIM_TIMINGS_CREATE_MS: '0',
  CORRAL_SIM_TIMINGS_START_MS: '0',
  CORRAL_SIM_TIMINGS_STOP_MS: '0',
  CORRAL_SIM_TIMINGS_DELETE_MS: '0',
  CORRAL_SIM_TIMINGS_EXEC_MS: '0',
  CORRAL_SIM_CPUS: '4096',
  CORRAL_SIM_MEMORY_MI_B: '16777216',
  CORRAL_SIM_DISK_MI_B: '1073741824'
})
try {
  const token = (await call(node.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token as string

  async function cycle (): Promise<void> {
    const created = await call(node.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04', cpus: 1, memoryMiB: 256 } })
    if (created.status !== 201 || created.body.state !== 'running') throw new Error(`create answered ${created.status}: ${JSON.stringify(created.body)}`)
    const deleted = await call(node.url, 'DELETE', `/api/v1/vms/${created.body.id as string}`, { token })
    if (deleted.status !== 204) throw new Error(`delete answered ${deleted.status}: ${JSON.stringify(deleted.body)}`)
  }

  /** Cycles per second, and the node's CPU milliseconds per cycle (steady whatever the machine's load). */
  async function timedCycles (n: number, parallel: number): Promise<string> {
    let next = 0
    const cpuBefore = cpuSeconds(node.child.pid as number)
    const started = performance.now()
    await Promise.all(Array.from({ length: parallel }, async () => { while (next++ < n) await cycle() }))
    const rate = n / ((performance.now() - started) / 1000)
    const cpuMs = (cpuSeconds(node.child.pid as number) - cpuBefore) * 1000 / n
    return `${rate.toFixed(0)} (node CPU ${cpuMs.toFixed(2)} ms per cycle, so at most ~${(1000 / cpuMs).toFixed(0)}/s on one core)`
  }

  async function latency (label: string, fn: () => Promise<unknown>): Promise<void> {
    const samples: number[] = []
    for (let i = 0; i < calls; i++) {
      const t = performance.now()
      await fn()
      samples.push(performance.now() - t)
    }
    samples.sort((a, b) => a - b)
    const q = (p: number): string => samples[Math.floor(p * (samples.length - 1))].toFixed(3)
    console.log(`${label}: median ${q(0.5)} ms, p99 ${q(0.99)} ms over ${calls} calls`)
  }

  await timedCycles(Math.min(200, cycles), concurrency) // warm-up
  console.log(machineLoad())
  console.log(`create+delete cycles/s, sequential: ${await timedCycles(cycles, 1)}`)
  console.log(`create+delete cycles/s, ${concurrency} concurrent clients: ${await timedCycles(cycles, concurrency)}`)

  const vm = (await call(node.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04' } })).body as { id: string }
  await latency('GET /health (no auth, no handler work)', async () => await call(node.url, 'GET', '/health'))
  await latency('GET /api/v1/vms/{id} (auth + validation + lookup)', async () => await call(node.url, 'GET', `/api/v1/vms/${vm.id}`, { token }))
  await latency('POST /api/v1/vms/{id}/exec of "true" (sim exec 0 ms)', async () => await call(node.url, 'POST', `/api/v1/vms/${vm.id}/exec`, { token, body: { command: ['true'] } }))
} finally {
  await node.destroy()
}

async function benchQemu (runs: number): Promise<void> {
  const { buildTestGuest } = await import('../test/drivers/qemu/helpers.ts')
  const { directBoot } = await import('./qemu-direct.ts')
  const guestDir = await buildTestGuest()
  const qnode = await startNodeProcess({ CORRAL_DRIVER: 'qemu', CORRAL_QEMU_IMAGE_DIRS: guestDir, CORRAL_LOG_LEVEL: 'warn' })
  const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = Math.floor(s.length / 2); return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2 }
  try {
    const token = (await call(qnode.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token as string
    const hosts = await call(qnode.url, 'GET', '/api/v1/hosts', { token })
    const accel = hosts.body.items[0].capacity.accelerator as { name: 'kvm' | 'hvf' | 'tcg', reason: string }
    const api: number[] = []
    const direct: number[] = []
    for (let i = 0; i < runs; i++) {
      // Alternate the two so load from elsewhere on the machine hits both alike.
      direct.push(await directBoot(guestDir, accel.name))
      const t = performance.now()
      const created = await call(qnode.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'corral-test-guest' } })
      if (created.body.state !== 'running') throw new Error(`VM did not boot: ${JSON.stringify(created.body)}`)
      const exec = await call(qnode.url, 'POST', `/api/v1/vms/${created.body.id as string}/exec`, { token, body: { command: ['true'] } })
      if (exec.body.exitCode !== 0) throw new Error('exec true failed')
      api.push(performance.now() - t)
      await call(qnode.url, 'DELETE', `/api/v1/vms/${created.body.id as string}`, { token })
      process.stderr.write(`run ${i + 1}/${runs}: API ${Math.round(api[i])} ms, direct ${Math.round(direct[i])} ms\n`)
    }
    console.log(`qemu (${accel.name}: ${accel.reason})`)
    console.log(`POST /api/v1/vms to exec-ready: median ${Math.round(median(api))} ms over ${runs} runs`)
    console.log(`direct qemu boot of the same image to agent answer: median ${Math.round(median(direct))} ms`)
    console.log(`corral's own overhead (difference of medians): ${Math.round(median(api) - median(direct))} ms`)
  } finally {
    await qnode.stop()
    const { killProcessesMentioning } = await import('../test/drivers/qemu/helpers.ts')
    await killProcessesMentioning(qnode.dataDir)
    await qnode.destroy()
  }
}
