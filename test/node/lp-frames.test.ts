import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import type { Stream } from '@libp2p/interface'
import { FrameReader, FrameWriter } from '../../src/node/lp-frames.ts'

/** Frames of sizes that need 1-, 2- and 3-byte length prefixes, with recognisable contents. */
function sampleFrames (): Uint8Array[] {
  return [1, 0, 5, 127, 128, 300, 16_383, 16_384, 20_000, 3].map((size, i) => new Uint8Array(size).fill(i + 1))
}

function encode (frames: Uint8Array[]): Uint8Array {
  const parts: number[] = []
  for (const frame of frames) {
    let n = frame.byteLength
    while (n >= 0x80) {
      parts.push((n & 0x7f) | 0x80)
      n = Math.floor(n / 0x80)
    }
    parts.push(n)
    parts.push(...frame)
  }
  return Uint8Array.from(parts)
}

function readAll (reader: FrameReader, chunks: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = []
  for (const chunk of chunks) {
    const broken = reader.push(chunk, frame => { out.push(Uint8Array.from(frame)) })
    assert.equal(broken, undefined)
  }
  return out
}

describe('FrameReader', () => {
  test('gives the same frames however the bytes are cut into chunks', () => {
    const frames = sampleFrames()
    const bytes = encode(frames)
    // Every cut into two chunks, and three-chunk cuts around the prefixes.
    for (let cut = 0; cut <= bytes.byteLength; cut += cut < 400 ? 1 : 997) {
      assert.deepEqual(readAll(new FrameReader(1024 * 1024), [bytes.subarray(0, cut), bytes.subarray(cut)]), frames, `cut at ${cut}`)
      const second = Math.min(bytes.byteLength, cut + 2)
      assert.deepEqual(readAll(new FrameReader(1024 * 1024), [bytes.subarray(0, cut), bytes.subarray(cut, second), bytes.subarray(second)]), frames)
    }
    // One byte at a time.
    assert.deepEqual(readAll(new FrameReader(1024 * 1024), Array.from(bytes, b => Uint8Array.of(b))), frames)
  })

  test('a length over the limit, or a prefix longer than the limit needs, breaks the framing for good', () => {
    const over = new FrameReader(1000)
    let got = 0
    assert.equal(over.push(encode([new Uint8Array(1001)]), () => { got++ }), 'oversized')
    assert.equal(over.push(encode([new Uint8Array(1)]), () => { got++ }), 'oversized')
    assert.equal(got, 0)
    // 1000 needs two prefix bytes: a second one that asks for a third is refused before the length is known.
    assert.equal(new FrameReader(1000).push(Uint8Array.of(0x80, 0x80), () => { got++ }), 'oversized')
    assert.equal(new FrameReader(1000).push(Uint8Array.of(0x80), () => { got++ }), undefined)
    assert.equal(new FrameReader(1000).push(Uint8Array.of(0xe8, 0x07), () => { got++ }), undefined)
    assert.equal(got, 0)
  })
})

/** A stream stand-in: records what is sent, says "full" when told to, drains when the test says. */
class FakeStream {
  sent: Uint8Array[] = []
  full = false
  throwOnSend = false
  private drain: PromiseWithResolvers<void> | undefined

  send (data: Uint8Array): boolean {
    if (this.throwOnSend) throw new Error('StreamStateError: cannot write to a closed stream')
    this.sent.push(Uint8Array.from(data))
    return !this.full
  }

  async onDrain (): Promise<void> {
    this.drain ??= Promise.withResolvers<void>()
    await this.drain.promise
  }

  drained (): void {
    this.full = false
    const d = this.drain
    this.drain = undefined
    d?.resolve()
  }

  async close (): Promise<void> {}
}

const turn = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

describe('FrameWriter', () => {
  test('frames written in one turn go out whole and in order, together', async () => {
    const stream = new FakeStream()
    const writer = new FrameWriter(stream as unknown as Stream, { onError: err => { throw err } })
    const frames = sampleFrames()
    for (const frame of frames) assert.equal(writer.write(frame), true)
    await turn()
    // 36 KiB of frames: under one batch, so one send.
    assert.equal(stream.sent.length, 1)
    assert.deepEqual(readAll(new FrameReader(1024 * 1024), stream.sent), frames)
  })

  test('nothing is handed to a stream that asked for a drain until it drains; then the rest goes, in order', async () => {
    const stream = new FakeStream()
    let idle = 0
    const writer = new FrameWriter(stream as unknown as Stream, { onError: err => { throw err }, onIdle: () => { idle++ } })
    stream.full = true
    writer.write(Uint8Array.of(1))
    await turn()
    assert.equal(stream.sent.length, 1)
    assert.equal(writer.blocked, true)
    for (let i = 2; i <= 50; i++) writer.write(Uint8Array.of(i))
    await turn()
    assert.equal(stream.sent.length, 1, 'no send while the stream needs a drain')
    assert.equal(writer.queuedBytes, 49)
    assert.equal(idle, 0)
    stream.drained()
    await turn()
    assert.equal(writer.blocked, false)
    assert.equal(writer.queuedBytes, 0)
    assert.ok(idle >= 1)
    assert.deepEqual(readAll(new FrameReader(1024), stream.sent).map(f => f[0]), Array.from({ length: 50 }, (_, i) => i + 1))
  })

  test('many frames are sent in batches of bounded size, still whole and in order', async () => {
    const stream = new FakeStream()
    const writer = new FrameWriter(stream as unknown as Stream, { onError: err => { throw err } })
    const frames = Array.from({ length: 40 }, (_, i) => new Uint8Array(20_000).fill(i))
    for (const frame of frames) writer.write(frame)
    await turn()
    assert.ok(stream.sent.length > 1)
    assert.ok(stream.sent.every(chunk => chunk.byteLength < 300 * 1024))
    assert.deepEqual(readAll(new FrameReader(1024 * 1024), stream.sent), frames)
  })

  test('a stream that refuses a write fails the writer once; later writes are refused', async () => {
    const stream = new FakeStream()
    const errors: Error[] = []
    const writer = new FrameWriter(stream as unknown as Stream, { onError: err => { errors.push(err) } })
    stream.throwOnSend = true
    writer.write(Uint8Array.of(1))
    writer.write(Uint8Array.of(2))
    await turn()
    assert.equal(errors.length, 1)
    assert.equal(writer.write(Uint8Array.of(3)), false)
  })
})
