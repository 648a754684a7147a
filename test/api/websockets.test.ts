/**
 * The websocket endpoints: exec streams output frames then the exit code; a bad first message gets
 * an error frame carrying a problem; upgrades without a valid token or claim are refused with a plain
 * HTTP problem; /api/v1/events delivers VM state changes once it has said it is subscribed.
 */
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { IMAGE, REQUEST_TIMEOUT_MS, startApiFixture, type ApiFixture } from './fixture.ts'

let fx: ApiFixture
before(async () => { fx = await startApiFixture() })
after(async () => { await fx?.stop() })

interface Session {
  ws: WebSocket
  frames: any[]
  /** Resolves with the close code and reason; rejects if the socket does not close in time. */
  closed: Promise<{ code: number, reason: string }>
  /** Resolves with the first frame (already received or not) that matches. */
  next: (match: (frame: any) => boolean) => Promise<any>
}

/** Opens a websocket that must upgrade; every wait in it is bounded by REQUEST_TIMEOUT_MS. */
async function open (path: string, token?: string): Promise<Session> {
  const ws = new WebSocket(fx.wsUrl + path, token != null ? { headers: { authorization: `Bearer ${token}` } } : {})
  const frames: any[] = []
  const waiters: Array<{ match: (frame: any) => boolean, resolve: (frame: any) => void }> = []
  ws.on('message', (data) => {
    const frame = JSON.parse(data.toString())
    frames.push(frame)
    for (const w of [...waiters]) {
      if (w.match(frame)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(frame)
      }
    }
  })
  const closed = bounded(new Promise<{ code: number, reason: string }>(resolve => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
  }), 'the websocket did not close')
  closed.catch(() => undefined)
  await bounded(new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${String(res.statusCode)}`)))
  }), 'the websocket did not open')
  const next = (match: (frame: any) => boolean): Promise<any> => {
    const seen = frames.find(match)
    if (seen != null) return Promise.resolve(seen)
    return bounded(new Promise(resolve => waiters.push({ match, resolve })), 'the expected frame did not arrive')
  }
  return { ws, frames, closed, next }
}

/** An upgrade the server must refuse: its HTTP status, content type and problem document. */
async function refused (path: string, headers: Record<string, string> = {}): Promise<{ status: number, type: string, problem: any }> {
  const ws = new WebSocket(fx.wsUrl + path, { headers })
  ws.on('error', () => undefined)
  return await bounded(new Promise((resolve, reject) => {
    ws.once('open', () => { ws.terminate(); reject(new Error(`the upgrade to ${path} was accepted`)) })
    ws.once('unexpected-response', (_req, res) => {
      let text = ''
      res.on('data', (chunk: Buffer) => { text += chunk.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), problem: JSON.parse(text) }))
    })
  }), `no answer to the upgrade of ${path}`)
}

async function bounded<T> (work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`${what} within ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS) })
  try {
    return await Promise.race([work, timeout])
  } finally {
    clearTimeout(timer)
  }
}

async function exec (vmId: string, first: string, token = fx.tokens.ci): Promise<{ frames: any[], code: number, reason: string }> {
  const session = await open(`/api/v1/vms/${encodeURIComponent(vmId)}/exec`, token)
  session.ws.send(first)
  const { code, reason } = await session.closed
  return { frames: session.frames, code, reason }
}

test('exec over a websocket streams output, then the exit code', async () => {
  const vm = await fx.createVm()
  const hello = await exec(vm.id, JSON.stringify({ command: ['echo', 'hello', 'world'] }))
  assert.deepEqual(hello.frames, [{ type: 'stdout', data: 'hello world\n' }, { type: 'exit', exitCode: 0 }])
  assert.equal(hello.code, 1000)

  const missing = await exec(vm.id, JSON.stringify({ command: ['cat', '/no/such/file'] }))
  assert.deepEqual(missing.frames, [{ type: 'stderr', data: 'cat: /no/such/file: No such file or directory\n' }, { type: 'exit', exitCode: 1 }])

  const env = await exec(vm.id, JSON.stringify({ command: ['env'], env: { BUILD: '42' } }), fx.tokens.operator)
  assert.deepEqual(env.frames, [{ type: 'stdout', data: 'BUILD=42\n' }, { type: 'exit', exitCode: 0 }])
  await fx.host.delete(vm.id)
})

