import type { Logger } from 'pino'
import type { MeshNode } from '../../node/index.ts'
import { decideLeader, leaseTimings, renewalDue, type Lease } from './lease.ts'

export const LEASE_COLLECTION = 'scheduler-lease'
const LEASE_ID = 'leader'

/** The node the lease record this node holds names as leader (whether or not it has expired). */
export function leaseHolder (mesh: MeshNode): string | undefined {
  return mesh.records.get<Lease>(LEASE_COLLECTION, LEASE_ID)?.leader
}

export interface LeaderInfo {
  peerId: string
  nodeName: string
  term: number
  /** Local wall time this node first recognised this leader in this term. */
  since: string
}

export interface LeaderElectionInit {
  /** How long a lease lasts without renewal; the leader renews it every renewMs. */
  leaseMs: number
  renewMs: number
}

/**
 * Runs the lease: the leader renews it, everyone re-reads it on every tick and membership change.
 * Dispatches 'leader' (CustomEvent<LeaderInfo | undefined>) when the recognised leader changes.
 */
export class LeaderElection extends EventTarget {
  private readonly mesh: MeshNode
  private readonly logger: Logger
  private readonly init: LeaderElectionInit
  private readonly clock: () => number
  private timer?: NodeJS.Timeout
  private current?: LeaderInfo
  private readonly onChange = (): void => { void this.tick() }

  constructor (components: { mesh: MeshNode, logger: Logger, clock: () => number }, init: LeaderElectionInit) {
    super()
    this.mesh = components.mesh
    this.logger = components.logger
    this.clock = components.clock
    this.init = init
  }

  async start (): Promise<void> {
    this.mesh.on('member:dead', this.onChange)
    this.mesh.on('member:suspect', this.onChange)
    this.mesh.on('member:join', this.onChange)
    this.timer = setInterval(this.onChange, this.init.renewMs)
    await this.tick()
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    this.mesh.off('member:dead', this.onChange)
    this.mesh.off('member:suspect', this.onChange)
    this.mesh.off('member:join', this.onChange)
  }

  leader (): LeaderInfo | undefined {
    return this.current
  }

  isLeader (): boolean {
    return this.current?.peerId === this.mesh.self().peerId
  }

  private async tick (): Promise<void> {
    const self = this.mesh.self().peerId
    const lease = this.mesh.records.get<Lease>(LEASE_COLLECTION, LEASE_ID)
    const members = this.mesh.members()
    const now = this.clock()
    const { leaseMs, renewMs } = leaseTimings(members.filter(m => m.status === 'alive').length, this.init.leaseMs, this.init.renewMs)
    const decision = decideLeader(self, members, lease, now, leaseMs)
    // Taking the lease is written at once; renewing it only when due (see leaseTimings).
    const renewal = lease != null && decision.write != null && lease.leader === self && lease.term === decision.write.term
    if (decision.write != null && (!renewal || renewalDue(lease, now, leaseMs, renewMs, this.init.renewMs))) {
      await this.mesh.records.put(LEASE_COLLECTION, LEASE_ID, decision.write).catch((err: Error) => this.logger.warn({ err: err.message }, 'could not write the scheduler lease'))
    }
    const changed = decision.leader !== this.current?.peerId || decision.term !== this.current?.term
    if (!changed) return
    const member = decision.leader != null ? this.mesh.member(decision.leader) : undefined
    this.current = decision.leader == null
      ? undefined
      : { peerId: decision.leader, nodeName: member?.nodeName ?? decision.leader, term: decision.term, since: new Date(this.clock()).toISOString() }
    this.logger.info({ leader: this.current?.nodeName, term: decision.term, self: decision.leader === self }, 'scheduler leader changed')
    this.dispatchEvent(new CustomEvent('leader', { detail: this.current }))
  }
}
