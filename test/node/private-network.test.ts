import { after, test } from 'node:test'
import assert from 'node:assert/strict'
import { MeshFixture, eventually } from './fixture.ts'
import { generateClusterKey } from '../../src/node/index.ts'

const fixture = new MeshFixture()
after(async () => { await fixture.cleanup() })

test('a node with another cluster key cannot connect, and both sides say why', async () => {
  const a = await fixture.joined()
  const b = await fixture.joined()
  await eventually('a and b are members of each other', () => a.mesh.members().length === 2 && b.mesh.members().length === 2)

  const stranger = await fixture.node({ clusterKey: generateClusterKey(), bootstrap: a.mesh.self().multiaddrs })
  await stranger.mesh.start()
  await assert.rejects(stranger.mesh.connect(a.mesh.self().multiaddrs[0]!), { name: 'ClusterKeyMismatchError' })

  await eventually('a counted the refused connection', () => a.mesh.metrics().privateNetworkRejected > 0)
  await eventually('the stranger counted it too', () => stranger.mesh.metrics().privateNetworkRejected > 0)
  const plain = /peer \/ip4\/127\.0\.0\.1\/tcp\/\d+(\/p2p\/\w+)? failed the private-network handshake: the cluster keys differ/
  assert.ok(a.logs.some(line => plain.test(line)), 'a logs the mismatch plainly')
  assert.ok(stranger.logs.some(line => plain.test(line)), 'the stranger logs the mismatch plainly')

  // Give gossip a few heartbeats: nothing leaks across.
  await new Promise(resolve => setTimeout(resolve, 500))
  assert.equal(stranger.mesh.members().length, 1)
  assert.ok(a.mesh.members().every(m => m.peerId !== stranger.mesh.self().peerId))
  assert.ok(b.mesh.members().every(m => m.peerId !== stranger.mesh.self().peerId))
})
