/**
 * bench/vm-lifecycle (sim): create+delete cycles per second through the API of a real `corral node`
 * process with sim timings at zero, and the API's own overhead per call. Prints figures; asserts nothing.
 *
 *   npm run bench:vm-lifecycle -- [--cycles 2000] [--concurrency 8]
 */
import { parseArgs } from 'node:util'
import { startNodeProcess, call, ADMIN_PASSWORD } from '../test/helpers/node-process.ts'

const { values } = parseArgs({ options: { cycles: { type: 'string', default: '2000' }, concurrency: { type: 'string', default: '8' }, calls: { type: 'string', default: '2000' } } })
const cycles = Number(values.cycles)
const concurrency = Number(values.concurrency)
const calls = Number(values.calls)

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
    if (deleted.status !== 204) throw new Error(`delete answered ${deleted.status}`)
  }

  async function timedCycles (n: number, parallel: number): Promise<number> {
    let next = 0
    const started = performance.now()
    await Promise.all(Array.from({ length: parallel }, async () => { while (next++ < n) await cycle() }))
    return n / ((performance.now() - started) / 1000)
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
  console.log(`create+delete cycles/s, sequential: ${(await timedCycles(cycles, 1)).toFixed(0)}`)
  console.log(`create+delete cycles/s, ${concurrency} concurrent clients: ${(await timedCycles(cycles, concurrency)).toFixed(0)}`)

  const vm = (await call(node.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'sim-ubuntu-24.04' } })).body as { id: string }
  await latency('GET /health (no auth, no handler work)', async () => await call(node.url, 'GET', '/health'))
  await latency('GET /api/v1/vms/{id} (auth + validation + lookup)', async () => await call(node.url, 'GET', `/api/v1/vms/${vm.id}`, { token }))
  await latency('POST /api/v1/vms/{id}/exec of "true" (sim exec 0 ms)', async () => await call(node.url, 'POST', `/api/v1/vms/${vm.id}/exec`, { token, body: { command: ['true'] } }))
} finally {
  await node.destroy()
}
