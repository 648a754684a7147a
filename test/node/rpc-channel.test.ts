import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Libp2p } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { MeshFixture, eventually } from './fixture.ts'
import type { TestNode } from './fixture.ts'
import { createRawPeer } from './raw-peer.ts'
import type { RawPeer } from './raw-peer.ts'
import { MAX_RPC_CALLS_IN_FLIGHT } from '../../src/node/constants.ts'
import { RPC_MUX_PROTOCOL, RPC_PROTOCOL } from '../../src/node/index.ts'
import type { MeshNode } from '../../src/node/index.ts'
import type { CorralError } from '../../src/errors.ts'

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v))
const dec = (bytes: { subarray: () => Uint8Array }): any => JSON.parse(new TextDecoder().decode(bytes.subarray()))

/** The channel streams a node has open to a peer. Reaches into the node's libp2p host: tests only. */
function channelStreams (mesh: MeshNode, peerId: string, direction: 'inbound' | 'outbound'): number {
  const libp2p = (mesh as unknown as { libp2p: Libp2p }).libp2p
  return libp2p.getConnections(peerIdFromString(peerId))
    .flatMap(c => c.streams)
    .filter(s => s.protocol === RPC_MUX_PROTOCOL && s.direction === direction && s.status === 'open').length
}

/** A promise and its resolver, for handlers the test releases. */
function gate<T = void> (): { promise: Promise<T>, open: (value: T) => void } {
  let open!: (value: T) => void
  const promise = new Promise<T>(resolve => { open = resolve })
  return { promise, open }
}

/** Resolves when the handler's signal aborts, or after 30 s (a safety net; no test waits that long on purpose). */
async function untilAborted (signal: AbortSignal): Promise<void> {
  await new Promise<void>(resolve => {
    const t = setTimeout(resolve, 30_000)
    signal.addEventListener('abort', () => { clearTimeout(t); resolve() }, { once: true })
  })
}

