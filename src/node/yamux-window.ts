/**
 * Yamux window updates with hysteresis. @chainsafe/libp2p-yamux (8.0.1) answers every data frame
 * it receives with a window-update frame, so every gossip message, rpc frame and heartbeat costs a
 * second frame back: one more noise encryption, cluster-key encryption and socket write on the
 * receiver and one more frame to decode on the sender (about 7% of a busy node's CPU). go-yamux and
 * rust-yamux send an update once half the receive window has been used, which keeps the sender
 * from ever stalling (half a window is still open when the update leaves) and is what this does:
 * for an established stream with more than half its window left, no update is sent yet.
 * Opening (SYN/ACK), a paused stream and the window's growth after a fast epoch stay as they are.
 *
 * It also keeps a closed connection from killing the process: yamux sends a new stream's opening
 * window update from a microtask (muxer.newStream), and when the connection has closed in between
 * (seen under load while 50 nodes joined), the write throws StreamStateError there, uncaught. The
 * update now aborts just that stream with the error instead.
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream'

interface WindowFields { state: StreamState, recvWindow: number, recvWindowCapacity: number, abort: (err: Error) => void }

const proto = YamuxStream.prototype as unknown as { sendWindowUpdate: (this: WindowFields) => void, windowHysteresis?: true }

/** True if the update may wait: the stream is established and over half its window is unused. */
export function windowUpdateCanWait (stream: Omit<WindowFields, 'abort'>): boolean {
  return stream.state === StreamState.Established && stream.recvWindowCapacity > stream.recvWindow / 2
}

if (proto.windowHysteresis !== true) {
  const sendWindowUpdate = proto.sendWindowUpdate
  proto.sendWindowUpdate = function (this: WindowFields): void {
    if (windowUpdateCanWait(this)) return
    try {
      sendWindowUpdate.call(this)
    } catch (err) {
      this.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }
  proto.windowHysteresis = true
}