test('a token in ?access_token= works for browsers, which cannot set headers', async () => {
  const vm = await fx.createVm()
  const session = await open(`/api/v1/vms/${vm.id}/exec?access_token=${fx.tokens.ci}`)
  session.ws.send(JSON.stringify({ command: ['true'] }))
  await session.closed
  assert.deepEqual(session.frames, [{ type: 'exit', exitCode: 0 }])
  await fx.host.delete(vm.id)
})

test('a bad first message gets an error frame with a problem, then the socket closes', async (t) => {
  const vm = await fx.createVm()
  const stopped = await fx.createVm({ state: 'stopped' })
  const cases: Array<{ name: string, vm: string, first: string, status: number, detail: RegExp, check?: (problem: any) => void }> = [
    { name: 'not JSON', vm: vm.id, first: 'uname -a', status: 400, detail: /first message must be JSON/ },
    { name: 'command is a string', vm: vm.id, first: JSON.stringify({ command: 'uname -a' }), status: 400, detail: /body\.command must be array/ },
    { name: 'no command', vm: vm.id, first: JSON.stringify({ env: {} }), status: 400, detail: /body\.command is required/ },
    { name: 'an unknown field', vm: vm.id, first: JSON.stringify({ command: ['true'], shell: true }), status: 400, detail: /unknown field body\.shell/ },
    { name: 'a JSON array', vm: vm.id, first: '["uname"]', status: 400, detail: /body must be object/ },
    { name: 'a timeout above the maximum', vm: vm.id, first: JSON.stringify({ command: ['true'], timeoutSeconds: 601 }), status: 400, detail: /above this node's maximum/ },
    { name: 'a stopped VM', vm: stopped.id, first: JSON.stringify({ command: ['true'] }), status: 409, detail: /while it is stopped: start it first/, check: p => assert.equal(p.state, 'stopped') },
    { name: 'an unknown VM', vm: 'vm-000000000000', first: JSON.stringify({ command: ['true'] }), status: 404, detail: /no VM with id vm-000000000000/ },
    { name: 'a VM id that is not valid percent-encoding', vm: '%E0%A4%A', first: JSON.stringify({ command: ['true'] }), status: 404, detail: /no VM with id/ }
  ]
  for (const c of cases) {
    await t.test(c.name, async () => {
      // Raw ids go into the URL as they are, so the broken escape reaches the server unchanged.
      const session = await open(`/api/v1/vms/${c.vm}/exec`, fx.tokens.ci)
      session.ws.send(c.first)
      const { code } = await session.closed
      assert.equal(session.frames.length, 1, JSON.stringify(session.frames))
      const [frame] = session.frames
      assert.equal(frame.type, 'error')
      assert.equal(frame.problem.status, c.status)
      assert.match(frame.problem.type, /^urn:corral:problem:/)
      assert.match(frame.problem.detail, c.detail)
      c.check?.(frame.problem)
      assert.equal(code, 4000 + c.status)
    })
  }
  assert.equal((await fx.request('GET', `/api/v1/vms/${stopped.id}`, { token: fx.tokens.viewer })).body.state, 'stopped')
  await fx.host.delete(vm.id)
  await fx.host.delete(stopped.id)
})

test('upgrades without a valid token or the claim are refused over HTTP', async (t) => {
  const vm = await fx.createVm()
  const exec = `/api/v1/vms/${vm.id}/exec`
  const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
  const cases: Array<{ name: string, path: string, headers?: Record<string, string>, status: number, detail: RegExp }> = [
    { name: 'exec without a token', path: exec, status: 401, detail: /needs a token/ },
    { name: 'events without a token', path: '/api/v1/events', status: 401, detail: /needs a token/ },
    { name: 'exec with a forged token', path: exec, headers: bearer('eyJhbGciOiJFZERTQSJ9.e30.c2ln'), status: 401, detail: /Invalid token/ },
    { name: 'events with a bad ?access_token=', path: '/api/v1/events?access_token=nope', status: 401, detail: /Invalid token/ },
    { name: 'exec with an unknown API key', path: exec, headers: bearer('crl_0123456789abcdef_secret'), status: 401, detail: /Unknown or revoked API key/ },
    { name: 'exec as viewer', path: exec, headers: bearer(fx.tokens.viewer), status: 403, detail: /"vm:exec"/ },
    { name: 'an unknown websocket path', path: '/api/v1/nope', headers: bearer(fx.tokens.admin), status: 404, detail: /websockets are \/api\/v1\/events and \/api\/v1\/vms\/\{id\}\/exec/ }
  ]
  for (const c of cases) {
    await t.test(c.name, async () => {
      const answer = await refused(c.path, c.headers)
      assert.equal(answer.status, c.status)
      assert.equal(answer.type, 'application/problem+json')
      assert.equal(answer.problem.status, c.status)
      assert.match(answer.problem.detail, c.detail)
    })
  }
  await fx.host.delete(vm.id)
})

test('events deliver vm.state changes of a VM created after "subscribed"', async () => {
  const session = await open('/api/v1/events', fx.tokens.viewer)
  await session.next(frame => frame.type === 'subscribed')
  const created = await fx.request('POST', '/api/v1/vms', { token: fx.tokens.ci, json: { image: IMAGE } })
  assert.equal(created.status, 201)
  const id: string = created.body.id
  const running = await session.next(frame => frame.type === 'vm.state' && frame.vm.id === id && frame.vm.state === 'running')
  assert.equal(running.previous, 'starting')
  const events = session.frames.filter(f => f.type === 'vm.state' && f.vm.id === id)
  assert.equal(events[0].vm.state, 'creating')
  assert.equal(events.at(-1).vm.state, 'running')
  // Each event starts where the one before it ended: none lost, none out of order.
  for (let i = 1; i < events.length; i++) assert.equal(events[i].previous, events[i - 1].vm.state, JSON.stringify(events))

  assert.equal((await fx.request('DELETE', `/api/v1/vms/${id}`, { token: fx.tokens.ci })).status, 204)
  const deleted = await session.next(frame => frame.type === 'vm.deleted' && frame.vm.id === id)
  assert.equal(deleted.previous, 'deleting')
  session.ws.close()
  await session.closed
})

test('?vm= narrows events to one VM', async () => {
  const watched = await fx.createVm()
  const session = await open(`/api/v1/events?vm=${watched.id}`, fx.tokens.ci)
  await session.next(frame => frame.type === 'subscribed')
  const other = await fx.createVm()
  assert.equal((await fx.request('POST', `/api/v1/vms/${watched.id}/suspend`, { token: fx.tokens.ci })).status, 200)
  await session.next(frame => frame.type === 'vm.state' && frame.vm.state === 'suspended')
  assert.ok(session.frames.every(f => f.type === 'subscribed' || f.vm.id === watched.id), JSON.stringify(session.frames))
  session.ws.close()
  await session.closed
  await fx.host.delete(watched.id)
  await fx.host.delete(other.id)
})

test('stopping the node closes open websockets', async () => {
  const local = await startApiFixture()
  const ws = new WebSocket(`${local.wsUrl}/api/v1/events`, { headers: { authorization: `Bearer ${local.tokens.viewer}` } })
  const closed = bounded(new Promise<number>(resolve => ws.on('close', code => resolve(code))), 'the websocket did not close when the node stopped')
  await bounded(new Promise(resolve => ws.once('message', resolve)), 'no subscribed frame')
  await local.stop()
  assert.equal(typeof await closed, 'number')
})