describe('rpc channels: unary calls multiplexed on one stream per peer', () => {
  const fixture = new MeshFixture()
  let a: TestNode, b: TestNode
  let bId: string
  /** Tags of calls whose handler on b saw ctx.signal abort. */
  const aborted = new Set<string>()
  /** Tags of calls whose handler on b has started. */
  const started = new Set<string>()

  before(async () => {
    a = await fixture.joined()
    b = await fixture.joined()
    bId = b.mesh.self().peerId
    await eventually('a and b know each other', () => a.mesh.member(bId)?.status === 'alive' && b.mesh.member(a.mesh.self().peerId)?.status === 'alive')
    b.mesh.handleRpc<{ tag: string }, string>('hang', async ({ tag }, ctx) => {
      started.add(tag)
      await untilAborted(ctx.signal)
      if (ctx.signal.aborted) aborted.add(tag)
      return 'late'
    })
    b.mesh.handleRpc('streams', async (_body, ctx) => {
      await ctx.send('a frame')
      return 'done'
    })
  })
  after(async () => { await fixture.cleanup() })

  test('concurrent first calls share one channel, and answers arrive out of order, each to its own call', async () => {
    const c = await fixture.joined()
    const cId = c.mesh.self().peerId
    await eventually('a knows c', () => a.mesh.member(cId)?.status === 'alive')
    const count = 40
    const gates = Array.from({ length: count }, () => gate())
    let arrived = 0
    c.mesh.handleRpc<{ n: number }, { n: number, caller: string }>('slow-echo', async ({ n }, ctx) => {
      arrived++
      await gates[n]!.promise
      return { n, caller: ctx.peerId }
    })
    const finished: number[] = []
    // No call to c before: all of these wait for the same channel to open.
    const calls = Array.from({ length: count }, async (_, n) => {
      const answer = await a.mesh.request<{ n: number, caller: string }>(cId, 'slow-echo', { n })
      finished.push(n)
      return answer
    })
    await eventually('every call reached c', () => arrived === count)
    assert.equal(channelStreams(a.mesh, cId, 'outbound'), 1)
    assert.equal(channelStreams(c.mesh, a.mesh.self().peerId, 'inbound'), 1)
    // Answer in reverse order, one at a time.
    for (let n = count - 1; n >= 0; n--) {
      gates[n]!.open()
      await eventually(`call ${n} answered`, () => finished.includes(n))
    }
    const answers = await Promise.all(calls)
    assert.deepEqual(answers.map(x => x.n), Array.from({ length: count }, (_, n) => n))
    assert.ok(answers.every(x => x.caller === a.mesh.self().peerId))
    assert.deepEqual(finished, Array.from({ length: count }, (_, n) => count - 1 - n))
    // Later calls reuse the channel.
    for (let n = 0; n < 5; n++) gates[n] = gate()
    for (const g of gates) g.open()
    await Promise.all(Array.from({ length: 5 }, async (_, n) => await a.mesh.request(cId, 'slow-echo', { n })))
    assert.equal(channelStreams(a.mesh, cId, 'outbound'), 1)
  })

  test('a call that times out is RpcTimeoutError and its handler is cancelled', async () => {
    await assert.rejects(a.mesh.request(bId, 'hang', { tag: 'timeout' }, { timeoutMs: 300 }), (err: CorralError) => {
      assert.equal(err.name, 'RpcTimeoutError')
      assert.match(err.message, /node n1 \(.+\) did not answer hang within 300 ms/)
      assert.deepEqual(err.details, { peerId: bId, method: 'hang', timeoutMs: 300 })
      return true
    })
    await eventually('the handler saw its signal abort', () => aborted.has('timeout'))
  })

  test('the caller\'s abort is RpcAbortedError and aborts the handler\'s ctx.signal on the callee', async () => {
    const controller = new AbortController()
    const pending = a.mesh.request(bId, 'hang', { tag: 'abort' }, { signal: controller.signal })
    await eventually('the handler started', () => started.has('abort'))
    assert.equal(aborted.has('abort'), false)
    controller.abort()
    await assert.rejects(pending, { name: 'RpcAbortedError' })
    await eventually('the handler saw its signal abort', () => aborted.has('abort'))
    // The channel is fine after a cancel.
    b.mesh.handleRpc('two', () => 2)
    assert.equal(await a.mesh.request(bId, 'two', {}), 2)
  })

  test('a handler that sends frames, called with request(), fails with a clear error; requestStream() still works', async () => {
    await assert.rejects(a.mesh.request(bId, 'streams', {}), (err: CorralError) => {
      assert.equal(err.name, 'RpcRemoteError')
      const remote = err.details.remote as { name: string, message: string }
      assert.equal(remote.name, 'RpcStreamRequiredError')
      assert.match(remote.message, /call it with requestStream\(\)/)
      return true
    })
    // The same in-process, so a call to self behaves as a remote one.
    await assert.rejects(b.mesh.request(bId, 'streams', {}), { name: 'RpcRemoteError', message: /requestStream/ })
    const frames: unknown[] = []
    const calls = a.mesh.requestStream(bId, 'streams', {})
    let step = await calls.next()
    for (; step.done !== true; step = await calls.next()) frames.push(step.value)
    assert.deepEqual(frames, ['a frame'])
    assert.equal(step.value, 'done')
  })

  test('calls over the in-flight limit of a channel are answered RpcBusyError at once; the others complete', async () => {
    const release = gate()
    let running = 0
    b.mesh.handleRpc<{ n: number }, number>('held', async ({ n }) => {
      running++
      await release.promise
      return n
    })
    const held = Array.from({ length: MAX_RPC_CALLS_IN_FLIGHT }, async (_, n) => await a.mesh.request<number>(bId, 'held', { n }))
    await eventually('every allowed call runs', () => running === MAX_RPC_CALLS_IN_FLIGHT)
    await assert.rejects(a.mesh.request(bId, 'held', { n: -1 }), (err: CorralError) => {
      assert.equal(err.name, 'RpcBusyError')
      assert.match(err.message, /node n1 .* did not run held/)
      assert.equal(err.details.limit, MAX_RPC_CALLS_IN_FLIGHT)
      return true
    })
    assert.equal(running, MAX_RPC_CALLS_IN_FLIGHT)
    release.open()
    assert.deepEqual(await Promise.all(held), Array.from({ length: MAX_RPC_CALLS_IN_FLIGHT }, (_, n) => n))
    assert.equal(await a.mesh.request(bId, 'held', { n: 7 }), 7)
  })

  test('a callee that stops mid-call fails every call in flight with PeerUnavailableError; the restarted node is called again', async () => {
    const d = await fixture.joined()
    const dId = d.mesh.self().peerId
    let running = 0
    d.mesh.handleRpc('hang', async (_body, ctx) => {
      running++
      await untilAborted(ctx.signal)
      return 'late'
    })
    await eventually('a knows d', () => a.mesh.member(dId)?.status === 'alive')
    // Outcomes caught at once: the calls fail while the test still awaits the stop.
    const outcomes = Array.from({ length: 5 }, async () => await a.mesh.request(dId, 'hang', {}, { timeoutMs: 60_000 }).then(() => undefined, (err: CorralError) => err))
    await eventually('the calls run on d', () => running === 5)
    await d.mesh.stop()
    for (const err of await Promise.all(outcomes)) {
      assert.equal(err?.name, 'PeerUnavailableError')
      assert.match(err.message, /node n\d+ \(.+\) is unavailable/)
      assert.equal(err.details.peerId, dId)
    }
    // The same identity (data dir) started again: a reaches it over a new channel.
    const again = await fixture.node({ dataDir: d.dataDir, bootstrap: a.mesh.self().multiaddrs })
    again.mesh.handleRpc('double', (body: { x: number }) => body.x * 2)
    await again.mesh.start()
    assert.equal(again.mesh.self().peerId, dId)
    await eventually('a can call d again', async () => await a.mesh.request(dId, 'double', { x: 21 }, { timeoutMs: 2000 }).then(x => x === 42, () => false), 30_000)
    assert.equal(channelStreams(a.mesh, dId, 'outbound'), 1)
  })

  test('a call to a peer without rpc channels (an older corral) goes a stream per call', async () => {
    const old = await createRawPeer(fixture.clusterKey)
    try {
      await old.handle(RPC_PROTOCOL, async stream => {
        const lp = lpStream(stream)
        const req = dec(await lp.read())
        await lp.write(enc({ t: 'end', ok: true, body: { echoed: req.body } }))
        await stream.close()
      })
      await old.dial(multiaddr(a.mesh.self().multiaddrs[0]!))
      const oldId = old.peerId.toString()
      await eventually('a sees the old peer connected', () => channelStreams(a.mesh, oldId, 'outbound') === 0 && (a.mesh as unknown as { libp2p: Libp2p }).libp2p.getConnections(old.peerId).length > 0)
      assert.deepEqual(await a.mesh.request(oldId, 'anything', { x: 1 }), { echoed: { x: 1 } })
      assert.deepEqual(await a.mesh.request(oldId, 'anything', { x: 2 }), { echoed: { x: 2 } })
    } finally {
      await old.stop()
    }
  })
})

