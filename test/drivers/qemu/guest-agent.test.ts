import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GuestAgentClient } from '../../../src/drivers/qemu/guest-agent.ts'

interface FakeProcess { polls: number, exit: Record<string, unknown> }

/**
 * A fake qemu-ga that behaves like the real one on the wire: 0xFF makes it answer a parse error,
 * guest-sync-delimited answers 0xFF + the id, answers are written a byte at a time.
 */
class FakeAgent {
  server!: Server
  received: Array<Record<string, any>> = []
  /** Syncs to ignore before answering (a guest still booting). */
  ignoreSyncs = 0
  /** Delay, in ms, of the answer to the next guest-exec-status (a stalled agent). */
  stallNextStatusMs = 0
  processes = new Map<number, FakeProcess>()
  private nextPid = 100

  async listen (path: string): Promise<void> {
    this.server = createServer(socket => this.serve(socket))
    await new Promise<void>(resolve => this.server.listen(path, resolve))
  }

  close (): void { this.server.close() }

  spawnResult (exit: Record<string, unknown>, polls = 1): void {
    this.pendingExit = { polls, exit }
  }

  private pendingExit: FakeProcess = { polls: 0, exit: { exitcode: 0 } }

  private serve (socket: Socket): void {
    socket.on('error', () => {})
    const write = (bytes: Buffer): void => { for (const b of bytes) socket.write(Buffer.from([b])) }
    const answer = (value: unknown): void => write(Buffer.from(JSON.stringify(value) + '\n'))
    let pending = Buffer.alloc(0)
    // Like the real agent, one request at a time: a stalled answer holds back everything after it.
    let queue = Promise.resolve()
    const later = (work: () => void | Promise<void>): void => { queue = queue.then(work) }
    socket.on('data', chunk => {
      pending = Buffer.concat([pending, chunk])
      while (true) {
        if (pending[0] === 0xff) {
          pending = pending.subarray(1)
          later(() => answer({ error: { class: 'GenericError', desc: "JSON parse error, stray '\\xff'" } }))
          continue
        }
        const newline = pending.indexOf(0x0a)
        if (newline === -1) break
        const message = JSON.parse(pending.subarray(0, newline).toString()) as Record<string, any>
        pending = pending.subarray(newline + 1)
        this.received.push(message)
        later(async () => await this.handle(message, answer, write))
      }
    })
  }

  private async handle (message: Record<string, any>, answer: (value: unknown) => void, write: (bytes: Buffer) => void): Promise<void> {
    const args = message.arguments ?? {}
    switch (message.execute) {
      case 'guest-sync-delimited':
        if (this.ignoreSyncs > 0) { this.ignoreSyncs--; return }
        write(Buffer.from([0xff]))
        answer({ return: args.id })
        return
      case 'guest-exec': {
        if (args.path === 'missing') { answer({ error: { class: 'GenericError', desc: 'Guest agent command failed, error was \'Failed to execute child process “missing” (No such file or directory)\'' } }); return }
        if (args.path === 'kill') {
          const target = this.processes.get(Number(args.arg.at(-1)))
          if (target != null) { target.polls = 0; target.exit = { signal: 9 } }
        }
        const pid = this.nextPid++
        this.processes.set(pid, { ...this.pendingExit })
        answer({ return: { pid } })
        return
      }
      case 'guest-exec-status': {
        const proc = this.processes.get(args.pid)
        const reply = (): void => {
          if (proc == null) { answer({ error: { class: 'GenericError', desc: 'Invalid parameter \'pid\'' } }); return }
          if (proc.polls > 0) { proc.polls--; answer({ return: { exited: false } }); return }
          answer({ return: { exited: true, ...proc.exit } })
        }
        if (this.stallNextStatusMs > 0) {
          const ms = this.stallNextStatusMs
          this.stallNextStatusMs = 0
          await new Promise(resolve => setTimeout(resolve, ms))
        }
        reply()
        return
      }
      case 'guest-ping':
        answer({ return: {} })
        return
      default:
        answer({ error: { class: 'CommandNotFound', desc: `The command ${String(message.execute)} has not been found` } })
    }
  }
}

const b64 = (text: string): string => Buffer.from(text).toString('base64')

