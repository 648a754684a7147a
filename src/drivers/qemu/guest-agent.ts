import { createConnection, type Socket } from 'node:net'
import { randomInt } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { ExecTimeoutError, GuestAgentCommandError, GuestAgentUnavailableError } from '../errors.ts'
import { LineBuffer } from './lines.ts'

/** guest-sync-delimited makes qemu-ga send this byte before its answer; it never occurs in UTF-8 JSON. */
const DELIMITER = 0xff

export interface GuestExecSpec {
  path: string
  args: string[]
  /** `NAME=value` entries; qemu-ga replaces the whole environment of the command with them. */
  env?: string[]
  timeoutMs: number
  signal?: AbortSignal
  /** The command that kills a guest pid when exec times out or is aborted (OS-specific), if any. */
  killCommand?: (pid: number) => { path: string, args: string[] }
}

export interface GuestExecResult {
  exitCode: number
  stdout: Buffer
  stderr: Buffer
  /** qemu-ga keeps at most 16 MiB of each stream; true when it dropped the rest. */
  truncated: boolean
}

interface Waiter {
  accepts: (message: Record<string, unknown>) => boolean
  resolve: (message: Record<string, unknown>) => void
  reject: (err: Error) => void
}

interface ExecStatus {
  exited: boolean
  exitcode?: number
  signal?: number
  'out-data'?: string
  'err-data'?: string
  'out-truncated'?: boolean
  'err-truncated'?: boolean
}

/**
 * A client for the QEMU guest agent protocol (qemu-ga on Linux and Windows) over the unix socket
 * behind the VM's virtio-serial port. The agent answers one request at a time, in order, and without
 * ids, so requests are queued here; after anything goes wrong (a timeout, a guest reboot) the stream
 * is resynchronised with guest-sync-delimited before the next request. The guest opens its port once
 * and a second host connection would only queue, so the driver keeps one client per VM.
 */
export class GuestAgentClient {
  private readonly socketPath: string
  private socket?: Socket
  private readonly lines = new LineBuffer()
  /** Until the delimiter byte arrives, everything is left over from an earlier exchange. */
  private discarding = true
  private synced = false
  private waiter?: Waiter
  private queue: Promise<unknown> = Promise.resolve()
  private closed = false

  constructor (socketPath: string) {
    this.socketPath = socketPath
  }

  /** Waits until the agent answers (the guest may still be booting), bounded by timeoutMs. */
  async waitReady (timeoutMs: number, signal?: AbortSignal): Promise<void> {
    await this.enqueue(async () => {
      const deadline = Date.now() + timeoutMs
      let lastError: Error | undefined
      // Only the latest sync's answer counts, so each try waits longer: a slow agent still gets through.
      let attemptMs = 500
      while (Date.now() < deadline) {
        signal?.throwIfAborted()
        try {
          await this.sync(Math.min(attemptMs, Math.max(1, deadline - Date.now())))
          return
        } catch (err) {
          if (this.closed) throw err
          lastError = err as Error
          attemptMs = Math.min(attemptMs * 2, 8000)
          // A refused connection (qemu still starting) fails at once; do not spin.
          if (this.socket == null) await sleep(100, undefined, { signal })
        }
      }
      throw new GuestAgentUnavailableError(`the guest agent did not answer within ${timeoutMs} ms: ${lastError?.message ?? 'no answer'}. Check that the guest runs qemu-guest-agent on the virtio-serial port org.qemu.guest_agent.0`, { socket: this.socketPath })
    })
  }

  /** Runs one agent command; its answer's `return` value, or GuestAgentCommandError. */
  async request<T = unknown> (command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    return await this.enqueue(async () => {
      if (!this.synced) await this.sync(timeoutMs)
      const answer = await this.exchange(JSON.stringify(args == null ? { execute: command } : { execute: command, arguments: args }), () => true, timeoutMs, command)
      if ('error' in answer) {
        const error = answer.error as { class?: string, desc?: string }
        throw new GuestAgentCommandError(`the guest agent refused ${command}: ${error.desc ?? 'unknown error'}`, { command, class: error.class })
      }
      return answer.return as T
    })
  }

