import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import type { Duplex } from 'node:stream'
import { PeerUnavailableError } from '../../src/node/index.ts'
import { MeshFixture, eventually, type TestNode } from './fixture.ts'

// Raw byte streams between two mesh nodes (what the proxy carries TCP connections over).
const PROTOCOL = '/corral/test-bytes/1.0.0'
const fx = new MeshFixture()
let a: TestNode
let b: TestNode

before(async () => {
  a = await fx.node()
  await a.mesh.start()
  b = await fx.joined()
  await eventually('the two nodes know each other', () => a.mesh.members().length === 2 && b.mesh.members().length === 2)
})
after(async () => { await fx.cleanup() })

async function collect (stream: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

test('a stream carries bytes both ways, and each side ends on its own (half-close)', async () => {
  let served: Promise<string> | undefined
  await b.mesh.handleStream(PROTOCOL, (stream, peerId) => {
    served = (async () => {
      const request = (await collect(stream)).toString()
      // Our reading side has ended; the writing side is still open and answers.
      stream.end(`${request.toUpperCase()} from ${peerId === a.mesh.self().peerId ? 'a' : 'someone else'}`)
      return request
    })()
  })
  const stream = await a.mesh.openStream(b.mesh.self().peerId, PROTOCOL)
  stream.end('hello over the mesh')
  const answer = (await collect(stream)).toString()
  assert.equal(answer, 'HELLO OVER THE MESH from a')
  assert.equal(await served, 'hello over the mesh')
  await eventually('the stream closes', () => stream.destroyed)
})

test('64 MiB through a slow reader: nothing lost, and the writer is held back instead of buffering it all', async () => {
  const total = 64 * 1024 * 1024
  let receiver: Duplex | undefined
  await b.mesh.handleStream(PROTOCOL, stream => { receiver = stream })
  const stream = await a.mesh.openStream(b.mesh.self().peerId, PROTOCOL)
  const chunk = Buffer.alloc(256 * 1024)
  for (let i = 0; i < chunk.length; i++) chunk[i] = i % 251
  const sent = createHash('sha256')
  let written = 0
  let blocked = false
  const writing = (async () => {
    while (written < total) {
      sent.update(chunk)
      written += chunk.length
      if (!stream.write(chunk)) {
        blocked = true
        await new Promise(resolve => stream.once('drain', resolve))
      }
    }
    stream.end()
  })()
  await eventually('the receiving side has the stream', () => receiver != null)
  // Nobody reads for a while: the sender must be told to wait (backpressure), and it must not
  // have pushed the whole payload into memory.
  await eventually('the writer is held back', () => blocked)
  assert.ok(written < total, `the writer got rid of all ${total} bytes while nobody read`)
  const got = createHash('sha256')
  let received = 0
  for await (const part of receiver as Duplex) {
    got.update(part as Buffer)
    received += (part as Buffer).length
  }
  await writing
  assert.equal(received, total)
  assert.equal(got.digest('hex'), sent.digest('hex'))
})

test('opening a stream to an unknown peer or an unserved protocol fails with PeerUnavailableError', async () => {
  await assert.rejects(a.mesh.openStream('12D3KooWLtbsDJ1SVD8ZtHWDkmGwDMNGS8NTzBo1xxVTvpazudHv', PROTOCOL), PeerUnavailableError)
  await b.mesh.unhandleStream(PROTOCOL)
  await assert.rejects(a.mesh.openStream(b.mesh.self().peerId, PROTOCOL), (err: Error) => {
    assert.equal(err.name, 'PeerUnavailableError')
    assert.match(err.message, /test-bytes/)
    return true
  })
})

test('destroying one end resets the other instead of leaving it open', async () => {
  let receiver: Duplex | undefined
  await b.mesh.handleStream(PROTOCOL, stream => { receiver = stream; stream.on('error', () => undefined) })
  const stream = await a.mesh.openStream(b.mesh.self().peerId, PROTOCOL)
  stream.write('x')
  await eventually('the receiving side has the stream', () => receiver != null)
  stream.destroy()
  await eventually('the other end is closed too', () => (receiver as Duplex).destroyed)
})
