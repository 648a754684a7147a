/**
 * bench/mesh-idle-memory: resident memory of an idle `corral node` process (sim driver, mesh on,
 * one peer joined), read from /proc after it settles. Prints; asserts nothing.
 *
 *   node bench/mesh-idle-memory.ts [--settle-seconds 15]
 */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { startNodeProcess, call, ADMIN_PASSWORD } from '../test/helpers/node-process.ts'

const { values } = parseArgs({ options: { 'settle-seconds': { type: 'string', default: '15' } } })
const settleMs = Math.max(1, Math.min(300, Number(values['settle-seconds']))) * 1000

const rssMiB = async (pid: number): Promise<number> => {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024
}

const first = await startNodeProcess({ CORRAL_LOG_LEVEL: 'warn' })
const token = (await call(first.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token as string
const join = (await call(first.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token as string
const second = await startNodeProcess({ CORRAL_LOG_LEVEL: 'warn', CORRAL_JOIN_TOKEN: join, CORRAL_ADMIN_PASSWORD: '' })
try {
  await new Promise(resolve => setTimeout(resolve, settleMs))
  const a = await rssMiB(first.child.pid as number)
  const b = await rssMiB(second.child.pid as number)
  console.log(`idle corral node resident memory after ${settleMs / 1000} s in a 2-node mesh: ${a.toFixed(1)} MiB and ${b.toFixed(1)} MiB`)
} finally {
  await second.destroy()
  await first.destroy()
}
