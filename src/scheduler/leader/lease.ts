/**
 * Who leads the scheduler: pure rules over the membership view and the lease record. Safety never
 * rests on this (hosts admit reservations themselves); it only keeps one leader in a healthy
 * cluster and a new one within a lease of the old one's loss.
 */
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

/** Up to this many alive members the lease keeps its configured timings; beyond, they stretch. */
export const LEASE_SCALE_MEMBERS = 10

/**
 * The lease's timings for a cluster of this many alive members: as configured up to
 * LEASE_SCALE_MEMBERS, then longer in proportion, as heartbeats are (src/node/mesh-node.ts). In a
 * large cluster on busy machines a renewal every 500 ms, gossiped to every node, is both traffic and
 * a deadline a starved event loop misses, and each miss changes leader. A crashed leader is still
 * replaced at once: the lease is only respected while its holder is alive.
 */
export function leaseTimings (aliveMembers: number, leaseMs: number, renewMs: number): { leaseMs: number, renewMs: number } {
  const scale = Math.max(1, aliveMembers / LEASE_SCALE_MEMBERS)
  return { leaseMs: Math.round(leaseMs * scale), renewMs: Math.round(renewMs * scale) }
}

/**
 * Whether the holder should renew its own lease now: once renewMs has passed since the last
 * renewal (half a tick early, since the timer that asks runs every configured renewMs).
 */
export function renewalDue (lease: Lease, now: number, leaseMs: number, renewMs: number, tickMs: number): boolean {
  return lease.expiresAt - now <= leaseMs - renewMs + tickMs / 2
}
