import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ConnectionLiveness, HalfOpenConnectionError, type PingableConnection } from '../../src/node/connection-liveness.ts'
import { MeshFixture, eventually } from './fixture.ts'

/** A connection whose muxer answers pings as told, recording what happens to it. */
function fakeConnection (answer: 'yes' | 'never' | 'closed'): PingableConnection & { pings: number, aborted?: Error } {
  const connection = {
    status: 'open',
    pings: 0,
    aborted: undefined as Error | undefined,
    muxer: {
      ping: async (options?: { signal?: AbortSignal }): Promise<number> => {
        connection.pings++
        if (answer === 'yes') return 1
        if (answer === 'closed') throw new Error('Muxer closed locally')
        return await new Promise((_resolve, reject) => { options?.signal?.addEventListener('abort', () => { reject(options.signal?.reason) }) })
      }
    },
    abort (err: Error) {
      connection.aborted = err
      connection.status = 'closed'
    }
  }
  return connection
}

test('a connection whose ping goes unanswered is aborted as half-open; one that answers is left alone', async () => {
  const live = fakeConnection('yes')
  const frozen = fakeConnection('never')
  const answered: unknown[] = []
  const dead: Error[] = []
  const liveness = new ConnectionLiveness({ connections: () => [live, frozen], onAnswer: c => answered.push(c), onDead: (_c, err) => dead.push(err) }, { intervalMs: 60_000, timeoutMs: 50 })
  liveness.round()
  await eventually('the frozen one is aborted', () => frozen.aborted != null)
  assert.ok(frozen.aborted instanceof HalfOpenConnectionError)
  assert.match(frozen.aborted.message, /no answer to a keep-alive ping within 50 ms/)
  assert.equal(live.aborted, undefined)
  assert.deepEqual(answered, [live])
  assert.equal(dead.length, 1)
})

test('one ping per connection at a time; closed connections and muxers that cannot ping are skipped', async () => {
  const slow = fakeConnection('never')
  const closed = Object.assign(fakeConnection('yes'), { status: 'closed' })
  const noPing: PingableConnection = { status: 'open', muxer: {}, abort: () => { throw new Error('must not be aborted') } }
  const liveness = new ConnectionLiveness({ connections: () => [slow, closed, noPing] }, { intervalMs: 60_000, timeoutMs: 200 })
  liveness.round()
  liveness.round()
  assert.equal(slow.pings, 1, 'the second round does not stack a ping on the one in flight')
  assert.equal(closed.pings, 0)
  await eventually('the slow one is aborted', () => slow.aborted != null)
})

test('a muxer that fails the ping outright (closing) gets the connection aborted with that error', async () => {
  const closing = fakeConnection('closed')
  const liveness = new ConnectionLiveness({ connections: () => [closing] }, { intervalMs: 60_000, timeoutMs: 1000 })
  liveness.round()
  await eventually('aborted', () => closing.aborted != null)
  assert.match(closing.aborted!.message, /Muxer closed/)
})

test('real nodes ping each other with yamux frames and keep the connection; a peer that stops answering pings is cut off', async () => {
  const fx = new MeshFixture()
  try {
    // b never gives up on a (a loaded machine must not make b close the connection first); a
    // allows 3 s, far beyond a live peer's answer.
    const a = await fx.joined({ connectionPing: { intervalMs: 100, timeoutMs: 3000 } })
    const b = await fx.joined({ connectionPing: { intervalMs: 100, timeoutMs: 600_000 } })
    const bId = b.mesh.self().peerId
    await eventually('a and b are connected', () => a.mesh.connectedPeers().includes(bId))
    await eventually('a has had pings answered', () => a.mesh.metrics().connectionPingsAnswered >= 5)
    assert.ok(a.mesh.connectedPeers().includes(bId), 'answered pings keep the connection')
    assert.equal(a.mesh.metrics().halfOpenConnectionsClosed, 0)
    // b stops answering yamux pings, as a frozen process or a half-open link would: on every
    // connection it has, including one a redials meanwhile.
    const libp2p = (b.mesh as unknown as { libp2p: { getConnections: () => Array<{ muxer: { handlePing: (h: unknown) => void } }> } }).libp2p
    const silence = (): void => { for (const connection of libp2p.getConnections()) connection.muxer.handlePing = () => {} }
    await eventually('a closes the connection that stopped answering', () => {
      silence()
      return a.mesh.metrics().halfOpenConnectionsClosed >= 1
    }, 30_000)
    assert.ok(a.logs.some(l => l.includes('closing a connection that stopped answering pings') && l.includes(bId)))
  } finally {
    await fx.cleanup()
  }
})

test('a new connection is pinged at once, not a round later: yamux grows stream windows only once it knows the round trip', async () => {
  const fx = new MeshFixture()
  try {
    const rare = { intervalMs: 600_000, timeoutMs: 600_000 }
    const a = await fx.joined({ connectionPing: rare })
    const b = await fx.joined({ connectionPing: rare })
    await eventually('a and b are connected', () => a.mesh.connectedPeers().includes(b.mesh.self().peerId))
    await eventually('both sides had their first ping answered', () => a.mesh.metrics().connectionPingsAnswered >= 1 && b.mesh.metrics().connectionPingsAnswered >= 1)
  } finally {
    await fx.cleanup()
  }
})
