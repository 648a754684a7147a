import type { Duplex } from 'node:stream'
import { fastReadOf } from './fast-read.ts'

export interface SpliceResult {
  /** Bytes from a to b, and from b to a. */
  aToB: number
  bToA: number
  /** The first error either side raised, if any. */
  error?: Error
}

/**
 * Joins two byte streams both ways, with backpressure, until both directions have ended and been
 * flushed, or either side fails or is destroyed; then both are destroyed and `done` gets the byte
 * counts. An end on one side is passed on as an end (half-close), as TCP does. Sockets should be
 * made with allowHalfOpen so a client's end does not cut the answer still on its way.
 */
export function splice (a: Duplex, b: Duplex, done: (result: SpliceResult) => void): void {
  const result: SpliceResult = { aToB: 0, bToA: 0 }
  let finished = false
  const state = new Map<Duplex, { readDone: boolean, writeDone: boolean }>([
    [a, { readDone: false, writeDone: false }],
    [b, { readDone: false, writeDone: false }]
  ])
  const finish = (): void => {
    if (finished) return
    finished = true
    a.destroy()
    b.destroy()
    done(result)
  }
  const settled = (): boolean => [...state.values()].every(s => s.readDone && s.writeDone)
  const oneWay = (from: Duplex, to: Duplex, count: (n: number) => void): void => {
    const fast = fastReadOf(from)
    if (fast != null) {
      fast.attach(to, count)
    } else {
      from.on('data', (chunk: Buffer) => {
        count(chunk.length)
        if (!to.write(chunk)) from.pause()
      })
      to.on('drain', () => { from.resume() })
    }
    from.once('end', () => {
      (state.get(from) as { readDone: boolean }).readDone = true
      to.end(() => {
        (state.get(to) as { writeDone: boolean }).writeDone = true
        if (settled()) finish()
      })
    })
  }
  oneWay(a, b, n => { result.aToB += n })
  oneWay(b, a, n => { result.bToA += n })
  for (const side of [a, b]) {
    side.once('error', (err: Error) => {
      result.error ??= err
      finish()
    })
    // Closed before both of its own directions were done: reset, destroyed, or the peer vanished.
    side.once('close', () => {
      const own = state.get(side) as { readDone: boolean, writeDone: boolean }
      if (!own.readDone || !own.writeDone) finish()
    })
    if (fastReadOf(side) == null) side.resume()
  }
}
