import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { lpStream } from '@libp2p/utils'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { MeshFixture, eventually } from './fixture.ts'
import type { TestNode } from './fixture.ts'
import { createRawPeer } from './raw-peer.ts'
import type { RawPeer } from './raw-peer.ts'
import { HEARTBEAT_TOPIC, RECORDS_TOPIC, RPC_PROTOCOL, SYNC_PROTOCOL } from '../../src/node/index.ts'

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v))

/** Junk that is not a valid frame for any channel, of several kinds. */
const junkArb = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 2048 }),
  fc.jsonValue({ maxDepth: 3 }).map(v => enc(v)),
  fc.string({ maxLength: 200 }).map(s => enc(s)),
  fc.constantFrom(
    enc('{"t":"req"}'), enc('{"t":"req","method":""}'), enc('{"t":"digest","items":[{"collection":"../x","id":"a"}]}'),
    enc('{"t":"records","entries":[{"collection":"vms","id":"a","value":1,"deleted":false,"hlc":{"wall":-1,"counter":0,"node":"x"}}]}'),
    enc('{"peerId":"x","nodeName":"y","addrs":[],"version":1,"state":{},"extra":1}'), enc('{"entries":[]}'), enc('null'), enc('[]'),
    new Uint8Array([0xff, 0xfe, 0xfd])
  )
)