describe('rpc channels: bad frames from a peer', () => {
  const fixture = new MeshFixture()
  let a: TestNode, b: TestNode
  let raw: RawPeer

  before(async () => {
    a = await fixture.joined()
    b = await fixture.joined()
    await eventually('a and b know each other', () => a.mesh.members().length === 2 && b.mesh.members().length === 2)
    a.mesh.handleRpc<{ x: number }, number>('double', ({ x }) => x * 2)
    raw = await createRawPeer(fixture.clusterKey)
    await raw.dial(multiaddr(a.mesh.self().multiaddrs[0]!))
  })
  after(async () => {
    await raw.stop()
    await fixture.cleanup()
  })

  async function stillHealthy (): Promise<void> {
    assert.equal(await b.mesh.request(a.mesh.self().peerId, 'double', { x: 4 }), 8)
  }

  test('malformed and schema-breaking frames are dropped and counted; the channel goes on serving', async () => {
    const stream = await raw.dialProtocol(peerIdFromString(a.mesh.self().peerId), RPC_MUX_PROTOCOL)
    const lp = lpStream(stream)
    const before = a.mesh.metrics()
    const junk = [
      enc('not json'), new Uint8Array([0xff, 0xfe]), enc('null'), enc({ t: 'req', method: 'double', body: { x: 1 } }),
      enc({ t: 'req', id: -1, method: 'double' }), enc({ t: 'req', id: 1.5, method: 'double' }), enc({ t: 'req', id: 1, method: '' }),
      enc({ t: 'end', id: 1, ok: true }), enc({ t: 'cancel' }), enc({ t: 'req', id: 1, method: 'double', extra: true })
    ]
    for (const frame of junk) await lp.write(frame)
    // A good call on the same stream is answered: the channel survived.
    await lp.write(enc({ t: 'req', id: 7, method: 'double', body: { x: 21 } }))
    assert.deepEqual(dec(await lp.read()), { t: 'end', id: 7, ok: true, body: 42 })
    const after = a.mesh.metrics()
    assert.equal(after.dropped.rpc, before.dropped.rpc + junk.length)
    assert.ok((after.dropReasons['rpc.malformed'] ?? 0) >= (before.dropReasons['rpc.malformed'] ?? 0) + 2)
    assert.ok((after.dropReasons['rpc.invalid'] ?? 0) >= (before.dropReasons['rpc.invalid'] ?? 0) + 7)
    assert.equal(after.accepted.rpc, before.accepted.rpc + 1)
    // The same id twice while the first runs is refused, not run twice.
    let runs = 0
    const release = gate()
    a.mesh.handleRpc('once', async () => { runs++; await release.promise; return 'ok' })
    await lp.write(enc({ t: 'req', id: 8, method: 'once' }))
    await eventually('the first call runs', () => runs === 1)
    const dropsBefore = a.mesh.metrics().dropped.rpc
    await lp.write(enc({ t: 'req', id: 8, method: 'once' }))
    await eventually('the duplicate is dropped', () => a.mesh.metrics().dropped.rpc === dropsBefore + 1)
    release.open()
    assert.deepEqual(dec(await lp.read()), { t: 'end', id: 8, ok: true, body: 'ok' })
    assert.equal(runs, 1)
    await stream.close()
    await stillHealthy()
  })

  test('a length prefix over the frame limit resets the channel and is counted', async () => {
    const stream = await raw.dialProtocol(peerIdFromString(a.mesh.self().peerId), RPC_MUX_PROTOCOL)
    const before = a.mesh.metrics()
    const closed = new Promise<void>(resolve => { stream.addEventListener('close', () => { resolve() }, { once: true }) })
    stream.send(new Uint8Array([0xff, 0xff, 0xff, 0x7f]))
    await closed
    assert.equal(stream.status, 'reset')
    const after = a.mesh.metrics()
    assert.equal(after.dropped.rpc, before.dropped.rpc + 1)
    assert.equal(after.dropReasons['rpc.oversized'], (before.dropReasons['rpc.oversized'] ?? 0) + 1)
    await stillHealthy()
  })

  test('a callee answering junk on the channel fails the calls in flight with RpcProtocolError and counts the drop', async () => {
    const junkPeer = await createRawPeer(fixture.clusterKey)
    try {
      await junkPeer.handle(RPC_MUX_PROTOCOL, async stream => {
        const lp = lpStream(stream)
        // Read two calls, then answer with a frame that breaks the schema.
        await lp.read()
        await lp.read()
        await lp.write(enc({ t: 'end', id: 'x', ok: 'maybe' }))
      })
      await junkPeer.dial(multiaddr(a.mesh.self().multiaddrs[0]!))
      const id = junkPeer.peerId.toString()
      await eventually('a sees the junk peer connected', () => (a.mesh as unknown as { libp2p: Libp2p }).libp2p.getConnections(junkPeer.peerId).length > 0)
      const before = a.mesh.metrics().dropped.rpc
      const calls = [a.mesh.request(id, 'one', {}), a.mesh.request(id, 'two', {})]
      for (const call of calls) await assert.rejects(call, { name: 'RpcProtocolError', message: /sent a bad frame on its rpc channel \(invalid\)/ })
      assert.equal(a.mesh.metrics().dropped.rpc, before + 1)
    } finally {
      await junkPeer.stop()
    }
    await stillHealthy()
  })
})
