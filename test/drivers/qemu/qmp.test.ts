import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { QmpClient, type QmpEvent } from '../../../src/drivers/qemu/qmp.ts'
import { LineBuffer } from '../../../src/drivers/qemu/lines.ts'

/** A fake qemu monitor: greets, then answers by a handler; writes in tiny pieces to test framing. */
async function fakeQmp (path: string, handle: (message: Record<string, any>, socket: Socket, send: (value: unknown) => void) => void): Promise<Server> {
  const server = createServer(socket => {
    const send = (value: unknown): void => {
      const text = JSON.stringify(value) + '\r\n'
      // Split every message in two writes so the client has to reassemble lines.
      const cut = Math.floor(text.length / 2)
      socket.write(text.slice(0, cut))
      socket.write(text.slice(cut))
    }
    send({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: ['oob'] } })
    const lines = new LineBuffer()
    socket.on('data', chunk => {
      for (const line of lines.push(chunk)) {
        const message = JSON.parse(line.toString()) as Record<string, any>
        if (message.execute === 'qmp_capabilities') send({ return: {}, id: message.id })
        else handle(message, socket, send)
      }
    })
    socket.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(path, resolve))
  return server
}

describe('QmpClient', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'corral-qmp-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('negotiates capabilities, matches answers by id and delivers events between them', async () => {
    const path = join(dir, 'a.sock')
    const server = await fakeQmp(path, (message, _socket, send) => {
      if (message.execute === 'query-status') {
        send({ timestamp: { seconds: 1, microseconds: 0 }, event: 'STOP' })
        send({ return: { running: false, status: 'paused' }, id: message.id })
      } else if (message.execute === 'human-monitor-command') {
        send({ return: `ran ${String(message.arguments['command-line'])}`, id: message.id })
      } else {
        send({ error: { class: 'CommandNotFound', desc: `The command ${String(message.execute)} has not been found` }, id: message.id })
      }
    })
    const events: QmpEvent[] = []
    const client = await QmpClient.connect(path, { timeoutMs: 5000, onEvent: e => events.push(e) })
    const [status, hmp] = await Promise.all([
      client.execute<{ running: boolean }>('query-status'),
      client.execute<string>('human-monitor-command', { 'command-line': 'info network' })
    ])
    assert.equal(status.running, false)
    assert.equal(hmp, 'ran info network')
    assert.deepEqual(events.map(e => e.event), ['STOP'])
    await assert.rejects(client.execute('nope'), (err: Error & { details: Record<string, unknown> }) =>
      err.name === 'HypervisorError' && /has not been found/.test(err.message) && err.details.class === 'CommandNotFound')
    client.close()
    server.close()
  })

  it('rejects pending commands and calls onClose when qemu goes away', async () => {
    const path = join(dir, 'b.sock')
    const server = await fakeQmp(path, (_message, socket) => { socket.destroy() })
    let closed = false
    const client = await QmpClient.connect(path, { timeoutMs: 5000, onClose: () => { closed = true } })
    await assert.rejects(client.execute('quit'), { name: 'HypervisorError', message: /closed before qemu answered quit/ })
    assert.equal(closed, true)
    assert.equal(client.closed, true)
    await assert.rejects(client.execute('query-status'), { name: 'HypervisorError', message: /connection is closed/ })
    server.close()
  })

  it('waits for a socket that does not exist yet, within its timeout', async () => {
    const path = join(dir, 'late.sock')
    let server: Server | undefined
    const timer = setTimeout(() => { void fakeQmp(path, () => {}).then(s => { server = s }) }, 200)
    const client = await QmpClient.connect(path, { timeoutMs: 5000 })
    assert.equal(client.closed, false)
    client.close()
    clearTimeout(timer)
    server?.close()
    await assert.rejects(QmpClient.connect(join(dir, 'never.sock'), { timeoutMs: 300 }), { name: 'HypervisorError', message: /could not connect/ })
  })

  it('times out on a monitor that never greets (held by another client)', async () => {
    const path = join(dir, 'mute.sock')
    const server = createServer(socket => { socket.on('error', () => {}) })
    await new Promise<void>(resolve => server.listen(path, resolve))
    await assert.rejects(QmpClient.connect(path, { timeoutMs: 300 }), { name: 'HypervisorError', message: /no QMP greeting/ })
    server.close()
  })
})
