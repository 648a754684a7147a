import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { pino, type Logger } from 'pino'

const run = promisify(execFile)
const repo = fileURLToPath(new URL('../../../', import.meta.url))

/** Whether this machine can run the real qemu tests (they run wherever qemu is installed). */
export async function qemuInstalled (): Promise<boolean> {
  try {
    await run('qemu-system-x86_64', ['--version'], { timeout: 15_000 })
    await run('qemu-img', ['--version'], { timeout: 15_000 })
    return true
  } catch {
    return false
  }
}

/** Builds the test guest with the project's script (a no-op when cached) and returns its folder. */
export async function buildTestGuest (): Promise<string> {
  const dir = process.env.CORRAL_TEST_GUEST_DIR ?? `${repo}.cache/test-guest`
  await run('bash', [`${repo}scripts/build-test-guest.sh`, dir], { timeout: 15 * 60_000, maxBuffer: 16 * 1024 * 1024 })
  return dir
}

export async function sha256File (path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** A pino logger whose JSON lines the test can read. */
export function capturingLogger (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      callback()
    }
  })
  return { logger: pino({ level: 'debug' }, stream), lines }
}

/** Kills every process whose command line mentions `marker` (the test's temp folder): only our qemus. */
export async function killProcessesMentioning (marker: string): Promise<number> {
  let killed = 0
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8')
      if (cmdline.includes(marker)) {
        process.kill(Number(entry), 'SIGKILL')
        killed++
      }
    } catch {}
  }
  return killed
}

export async function httpGet (port: number): Promise<{ status: number, body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(15_000) })
  return { status: response.status, body: await response.text() }
}
