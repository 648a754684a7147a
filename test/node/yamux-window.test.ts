import { test } from 'node:test'
import assert from 'node:assert/strict'
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'
import { windowUpdateCanWait } from '../../src/node/yamux-window.ts'

const WINDOW = 256 * 1024

/** A stream as sendWindowUpdate sees it, recording the frames it sends. */
function fakeStream (state: StreamState, capacity: number): { stream: YamuxStream, frames: Array<{ type: number, flag: number, length: number }> } {
  const frames: Array<{ type: number, flag: number, length: number }> = []
  const stream = Object.assign(Object.create(YamuxStream.prototype), {
    state, recvWindow: WINDOW, recvWindowCapacity: capacity, maxStreamWindowSize: 16 * 1024 * 1024,
    epochStart: 0, getRTT: () => -1, streamId: 1,
    sendFrame: (header: { type: number, flag: number, length: number }) => { frames.push(header) }
  }) as YamuxStream
  return { stream, frames }
}

test('an established stream with over half its window left sends no window update yet', () => {
  const { stream, frames } = fakeStream(StreamState.Established, WINDOW - 1200)
  stream.sendWindowUpdate()
  assert.deepEqual(frames, [])
})

test('once half the window is used the update goes out, restoring the whole window', () => {
  const { stream, frames } = fakeStream(StreamState.Established, WINDOW / 2 - 1)
  stream.sendWindowUpdate()
  assert.equal(frames.length, 1)
  assert.equal(frames[0]!.length, WINDOW / 2 + 1)
  assert.equal((stream as unknown as { recvWindowCapacity: number }).recvWindowCapacity, WINDOW)
})

test('a stream being opened still acknowledges at once, whatever its window', () => {
  const { stream, frames } = fakeStream(StreamState.SYNReceived, WINDOW - 10)
  stream.sendWindowUpdate()
  assert.equal(frames.length, 1)
  assert.equal(frames[0]!.flag & 2, 2, 'the ACK flag')
  assert.equal(windowUpdateCanWait({ state: StreamState.Paused, recvWindow: WINDOW, recvWindowCapacity: WINDOW - 10 }), false, 'a paused stream keeps yamux’s own handling')
})

test('a window update that cannot be written (the connection closed) aborts its stream instead of throwing', () => {
  const { stream } = fakeStream(StreamState.Init, WINDOW)
  const closed = new Error('Cannot write to a stream that is closed')
  const aborted: Error[] = []
  Object.assign(stream, { sendFrame: () => { throw closed }, abort: (err: Error) => { aborted.push(err) } })
  assert.doesNotThrow(() => { stream.sendWindowUpdate() })
  assert.deepEqual(aborted, [closed])
})