  /**
   * guest-exec with captured output, then guest-exec-status until it exits. qemu-ga hands output over
   * only once the command has exited, so there is no streaming. A signal-killed command reports
   * 128 + the signal number, like a shell.
   */
  async exec (spec: GuestExecSpec): Promise<GuestExecResult> {
    const deadline = Date.now() + spec.timeoutMs
    const remaining = (): number => Math.max(1, deadline - Date.now())
    const started = await this.request<{ pid: number }>('guest-exec', {
      path: spec.path,
      arg: spec.args,
      ...(spec.env != null ? { env: spec.env } : {}),
      'capture-output': true
    }, Math.min(10_000, remaining()))
    const pid = started.pid
    let delay = 10
    while (true) {
      if (spec.signal?.aborted === true) {
        await this.killQuietly(pid, spec)
        throw spec.signal.reason
      }
      if (Date.now() >= deadline) {
        await this.killQuietly(pid, spec)
        throw new ExecTimeoutError(`"${[spec.path, ...spec.args].join(' ')}" did not finish within ${spec.timeoutMs} ms and was killed (guest pid ${pid}); raise the timeout if it needs longer`, { pid, timeoutMs: spec.timeoutMs })
      }
      const status = await this.request<ExecStatus>('guest-exec-status', { pid }, 10_000)
      if (status.exited) {
        return {
          exitCode: status.exitcode ?? (status.signal != null ? 128 + status.signal : -1),
          stdout: Buffer.from(status['out-data'] ?? '', 'base64'),
          stderr: Buffer.from(status['err-data'] ?? '', 'base64'),
          truncated: status['out-truncated'] === true || status['err-truncated'] === true
        }
      }
      await sleep(Math.min(delay, remaining()), undefined, { signal: spec.signal }).catch(() => {})
      delay = Math.min(Math.round(delay * 1.5), 250)
    }
  }

  /** The guest rebooted or the stream may hold stale answers: resynchronise before the next request. */
  invalidate (): void {
    this.synced = false
  }

  close (): void {
    this.closed = true
    this.socket?.destroy()
    this.socket = undefined
  }

  private async killQuietly (pid: number, spec: GuestExecSpec): Promise<void> {
    if (spec.killCommand == null) return
    const kill = spec.killCommand(pid)
    try {
      await this.request('guest-exec', { path: kill.path, arg: kill.args }, 5000)
      // Reap the killed command so qemu-ga forgets it; bounded, and failure does not matter.
      for (let i = 0; i < 20; i++) {
        const status = await this.request<ExecStatus>('guest-exec-status', { pid }, 2000)
        if (status.exited) break
        await sleep(100)
      }
    } catch {}
  }

  private async enqueue<T> (work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work)
    this.queue = run.catch(() => {})
    return await run
  }

  private async sync (timeoutMs: number): Promise<void> {
    const id = randomInt(1, 2 ** 31)
    // A leading 0xFF makes qemu-ga drop any half-read request; its answers until the delimiter are skipped.
    this.discarding = true
    this.lines.clear()
    await this.exchange(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }), m => m.return === id, timeoutMs, 'guest-sync-delimited', true)
    this.synced = true
  }

  private async exchange (payload: string, accepts: Waiter['accepts'], timeoutMs: number, command: string, delimited = false): Promise<Record<string, unknown>> {
    const socket = await this.connect()
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined
        this.synced = false
        reject(new GuestAgentUnavailableError(`the guest agent did not answer ${command} within ${timeoutMs} ms`, { command }))
      }, timeoutMs)
      this.waiter = {
        accepts,
        resolve: message => { clearTimeout(timer); this.waiter = undefined; resolve(message) },
        reject: err => { clearTimeout(timer); this.waiter = undefined; reject(err) }
      }
      socket.write(delimited ? Buffer.concat([Buffer.from([DELIMITER]), Buffer.from(payload + '\n')]) : payload + '\n')
    })
  }

  private async connect (): Promise<Socket> {
    if (this.closed) throw new GuestAgentUnavailableError('the guest agent connection was closed by the driver', { socket: this.socketPath })
    if (this.socket != null) return this.socket
    const socket = createConnection(this.socketPath)
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', err => reject(new GuestAgentUnavailableError(`cannot reach the guest agent socket ${this.socketPath}: ${err.message}`, { socket: this.socketPath })))
    })
    socket.on('data', chunk => this.onData(chunk))
    socket.on('error', () => {})
    socket.on('close', () => {
      if (this.socket === socket) this.socket = undefined
      this.synced = false
      this.waiter?.reject(new GuestAgentUnavailableError('the guest agent connection closed (the VM stopped or qemu exited)', { socket: this.socketPath }))
    })
    this.socket = socket
    this.synced = false
    return socket
  }

  private onData (chunk: Buffer): void {
    let data = chunk
    if (this.discarding) {
      const at = data.indexOf(DELIMITER)
      if (at === -1) return
      data = data.subarray(at + 1)
      this.discarding = false
    }
    if (data.includes(DELIMITER)) data = Buffer.from(data.filter(b => b !== DELIMITER))
    for (const line of this.lines.push(data)) {
      if (line.length === 0) continue
      let message: unknown
      try {
        message = JSON.parse(line.toString('utf8'))
      } catch {
        continue
      }
      if (typeof message !== 'object' || message == null) continue
      const waiter = this.waiter
      // Answers nobody waits for are left over from a request that timed out: drop them.
      if (waiter != null && waiter.accepts(message as Record<string, unknown>)) waiter.resolve(message as Record<string, unknown>)
    }
  }
}
