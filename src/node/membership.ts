/**
 * The member table and its failure detector. No networking: the mesh feeds it heartbeats,
 * connection events and ping results, and calls tick() on a timer. Status follows the time since
 * a node was last heard from:
 *
 *   alive --(suspectAfterMs silent, or lost connection + failed ping)--> suspect
 *   suspect --(deadAfterMs silent)--> dead
 *   suspect/dead --(heartbeat or successful ping)--> alive
 *
 * The timeouts are for a member that heartbeats every `heartbeatMs`; one that says it heartbeats
 * less often (a large cluster spaces them out, see heartbeatInterval) gets them stretched in proportion.
 */
import type { SafeEmitter } from './emitter.ts'
import { deepFreeze } from './freeze.ts'
import type { HeartbeatMessage } from './wire.ts'
import type { Member, MeshEvents, MemberStatus } from './types.ts'

/** Up to this many members every node heartbeats every heartbeatMs; beyond, less often. */
export const HEARTBEAT_NODES = 10
/** Never more than this many heartbeatMs between two heartbeats, however large the cluster. */
export const MAX_HEARTBEAT_STRETCH = 60

/**
 * How often a node heartbeats in a cluster of `members` (itself included, the dead left out):
 * heartbeatMs up to HEARTBEAT_NODES, then longer with the square of the size. Every heartbeat
 * reaches every node and costs each a few ms of CPU (decryption, decoding, the duplicates gossip
 * sends): N members sending N / stretch heartbeats, each received N times, cost the cluster
 * N² / stretch = HEARTBEAT_NODES² receptions per heartbeatMs whatever its size, where a fixed
 * interval would cost O(N²) (50 nodes on one 2-core machine never converged with one, and a
 * stretch in proportion to N still cost each node ~25 ms of CPU a second). That leaves silence as
 * a slow, last-resort detector in a large cluster: crashes and cut links are found by the members
 * directly connected to the lost one (closed connection, failed ping) and reported to the rest
 * (HeartbeatMessage.lost), who check with a ping of their own.
 */
export function heartbeatInterval (members: number, heartbeatMs: number): number {
  const stretch = Math.min(MAX_HEARTBEAT_STRETCH, Math.max(1, (members / HEARTBEAT_NODES) ** 2))
  return Math.round(heartbeatMs * stretch)
}

export interface MembershipInit {
  selfId: string
  events: SafeEmitter<MeshEvents>
  clock: () => number
  suspectAfterMs: number
  deadAfterMs: number
  /** The heartbeat interval the timeouts above are set for. */
  heartbeatMs: number
}

export interface HeartbeatOutcome {
  /** First time this node is heard of. */
  joined: boolean
  /** The NodeState changed (newer version). */
  updated: boolean
  /** The addresses changed; the dialer should learn them. */
  addrsChanged: boolean
}

export class Membership {
  private readonly table = new Map<string, Member>()
  /** Each member's announced heartbeat interval, where it differs from ours. */
  private readonly every = new Map<string, number>()
  private readonly init: MembershipInit

  constructor (init: MembershipInit) {
    this.init = init
  }

  get (peerId: string): Member | undefined {
    const m = this.table.get(peerId)
    return m === undefined ? undefined : snapshot(m)
  }

  /** Other members (self excluded). */
  list (): Member[] {
    return [...this.table.values()].map(snapshot)
  }

  ids (status?: MemberStatus): string[] {
    const out: string[] = []
    for (const m of this.table.values()) if (status === undefined || m.status === status) out.push(m.peerId)
    return out
  }

  onHeartbeat (hb: HeartbeatMessage): HeartbeatOutcome {
    const outcome: HeartbeatOutcome = { joined: false, updated: false, addrsChanged: false }
    if (hb.peerId === this.init.selfId) return outcome
    const now = this.init.clock()
    const existing = this.table.get(hb.peerId)
    // A light heartbeat (no state) says only "still here": a stranger waits for a full one.
    if (hb.state === undefined && existing === undefined) return outcome
    if (hb.every !== undefined && hb.every > this.init.heartbeatMs) this.every.set(hb.peerId, hb.every)
    else this.every.delete(hb.peerId)
    if (existing === undefined) {
      const member: Member = { ...copyState(hb), status: 'alive', lastSeen: now, statusSince: now, self: false }
      this.table.set(hb.peerId, member)
      this.init.events.emit('member:join', snapshot(member))
      return { joined: true, updated: true, addrsChanged: true }
    }
    existing.lastSeen = Math.max(existing.lastSeen, now)
    // A newer version without its state: the sender repeats full heartbeats after a change.
    if (hb.version > existing.version && hb.state !== undefined) {
      outcome.addrsChanged = !sameList(existing.addrs, hb.addrs)
      Object.assign(existing, copyState(hb))
      if (hb.apiAddress === undefined) delete existing.apiAddress
      outcome.updated = true
    }
    // Revival first, so listeners of 'member:update' see the member alive.
    this.revive(existing, now)
    if (outcome.updated) this.init.events.emit('member:update', snapshot(existing))
    return outcome
  }

