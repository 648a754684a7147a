/**
 * Who leads the scheduler: pure rules over the membership view and the lease record. Safety never
 * rests on this (hosts admit reservations themselves); it only keeps one leader in a healthy
 * cluster and a new one within a lease of the old one's loss.
 */
import { heartbeatInterval } from '../../node/index.ts'

export interface Lease {
  leader: string
  term: number
  /** Writer's wall clock, ms. */
  expiresAt: number
}

export interface Candidate {
  peerId: string
  status: 'alive' | 'suspect' | 'dead'
}

export interface LeaseDecision {
  /** The leader this node recognises now (undefined: none yet). */
  leader?: string
  term: number
  /** This node should write the lease (take it over or renew it). */
  write?: Lease
}

export function decideLeader (self: string, members: Candidate[], lease: Lease | undefined, now: number, leaseMs: number): LeaseDecision {
  const alive = new Set(members.filter(m => m.status === 'alive').map(m => m.peerId))
  alive.add(self)
  const holderValid = lease != null && lease.expiresAt > now && alive.has(lease.leader)
  if (holderValid) {
    // A valid lease is respected, even by a node with a lower id: no flapping after a heal.
    return lease.leader === self
      ? { leader: self, term: lease.term, write: { leader: self, term: lease.term, expiresAt: now + leaseMs } }
      : { leader: lease.leader, term: lease.term }
  }
  // No valid lease: the alive member with the lowest peer id takes it, in a new term.
  const next = [...alive].sort()[0]
  const term = (lease?.term ?? 0) + 1
  if (next === self) return { leader: self, term, write: { leader: self, term, expiresAt: now + leaseMs } }
  return { leader: undefined, term: lease?.term ?? 0 }
}

/**
 * The lease's timings for a cluster of this many alive members: as configured up to 10, then
 * longer exactly as heartbeats space out (heartbeatInterval: with the square of the size, 25 times
 * longer with 50 members). Each renewal is gossiped to every node, so in a large cluster it is
 * traffic every node pays for, and on busy machines a deadline a starved event loop misses, each
 * miss changing leader. A crashed or cut-off leader is still replaced at once: the lease is only
 * respected while its holder is alive, and a lost member is reported within a second or so.
 */
export function leaseTimings (aliveMembers: number, leaseMs: number, renewMs: number): { leaseMs: number, renewMs: number } {
  const scale = heartbeatInterval(aliveMembers, 1000) / 1000
  return { leaseMs: Math.round(leaseMs * scale), renewMs: Math.round(renewMs * scale) }
}

/**
 * Whether the holder should renew its own lease now: once renewMs has passed since the last
 * renewal (half a tick early, since the timer that asks runs every configured renewMs).
 */
export function renewalDue (lease: Lease, now: number, leaseMs: number, renewMs: number, tickMs: number): boolean {
  return lease.expiresAt - now <= leaseMs - renewMs + tickMs / 2
}
