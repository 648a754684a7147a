import { spawn, type ChildProcess } from 'node:child_process'
import { connect, type Socket } from 'node:net'
import { corralBin } from './node-process.ts'

export interface PortForwardProcess {
  child: ChildProcess
  /** The local port it listens on. */
  port: number
  stderr: () => string
  stop: () => Promise<void>
}

/** Runs `corral port-forward VM :REMOTE` against a node and waits (bounded) for its listening line. */
export async function startPortForward (server: string, token: string, vm: string, remote: number): Promise<PortForwardProcess> {
  const child = spawn(process.execPath, [corralBin, '--server', server, '--token', token, 'port-forward', vm, `:${remote}`], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', CORRAL_CONFIG_DIR: '/nonexistent' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stderr?.on('data', (c: Buffer) => { stderr += c.toString() })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`corral port-forward did not listen within 20 s; stderr: ${stderr}`)) }, 20_000)
    child.stdout?.on('data', (c: Buffer) => {
      stdout += c.toString()
      const match = /Forwarding from 127\.0\.0\.1:(\d+) ->/.exec(stdout)
      if (match != null) { clearTimeout(timer); resolve(Number(match[1])) }
    })
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`corral port-forward exited with ${code}: ${stderr}`)) })
  })
  return {
    child,
    port,
    stderr: () => stderr,
    stop: async () => {
      if (child.exitCode != null || child.signalCode != null) return
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
  }
}

/** A TCP client that reads what arrives into a buffer and can wait (bounded) for a condition on it. */
export class RawClient {
  readonly socket: Socket
  received = Buffer.alloc(0)
  private readonly waiters = new Set<() => void>()
  ended = false

  private constructor (socket: Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk])
      for (const wake of this.waiters) wake()
    })
    socket.on('end', () => { this.ended = true; for (const wake of this.waiters) wake() })
    socket.on('close', () => { this.ended = true; for (const wake of this.waiters) wake() })
    socket.on('error', () => undefined)
  }

  static async connect (port: number, host = '127.0.0.1'): Promise<RawClient> {
    const socket = connect({ port, host, allowHalfOpen: true })
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    return new RawClient(socket)
  }

  /** Resolves once `check` holds on what was received; rejects after timeoutMs or if the connection ends first. */
  async until (what: string, check: (received: Buffer) => boolean, timeoutMs = 30_000): Promise<Buffer> {
    if (check(this.received)) return this.received
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiters.delete(wake); reject(new Error(`${what}: not within ${timeoutMs} ms; got ${JSON.stringify(this.received.subarray(0, 200).toString('latin1'))}`)) }, timeoutMs)
      const wake = (): void => {
        if (check(this.received)) {
          clearTimeout(timer)
          this.waiters.delete(wake)
          resolve(this.received)
        } else if (this.ended) {
          clearTimeout(timer)
          this.waiters.delete(wake)
          reject(new Error(`${what}: the connection ended first; got ${JSON.stringify(this.received.subarray(0, 200).toString('latin1'))}`))
        }
      }
      this.waiters.add(wake)
    })
  }
}
