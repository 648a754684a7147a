import { readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Whether `pid` is a live qemu of ours. qemu daemonizes, so the node is not its parent and cannot wait
 * for it: liveness is kill(pid, 0), minus zombies, plus (where /proc exists) a check that the process
 * still has our VM folder on its command line, so a recycled pid is not mistaken for the VM.
 */
export async function isQemuAlive (pid: number | undefined, marker: string): Promise<boolean> {
  if (pid == null || !Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  if (process.platform !== 'linux') return true
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
    // The state follows the parenthesised command name, which may itself hold spaces or parentheses.
    if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z') return false
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8')
    return cmdline.includes(marker)
  } catch {
    return false
  }
}

/** Polls until the process is gone or the time is up; true if it exited. */
export async function waitForExit (pid: number, marker: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!await isQemuAlive(pid, marker)) return true
    await sleep(50)
  }
  return !await isQemuAlive(pid, marker)
}

export async function readPidFile (path: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt((await readFile(path, 'utf8')).trim(), 10)
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

export function killQuietly (pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {}
}

/** A TCP port free on 127.0.0.1 right now (the kernel picks it). */
export async function freeLoopbackPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const address = server.address()
  await new Promise<void>(resolve => server.close(() => resolve()))
  if (address == null || typeof address === 'string') throw new Error('the kernel gave no loopback port')
  return address.port
}
