import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { MeshFixture, eventually } from './fixture.ts'
import type { TestNode } from './fixture.ts'
import { CorralError } from '../../src/errors.ts'

class VmBusyError extends CorralError {
  override name = 'VmBusyError'
}

describe('rpc between nodes', () => {
  const fixture = new MeshFixture()
  let a: TestNode, b: TestNode

  before(async () => {
    a = await fixture.joined()
    b = await fixture.joined()
    await eventually('a and b know each other', () => a.mesh.members().length === 2 && b.mesh.members().length === 2)
    b.mesh.handleRpc<{ x: number }, { doubled: number, caller: string }>('double', (body, ctx) => ({ doubled: body.x * 2, caller: ctx.peerId }))
    b.mesh.handleRpc('fail', () => { throw new VmBusyError('vm-7 is busy; retry later', { vmId: 'vm-7' }) })
    b.mesh.handleRpc<{ lines: number }, { exitCode: number }>('exec', async (body, ctx) => {
      for (let i = 0; i < body.lines; i++) await ctx.send({ line: `out ${i}` })
      return { exitCode: 0 }
    })
    b.mesh.handleRpc('slow', async (_body, ctx) => {
      await new Promise(resolve => { const t = setTimeout(resolve, 10_000); ctx.signal.addEventListener('abort', () => { clearTimeout(t); resolve(undefined) }) })
      return 'late'
    })
  })
  after(async () => { await fixture.cleanup() })

  test('a request round-trips and the handler sees the caller', async () => {
    const res = await a.mesh.request<{ doubled: number, caller: string }>(b.mesh.self().peerId, 'double', { x: 21 })
    assert.deepEqual(res, { doubled: 42, caller: a.mesh.self().peerId })
    assert.ok(b.mesh.metrics().rpcServed >= 1)
  })

  test('a request to this node itself runs the local handler with the same semantics', async () => {
    const res = await b.mesh.request<{ doubled: number }>(b.mesh.self().peerId, 'double', { x: 2 })
    assert.equal(res.doubled, 4)
    const frames: unknown[] = []
    const calls = b.mesh.requestStream(b.mesh.self().peerId, 'exec', { lines: 3 })
    for await (const frame of calls) frames.push(frame)
    assert.equal(frames.length, 3)
  })

  test('a handler error arrives typed, with its name, message and details', async () => {
    await assert.rejects(a.mesh.request(b.mesh.self().peerId, 'fail', {}), (err: CorralError) => {
      assert.equal(err.name, 'RpcRemoteError')
      assert.match(err.message, /node n1 \(.+\) failed fail: vm-7 is busy/)
      assert.deepEqual(err.details.remote, { name: 'VmBusyError', message: 'vm-7 is busy; retry later', details: { vmId: 'vm-7' } })
      return true
    })
  })

  test('large answers near the frame limit pass and the nodes stay healthy; oversized ones are refused typed', async () => {
    b.mesh.handleRpc<{ kb: number }, string>('blob', body => 'x'.repeat(body.kb * 1024))
    for (let i = 0; i < 3; i++) {
      assert.equal((await a.mesh.request<string>(b.mesh.self().peerId, 'blob', { kb: 1000 })).length, 1000 * 1024)
    }
    await assert.rejects(a.mesh.request(b.mesh.self().peerId, 'blob', { kb: 2048 }), (err: CorralError) => {
      assert.equal(err.name, 'RpcRemoteError')
      assert.equal((err.details.remote as { name: string }).name, 'RpcBodyTooLargeError')
      return true
    })
    await assert.rejects(a.mesh.request(b.mesh.self().peerId, 'double', { x: 'y'.repeat(2 * 1024 * 1024) }), { name: 'RpcBodyTooLargeError' })
    // Regression: @libp2p/pnet 3.0.27 crashed the process a little after one such answer.
    for (let i = 0; i < 20; i++) await a.mesh.records.put('vms', `after-blob-${i}`, { i })
    await eventually('b got the records', () => b.mesh.records.get('vms', 'after-blob-19') !== undefined)
  })

  test('an unknown method is RpcMethodNotFoundError', async () => {
    await assert.rejects(a.mesh.request(b.mesh.self().peerId, 'nope', {}), { name: 'RpcMethodNotFoundError' })
  })

  test('streaming: every frame in order, then the handler\'s return value', async () => {
    const calls = a.mesh.requestStream<{ line: string }, { exitCode: number }>(b.mesh.self().peerId, 'exec', { lines: 200 })
    const lines: string[] = []
    let step = await calls.next()
    while (step.done !== true) {
      lines.push(step.value.line)
      step = await calls.next()
    }
    assert.equal(lines.length, 200)
    assert.equal(lines[199], 'out 199')
    assert.deepEqual(step.value, { exitCode: 0 })
  })

  test('breaking out of a stream cancels it on the callee', async () => {
    let aborted = false
    b.mesh.handleRpc('endless', async (_body, ctx) => {
      ctx.signal.addEventListener('abort', () => { aborted = true })
      for (let i = 0; i < 1_000_000 && !ctx.signal.aborted; i++) await ctx.send(i)
      return 'done'
    })
    let got = 0
    for await (const _ of a.mesh.requestStream(b.mesh.self().peerId, 'endless', {})) {
      if (++got === 5) break
    }
    await eventually('the callee saw the cancel', () => aborted)
  })

  test('timeouts and aborts are typed', async () => {
    await assert.rejects(a.mesh.request(b.mesh.self().peerId, 'slow', {}, { timeoutMs: 200 }), { name: 'RpcTimeoutError' })
    const controller = new AbortController()
    const pending = a.mesh.request(b.mesh.self().peerId, 'slow', {}, { signal: controller.signal })
    setTimeout(() => { controller.abort() }, 50)
    await assert.rejects(pending, { name: 'RpcAbortedError' })
  })

  test('an unknown peer id is refused at once', async () => {
    const stranger = (await fixture.node()).mesh.self().peerId
    await assert.rejects(a.mesh.request(stranger, 'double', { x: 1 }), { name: 'PeerUnavailableError' })
  })

  test('a request to a stopped peer rejects promptly with PeerUnavailableError naming the node', async () => {
    const c = await fixture.joined()
    c.mesh.handleRpc('double', (body: { x: number }) => ({ doubled: body.x * 2 }))
    const cId = c.mesh.self().peerId
    await eventually('a knows c', () => a.mesh.member(cId)?.status === 'alive')
    assert.deepEqual(await a.mesh.request(cId, 'double', { x: 1 }), { doubled: 2 })
    await c.mesh.stop()
    // Right after the stop (c still looks alive or suspect) and once it is dead: both reject typed.
    await assert.rejects(a.mesh.request(cId, 'double', { x: 1 }, { timeoutMs: 60_000 }), (err: Error) => {
      assert.equal(err.name, 'PeerUnavailableError')
      assert.match(err.message, /node n\d+ \(/)
      return true
    })
    await eventually('c is dead on a', () => a.mesh.member(cId)?.status === 'dead')
    await assert.rejects(a.mesh.request(cId, 'double', { x: 1 }), { name: 'PeerUnavailableError', message: /node n\d+ .*dead/ })
  })

  test('a callee that stops mid-stream fails the caller with PeerUnavailableError', async () => {
    const d = await fixture.joined()
    d.mesh.handleRpc('forever', async (_body, ctx) => {
      for (let i = 0; !ctx.signal.aborted; i++) {
        await ctx.send(i)
        await new Promise(resolve => setTimeout(resolve, 10))
      }
    })
    const dId = d.mesh.self().peerId
    await eventually('a knows d', () => a.mesh.member(dId)?.status === 'alive')
    const seen: unknown[] = []
    await assert.rejects((async () => {
      for await (const frame of a.mesh.requestStream(dId, 'forever', {}, { timeoutMs: 60_000 })) {
        seen.push(frame)
        if (seen.length === 3) void d.mesh.stop()
      }
    })(), { name: 'PeerUnavailableError' })
    assert.ok(seen.length >= 3)
  })

  test('requests after stop reject with MeshNotRunningError', async () => {
    const e = await fixture.joined()
    await e.mesh.stop()
    await assert.rejects(e.mesh.request(a.mesh.self().peerId, 'double', { x: 1 }), { name: 'MeshNotRunningError' })
    await assert.rejects(e.mesh.records.put('vms', 'x', {}), { name: 'MeshNotRunningError' })
  })
})
