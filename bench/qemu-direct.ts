import { execFile } from 'node:child_process'
import { connect } from 'node:net'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { buildQemuArgv, qemuBinaryFor } from '../src/drivers/qemu/argv.ts'
import type { AcceleratorName } from '../src/drivers/qemu/accelerator.ts'

const run = promisify(execFile)

/**
 * The hypervisor's own part of a boot, without corral: a linked clone made with qemu-img, qemu
 * started with the same command line the driver uses, and the guest agent polled with guest-sync
 * on its socket until it answers. Returns milliseconds from the clone to the agent's first answer.
 */
export async function directBoot (guestDir: string, accelerator: AcceleratorName): Promise<number> {
  const manifest = JSON.parse(await readFile(join(guestDir, 'image.json'), 'utf8')) as { kernel: string, initrd: string, cmdline: string, disk: string, defaultCpus: number, defaultMemoryMiB: number }
  const dir = await mkdtemp(join(tmpdir(), 'qd-'))
  const started = performance.now()
  let pid: number | undefined
  try {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(guestDir, manifest.disk), '-F', 'qcow2', join(dir, 'overlay.qcow2')])
    const argv = buildQemuArgv({
      vmId: 'direct', arch: 'x86_64', accelerator, cpus: manifest.defaultCpus, memoryMiB: manifest.defaultMemoryMiB,
      overlayPath: join(dir, 'overlay.qcow2'), kernelPath: join(guestDir, manifest.kernel), initrdPath: join(guestDir, manifest.initrd), cmdline: manifest.cmdline,
      forwards: [], qmpSocket: join(dir, 'qmp.sock'), agentSocket: join(dir, 'qga.sock'), consoleLog: join(dir, 'console.log'), pidFile: join(dir, 'qemu.pid')
    })
    await run(qemuBinaryFor('x86_64'), argv)
    pid = Number((await readFile(join(dir, 'qemu.pid'), 'utf8')).trim())
    await agentAnswers(join(dir, 'qga.sock'), 120_000)
    return performance.now() - started
  } finally {
    if (pid != null) try { process.kill(pid, 'SIGKILL') } catch {}
    await rm(dir, { recursive: true, force: true })
  }
}

/** Sends guest-sync every 50 ms on one connection (a virtio-serial port opens once) until answered. */
async function agentAnswers (socketPath: string, timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const socket = connect(socketPath)
    let buffer = ''
    const deadline = setTimeout(() => { cleanup(); reject(new Error('guest agent did not answer')) }, timeoutMs)
    const ping = setInterval(() => socket.write('{"execute":"guest-sync","arguments":{"id":4242}}\n'), 50)
    const cleanup = (): void => { clearTimeout(deadline); clearInterval(ping); socket.destroy() }
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString()
      if (buffer.includes('"return": 4242') || buffer.includes('"return":4242')) { cleanup(); resolve() }
    })
    socket.on('error', (err) => { cleanup(); reject(err) })
  })
}
