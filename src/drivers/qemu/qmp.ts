import { createConnection, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { HypervisorError } from '../errors.ts'
import { LineBuffer } from './lines.ts'

export interface QmpEvent {
  event: string
  data?: Record<string, unknown>
  timestamp?: { seconds: number, microseconds: number }
}

export interface QmpConnectOptions {
  /** Total time for the socket to appear, the greeting and capabilities negotiation. */
  timeoutMs: number
  signal?: AbortSignal
  onEvent?: (event: QmpEvent) => void
  /** Called once when the connection ends for any reason (qemu exited, close() was called). */
  onClose?: () => void
}

interface Pending {
  command: string
  resolve: (value: unknown) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * A QMP client on qemu's unix monitor socket: JSON lines, a greeting, `qmp_capabilities`, then
 * commands matched to answers by `id` and asynchronous events. qemu's socket chardev serves one
 * client at a time, so the driver keeps one connection per running VM.
 */
export class QmpClient {
  private readonly socket: Socket
  private readonly lines = new LineBuffer()
  private readonly pending = new Map<string, Pending>()
  private readonly onEvent?: (event: QmpEvent) => void
  private nextId = 1
  private isClosed = false

  private constructor (socket: Socket, options: QmpConnectOptions) {
    this.socket = socket
    this.onEvent = options.onEvent
    socket.on('data', chunk => { for (const line of this.lines.push(chunk)) this.handleLine(line) })
    socket.on('error', () => {}) // 'close' follows and carries the consequence
    socket.on('close', () => {
      this.isClosed = true
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer)
        p.reject(new HypervisorError(`the QMP connection closed before qemu answered ${p.command}; the qemu process has probably exited`, { command: p.command }))
        this.pending.delete(id)
      }
      options.onClose?.()
    })
  }

  /** Connects, retrying while the socket does not exist yet or refuses (qemu still starting). */
  static async connect (path: string, options: QmpConnectOptions): Promise<QmpClient> {
    const deadline = Date.now() + options.timeoutMs
    let lastError: Error | undefined
    for (let attempt = 0; Date.now() < deadline; attempt++) {
      options.signal?.throwIfAborted()
      try {
        return await QmpClient.handshake(path, options, deadline)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw err
        lastError = err as Error
        await sleep(Math.min(20 * (attempt + 1), 200))
      }
    }
    throw new HypervisorError(`could not connect to qemu's QMP socket ${path} within ${options.timeoutMs} ms: ${lastError?.message ?? 'timed out'}`, { path })
  }

  private static async handshake (path: string, options: QmpConnectOptions, deadline: number): Promise<QmpClient> {
    const socket = createConnection(path)
    return await new Promise<QmpClient>((resolve, reject) => {
      const lines = new LineBuffer()
      const fail = (err: Error): void => {
        clearTimeout(timer)
        socket.destroy()
        reject(err)
      }
      const timer = setTimeout(() => fail(new HypervisorError(`qemu sent no QMP greeting on ${path} within the time allowed; another client (a second corral driver on the same data folder?) may be holding the monitor`, { path })), Math.max(0, deadline - Date.now()))
      socket.once('error', fail)
      const onData = (chunk: Buffer): void => {
        const [line] = lines.push(chunk)
        if (line == null) return
        socket.off('data', onData)
        socket.off('error', fail)
        clearTimeout(timer)
        let greeting: unknown
        try {
          greeting = JSON.parse(line.toString('utf8'))
        } catch {}
        if (typeof greeting !== 'object' || greeting == null || !('QMP' in greeting)) {
          fail(new HypervisorError(`${path} did not greet like a QMP monitor: ${line.toString('utf8').slice(0, 200)}`, { path }))
          return
        }
        const client = new QmpClient(socket, options)
        const remaining = Math.max(1, deadline - Date.now())
        client.execute('qmp_capabilities', undefined, remaining).then(() => resolve(client), (err: Error) => {
          client.close()
          reject(err)
        })
      }
      socket.on('data', onData)
    })
  }

  get closed (): boolean {
    return this.isClosed
  }

  /** Runs a QMP command; rejects with HypervisorError carrying qemu's own words on an error answer. */
  async execute<T = unknown> (command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.isClosed) throw new HypervisorError(`cannot send ${command}: the QMP connection is closed (the qemu process has probably exited)`, { command })
    const id = `corral-${this.nextId++}`
    const message = args == null ? { execute: command, id } : { execute: command, arguments: args, id }
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new HypervisorError(`qemu did not answer ${command} within ${timeoutMs} ms`, { command }))
      }, timeoutMs)
      this.pending.set(id, { command, resolve: resolve as (value: unknown) => void, reject, timer })
      this.socket.write(JSON.stringify(message) + '\n')
    })
  }

  close (): void {
    this.socket.destroy()
  }

  private handleLine (line: Buffer): void {
    if (line.length === 0) return
    let message: Record<string, unknown>
    try {
      message = JSON.parse(line.toString('utf8')) as Record<string, unknown>
    } catch {
      return
    }
    if (typeof message.event === 'string') {
      this.onEvent?.(message as unknown as QmpEvent)
      return
    }
    const id = typeof message.id === 'string' ? message.id : undefined
    const pending = id == null ? undefined : this.pending.get(id)
    if (id == null || pending == null) return
    this.pending.delete(id)
    clearTimeout(pending.timer)
    if ('error' in message) {
      const error = message.error as { class?: string, desc?: string }
      pending.reject(new HypervisorError(`qemu refused ${pending.command}: ${error.desc ?? 'unknown error'}`, { command: pending.command, class: error.class }))
    } else {
      pending.resolve(message.return)
    }
  }
}