  /**
   * A member as a peer describes it (a joining node catching up): a stranger is added as alive
   * (the usual timeouts apply if it is never heard from itself) and a newer state is taken, but
   * hearsay never revives a member or counts as hearing from it.
   */
  onHearsay (hb: HeartbeatMessage): HeartbeatOutcome {
    const outcome: HeartbeatOutcome = { joined: false, updated: false, addrsChanged: false }
    if (hb.peerId === this.init.selfId || hb.state === undefined) return outcome
    const existing = this.table.get(hb.peerId)
    if (existing === undefined) return this.onHeartbeat(hb)
    if (hb.version <= existing.version) return outcome
    outcome.addrsChanged = !sameList(existing.addrs, hb.addrs)
    Object.assign(existing, copyState(hb))
    if (hb.apiAddress === undefined) delete existing.apiAddress
    this.init.events.emit('member:update', snapshot(existing))
    return { ...outcome, updated: true }
  }

  /** A connection opened or a ping answered: the process is there. Unknown peers are ignored. */
  onContact (peerId: string): void {
    const m = this.table.get(peerId)
    if (m === undefined) return
    const now = this.init.clock()
    m.lastSeen = Math.max(m.lastSeen, now)
    this.revive(m, now)
  }

  /**
   * The connection dropped and a direct ping failed: suspect now rather than after the timeout.
   * Returns whether this made an alive member suspect.
   */
  onUnreachable (peerId: string): boolean {
    const m = this.table.get(peerId)
    if (m === undefined || m.status !== 'alive') return false
    this.setStatus(m, 'suspect', this.init.clock())
    return true
  }

  /**
   * Apply the timeouts. Returns the members that are suspect after this tick (to be pinged).
   * `expectedEveryMs` is how often a member whose own heartbeat has not said yet is assumed to
   * heartbeat: the interval this node uses at the cluster's present size. Judged against the base
   * interval instead, every member a node learned of by hearsay (mesh.members) went suspect after
   * 4 s, came back on a ping, and again, until its first heartbeat, up to 25 s later with 50 members.
   */
  tick (expectedEveryMs = this.init.heartbeatMs): string[] {
    const now = this.init.clock()
    const suspects: string[] = []
    for (const m of this.table.values()) {
      const silent = now - m.lastSeen
      const stretch = Math.max(1, (this.every.get(m.peerId) ?? expectedEveryMs) / this.init.heartbeatMs)
      if (silent >= this.init.deadAfterMs * stretch) {
        if (m.status !== 'dead') {
          // Never skip the suspect step: listeners may rely on seeing it first.
          if (m.status === 'alive') this.setStatus(m, 'suspect', now)
          this.setStatus(m, 'dead', now)
        }
      } else if (silent >= this.init.suspectAfterMs * stretch && m.status === 'alive') {
        this.setStatus(m, 'suspect', now)
      }
      if (m.status === 'suspect') suspects.push(m.peerId)
    }
    return suspects
  }

  private revive (m: Member, now: number): void {
    if (m.status !== 'alive') this.setStatus(m, 'alive', now)
  }

  private setStatus (m: Member, status: MemberStatus, now: number): void {
    m.status = status
    m.statusSince = now
    this.init.events.emit(`member:${status}`, snapshot(m))
  }
}

/** Only called with a full heartbeat (one that has its state). */
function copyState (hb: HeartbeatMessage): Omit<HeartbeatMessage, 'every'> & { state: unknown } {
  const out: HeartbeatMessage & { state: unknown } = { peerId: hb.peerId, nodeName: hb.nodeName, addrs: [...hb.addrs], version: hb.version, state: deepFreeze(hb.state) }
  if (hb.apiAddress !== undefined) out.apiAddress = hb.apiAddress
  return out
}

/** A copy of the member's fields; its state is shared, frozen, since readers outnumber changes by far. */
function snapshot (m: Member): Member {
  return { ...m, addrs: [...m.addrs] }
}

function sameList (a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}
