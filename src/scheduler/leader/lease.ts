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
