/**
 * Hybrid logical clock (Kulkarni et al.): timestamps that follow wall time when clocks agree and
 * still order causally related writes when they do not. Ties between nodes are broken by node id,
 * so every pair of timestamps is totally ordered and every node picks the same winner.
 *
 * The functions are pure; `HybridClock` only keeps the last timestamp and reads the wall clock it is
 * given, so tests pass a fake clock.
 */

export interface Timestamp {
  /** Milliseconds since the epoch, the largest wall time this clock has seen. */
  wall: number
  /** Orders events within the same `wall` millisecond. */
  counter: number
  /** The peer id of the node that issued the timestamp; the final tiebreak. */
  node: string
}

/** Negative when a orders before b, positive after, 0 only for the same (wall, counter, node). */
export function compareTimestamps (a: Timestamp, b: Timestamp): number {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1
  if (a.node === b.node) return 0
  return a.node < b.node ? -1 : 1
}

/** The timestamp for a local event, given the previous one and the physical time now. */
export function tick (last: Timestamp, physicalNow: number): Timestamp {
  if (physicalNow > last.wall) return { wall: physicalNow, counter: 0, node: last.node }
  return { wall: last.wall, counter: last.counter + 1, node: last.node }
}

/** The timestamp after receiving `remote`: later than both it and everything issued here. */
export function receive (last: Timestamp, remote: Timestamp, physicalNow: number): Timestamp {
  const wall = Math.max(last.wall, remote.wall, physicalNow)
  let counter: number
  if (wall === last.wall && wall === remote.wall) counter = Math.max(last.counter, remote.counter) + 1
  else if (wall === last.wall) counter = last.counter + 1
  else if (wall === remote.wall) counter = remote.counter + 1
  else counter = 0
  return { wall, counter, node: last.node }
}

export interface HybridClockInit {
  /** This node's id, written into every timestamp. */
  node: string
  /** The physical clock; Date.now unless a test gives its own. */
  now?: () => number
  /**
   * A remote timestamp further ahead of our wall clock than this is refused, so one node with a
   * wrong clock cannot drag every other clock into the future.
   */
  maxDriftMs?: number
}

export class HybridClock {
  private last: Timestamp
  private readonly physical: () => number
  readonly maxDriftMs: number

  constructor (init: HybridClockInit) {
    this.physical = init.now ?? Date.now
    this.maxDriftMs = init.maxDriftMs ?? 60_000
    this.last = { wall: 0, counter: 0, node: init.node }
  }

  /** A fresh timestamp for a local write. */
  now (): Timestamp {
    this.last = tick(this.last, this.physical())
    return this.last
  }

  /**
   * Merge a timestamp seen on the wire. Returns false (and changes nothing) when it is too far in
   * the future to trust.
   */
  update (remote: Timestamp): boolean {
    const physicalNow = this.physical()
    if (remote.wall > physicalNow + this.maxDriftMs) return false
    this.last = receive(this.last, remote, physicalNow)
    return true
  }

  /** Whether `remote` would be accepted by update(). */
  acceptable (remote: Timestamp): boolean {
    return remote.wall <= this.physical() + this.maxDriftMs
  }
}