describe('garbage on every inbound channel', () => {
  const fixture = new MeshFixture()
  let a: TestNode, b: TestNode
  let raw: RawPeer
  let unsignedRaw: RawPeer

  before(async () => {
    a = await fixture.joined()
    b = await fixture.joined()
    await eventually('a and b are members', () => a.mesh.members().length === 2 && b.mesh.members().length === 2)
    raw = await createRawPeer(fixture.clusterKey)
    unsignedRaw = await createRawPeer(fixture.clusterKey, 'StrictNoSign')
    for (const peer of [raw, unsignedRaw]) await peer.dial(multiaddr(a.mesh.self().multiaddrs[0]!))
  })
  after(async () => {
    await raw.stop()
    await unsignedRaw.stop()
    await fixture.cleanup()
  })

  async function stillHealthy (): Promise<void> {
    const id = `after-${Date.now()}-${Math.random()}`
    await b.mesh.records.put('checks', id, { ok: true })
    await eventually('a still receives records', () => a.mesh.records.get('checks', id) !== undefined)
    assert.equal((await b.mesh.request<{ pong: boolean }>(a.mesh.self().peerId, 'ping', {})).pong, true)
  }

  test('sync protocol: random frames, bad lengths and oversized frames are dropped and counted', async () => {
    a.mesh.handleRpc('ping', () => ({ pong: true }))
    const target = peerIdFromString(a.mesh.self().peerId)
    const before = a.mesh.metrics().dropped.sync
    await fc.assert(fc.asyncProperty(junkArb, async junk => {
      const stream = await raw.dialProtocol(target, SYNC_PROTOCOL)
      await lpStream(stream).write(junk)
      await closeQuietly(stream)
    }), { numRuns: 40 })
    // Well-formed JSON that breaks the schema, for certain.
    const invalid = await raw.dialProtocol(target, SYNC_PROTOCOL)
    await lpStream(invalid).write(enc({ t: 'digest', items: [] }))
    await closeQuietly(invalid)
    // A length prefix far over the frame limit, and a truncated varint.
    for (const bytes of [new Uint8Array([0xff, 0xff, 0xff, 0x7f]), new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])]) {
      const stream = await raw.dialProtocol(target, SYNC_PROTOCOL)
      stream.send(bytes)
      await closeQuietly(stream)
    }
    // Raw bytes without any framing.
    const stream = await raw.dialProtocol(target, SYNC_PROTOCOL)
    stream.send(randomBytes(4096))
    await closeQuietly(stream)
    await eventually('sync drops counted', () => a.mesh.metrics().dropped.sync >= before + 40)
    const reasons = a.mesh.metrics().dropReasons
    assert.ok((reasons['sync.oversized'] ?? 0) >= 1, JSON.stringify(reasons))
    assert.ok((reasons['sync.malformed'] ?? 0) >= 1, JSON.stringify(reasons))
    assert.ok((reasons['sync.invalid'] ?? 0) >= 1, JSON.stringify(reasons))
    await stillHealthy()
  })

  test('rpc protocol: junk requests are dropped and counted, oversized ones too', async () => {
    const target = peerIdFromString(a.mesh.self().peerId)
    const before = a.mesh.metrics().dropped.rpc
    await fc.assert(fc.asyncProperty(junkArb, async junk => {
      const stream = await raw.dialProtocol(target, RPC_PROTOCOL)
      await lpStream(stream).write(junk)
      await closeQuietly(stream)
    }), { numRuns: 40 })
    const big = await raw.dialProtocol(target, RPC_PROTOCOL)
    await lpStream(big, { maxDataLength: 8 * 1024 * 1024 }).write(enc({ t: 'req', method: 'ping', body: 'x'.repeat(2 * 1024 * 1024) }))
    await closeQuietly(big)
    await eventually('rpc drops counted', () => a.mesh.metrics().dropped.rpc >= before + 40)
    assert.ok((a.mesh.metrics().dropReasons['rpc.oversized'] ?? 0) >= 1)
    await stillHealthy()
  })

  test('rpc caller side: a callee answering junk fails the call typed and counts the drop', async () => {
    raw.handle(RPC_PROTOCOL, async (stream) => {
      const lp = lpStream(stream)
      await lp.read()
      await lp.write(enc({ t: 'end', ok: 'maybe' }))
      await closeQuietly(stream)
    })
    // a only dials peers it knows: teach it the raw peer's address through a connection.
    await raw.dial(multiaddr(a.mesh.self().multiaddrs[0]!))
    const before = a.mesh.metrics().dropped.rpc
    await assert.rejects(a.mesh.request(raw.peerId.toString(), 'anything', {}), { name: 'RpcProtocolError' })
    assert.equal(a.mesh.metrics().dropped.rpc, before + 1)
  })

  test('gossip: junk, oversized, spoofed and unsigned messages are dropped and counted', async () => {
    await eventually('the raw peer sees a subscribed to both topics', () =>
      raw.services.pubsub.getSubscribers(HEARTBEAT_TOPIC).length > 0 && raw.services.pubsub.getSubscribers(RECORDS_TOPIC).length > 0)
    const before = a.mesh.metrics()
    let sent = 0
    await fc.assert(fc.asyncProperty(junkArb, fc.constantFrom(HEARTBEAT_TOPIC, RECORDS_TOPIC), async (junk, topic) => {
      // Signed messages are identified by sender and sequence number, so equal junk is sent twice.
      await raw.services.pubsub.publish(topic, junk)
      sent++
    }), { numRuns: 40 })
    // Well-formed JSON that breaks the schema, for certain.
    await raw.services.pubsub.publish(RECORDS_TOPIC, enc({ entries: [] }))
    // Over the heartbeat limit but under gossipsub's own frame limit.
    await raw.services.pubsub.publish(HEARTBEAT_TOPIC, enc({ peerId: raw.peerId.toString(), nodeName: 'big', addrs: [], version: 1, state: 'x'.repeat(200 * 1024) }))
    // Well-formed but claiming to be another node.
    await raw.services.pubsub.publish(HEARTBEAT_TOPIC, enc({ peerId: b.mesh.self().peerId, nodeName: 'fake', addrs: [], version: Number.MAX_SAFE_INTEGER, state: {} }))
    await raw.services.pubsub.publish(RECORDS_TOPIC, enc({ entries: [{ collection: 'vms', id: 'forged', value: 1, deleted: false, hlc: { wall: Date.now(), counter: 0, node: b.mesh.self().peerId } }] }))
    // A record from the far future would drag every clock forward.
    await raw.services.pubsub.publish(RECORDS_TOPIC, enc({ entries: [{ collection: 'vms', id: 'future', value: 1, deleted: false, hlc: { wall: Date.now() + 3_600_000, counter: 0, node: raw.peerId.toString() } }] }))
    await eventually('gossip drops counted', () => a.mesh.metrics().dropped.gossip >= before.dropped.gossip + sent + 4)
    const reasons = a.mesh.metrics().dropReasons
    for (const reason of ['gossip.oversized', 'gossip.spoofed', 'gossip.malformed', 'gossip.invalid', 'gossip.clock-drift']) {
      assert.ok((reasons[reason] ?? 0) >= 1, `${reason} in ${JSON.stringify(reasons)}`)
    }
    assert.equal(a.mesh.member(b.mesh.self().peerId)?.nodeName, 'n1')
    assert.equal(a.mesh.records.get('vms', 'forged'), undefined)
    assert.equal(a.mesh.records.get('vms', 'future'), undefined)

    // Unsigned messages are refused by gossipsub (StrictSign) but counted by corral first.
    await eventually('the unsigned peer sees a subscribed', () => unsignedRaw.services.pubsub.getSubscribers(HEARTBEAT_TOPIC).length > 0)
    await unsignedRaw.services.pubsub.publish(HEARTBEAT_TOPIC, enc({ peerId: unsignedRaw.peerId.toString(), nodeName: 'unsigned', addrs: [], version: 1, state: {} }))
    await eventually('the unsigned message is counted', () => (a.mesh.metrics().dropReasons['gossip.unsigned'] ?? 0) >= 1)
    await stillHealthy()
    assert.ok(a.mesh.members().every(m => m.nodeName !== 'unsigned' && m.nodeName !== 'big'))
  })
})

async function closeQuietly (stream: { close: () => Promise<void>, abort: (err: Error) => void }): Promise<void> {
  try {
    await stream.close()
  } catch (err) {
    stream.abort(err as Error)
  }
}