describe('GuestAgentClient', () => {
  let dir: string
  let agent: FakeAgent
  let client: GuestAgentClient
  let n = 0

  before(async () => { dir = await mkdtemp(join(tmpdir(), 'corral-qga-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  const fresh = async (): Promise<void> => {
    client?.close()
    agent?.close()
    agent = new FakeAgent()
    const path = join(dir, `qga-${n++}.sock`)
    await agent.listen(path)
    client = new GuestAgentClient(path)
  }

  after(() => { client?.close(); agent?.close() })

  it('synchronises with guest-sync-delimited, skipping what comes before the delimiter', async () => {
    await fresh()
    await client.waitReady(5000)
    const sync = agent.received[0]
    assert.equal(sync.execute, 'guest-sync-delimited')
    assert.equal(await client.request('guest-ping').then(() => 'pong'), 'pong')
  })

  it('keeps trying while the guest is still booting', async () => {
    await fresh()
    agent.ignoreSyncs = 2
    await client.waitReady(15_000)
    assert.ok(agent.received.filter(m => m.execute === 'guest-sync-delimited').length >= 3)
  })

  it('gives up with GuestAgentUnavailableError when nothing answers', async () => {
    await fresh()
    agent.ignoreSyncs = 1000
    await assert.rejects(client.waitReady(600), { name: 'GuestAgentUnavailableError', message: /did not answer within 600 ms/ })
  })

  it('runs a command, polls its status and decodes base64 output', async () => {
    await fresh()
    agent.spawnResult({ exitcode: 3, 'out-data': b64('hello\n'), 'err-data': b64('oops\n') }, 2)
    const result = await client.exec({ path: 'sh', args: ['-c', 'x'], env: ['A=1'], timeoutMs: 10_000 })
    assert.equal(result.exitCode, 3)
    assert.equal(result.stdout.toString(), 'hello\n')
    assert.equal(result.stderr.toString(), 'oops\n')
    assert.equal(result.truncated, false)
    const exec = agent.received.find(m => m.execute === 'guest-exec')
    assert.deepEqual(exec?.arguments, { path: 'sh', arg: ['-c', 'x'], env: ['A=1'], 'capture-output': true })
    assert.equal(agent.received.filter(m => m.execute === 'guest-exec-status').length, 3)
  })

  it('reports a signal-killed command as 128 + signal and flags truncated output', async () => {
    await fresh()
    agent.spawnResult({ signal: 9, 'out-truncated': true })
    const result = await client.exec({ path: 'x', args: [], timeoutMs: 10_000 })
    assert.equal(result.exitCode, 137)
    assert.equal(result.truncated, true)
  })

  it('turns an agent error answer into GuestAgentCommandError', async () => {
    await fresh()
    await assert.rejects(client.exec({ path: 'missing', args: [], timeoutMs: 10_000 }), (err: Error & { details: Record<string, unknown> }) =>
      err.name === 'GuestAgentCommandError' && /Failed to execute child process/.test(err.message) && err.details.command === 'guest-exec')
    await assert.rejects(client.request('guest-frobnicate'), { name: 'GuestAgentCommandError', message: /has not been found/ })
  })

  it('times out, sends the kill command and reports ExecTimeoutError', async () => {
    await fresh()
    agent.spawnResult({ exitcode: 0 }, 1_000_000)
    await assert.rejects(client.exec({ path: 'sleep', args: ['99'], timeoutMs: 300, killCommand: pid => ({ path: 'kill', args: ['-KILL', String(pid)] }) }), { name: 'ExecTimeoutError' })
    const kill = agent.received.find(m => m.execute === 'guest-exec' && m.arguments.path === 'kill')
    assert.deepEqual(kill?.arguments.arg, ['-KILL', '100'])
  })

  it('never takes a late answer for the next request: it resynchronises after a timeout', async () => {
    await fresh()
    agent.spawnResult({ exitcode: 7 })
    const { pid } = await client.request<{ pid: number }>('guest-exec', { path: 'a' })
    agent.stallNextStatusMs = 400
    await assert.rejects(client.request('guest-exec-status', { pid }, 100), { name: 'GuestAgentUnavailableError' })
    // The stalled answer ({exited: true, exitcode: 7}) arrives first during the next exchange and must be dropped.
    const pong = await client.request('guest-ping', undefined, 5000)
    assert.deepEqual(pong, {})
    const syncs = agent.received.filter(m => m.execute === 'guest-sync-delimited').length
    assert.equal(syncs, 2)
  })

  it('stops early when the exec signal aborts', async () => {
    await fresh()
    agent.spawnResult({ exitcode: 0 }, 1_000_000)
    const controller = new AbortController()
    setTimeout(() => controller.abort(new Error('cancelled by test')), 200)
    await assert.rejects(client.exec({ path: 'sleep', args: ['99'], timeoutMs: 60_000, signal: controller.signal }), { message: 'cancelled by test' })
  })
})
