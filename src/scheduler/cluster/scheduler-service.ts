import type { Logger } from 'pino'
import type { Member, MeshNode } from '../../node/index.ts'
import type { VmRecord } from '../host/vm-record.ts'
import { place, type PlacementHost, type PlacementPolicy, type PlacementRejection, type PlacementResult } from '../placement/index.ts'
import type { LeaderElection } from '../leader/leader-election.ts'
import { queueOrder, type PendingVm } from './pending.ts'
import { hostsSnapshot } from './snapshot.ts'
import { asHostState, type PublishedHostState } from './published-state.ts'
import type { StatePublisher } from './state-publisher.ts'

export const SCHED_RPC = {
  submit: 'sched.submit',
  cancel: 'sched.cancel',
  admit: 'host.admit'
} as const

export type SubmitOutcome =
  | { outcome: 'placed', host: string, peerId: string, vm: VmRecord }
  | { outcome: 'queued', position: number, reason: string }
  | { outcome: 'rejected', reason: string, rejected: PlacementRejection[] }
  | { outcome: 'not-leader', leader?: string }

export interface SchedulerComponents {
  mesh: MeshNode
  election: LeaderElection
  publisher: StatePublisher
  logger: Logger
  clock: () => number
}

/** How often the leader retries its queue even without news (capacity may free silently). */
const RETRY_EVERY_MS = 500

/**
 * The leader's half of scheduling: a priority queue, placement on a snapshot of the hosts, and
 * admission by the chosen host, trying the next candidate when one refuses. Only the host decides
 * whether it has room; the leader only chooses, so two leaders can cost a retry but never overfill.
 */
export class SchedulerService {
  private readonly c: SchedulerComponents
  private readonly policy: PlacementPolicy
  private readonly queue = new Map<string, PendingVm>()
  /** Requests already placed, so a re-submission is answered, not placed twice. */
  private readonly placed = new Map<string, { host: string, peerId: string, vm: VmRecord }>()
  private readonly rejected = new Map<string, { reason: string, rejected: PlacementRejection[] }>()
  private running: Promise<void> = Promise.resolve()
  private timer?: NodeJS.Timeout
  private readonly onMember = (): void => { if (this.queue.size > 0) void this.drainSoon() }
  /**
   * A leader that loses the lease forgets its queue: the gateways keep every request and re-submit
   * it to the new leader, and a stale copy here would be placed a second time (or after its
   * deletion, which is only sent to the leader of the moment) should this node lead again.
   */
  private readonly onLeader = (): void => { if (!this.c.election.isLeader()) this.queue.clear() }

  constructor (components: SchedulerComponents, policy: PlacementPolicy) {
    this.c = components
    this.policy = policy
  }

  start (): void {
    this.c.mesh.handleRpc<PendingVm>(SCHED_RPC.submit, async body => await this.submit(body))
    this.c.mesh.handleRpc<{ id: string }>(SCHED_RPC.cancel, async ({ id }) => {
      this.queue.delete(String(id))
      // A pass under way may be placing it right now: answer once it is over, with whether it did.
      await this.running
      return { cancelled: true, placed: this.placed.has(String(id)) }
    })
    this.c.mesh.on('member:update', this.onMember)
    this.c.election.addEventListener('leader', this.onLeader)
    this.timer = setInterval(this.onMember, RETRY_EVERY_MS)
  }

  stop (): void {
    clearInterval(this.timer)
    this.c.mesh.off('member:update', this.onMember)
    this.c.election.removeEventListener('leader', this.onLeader)
    this.c.mesh.unhandleRpc(SCHED_RPC.submit)
    this.c.mesh.unhandleRpc(SCHED_RPC.cancel)
  }

  /** Takes a request into the queue (or recognises it) and answers where it stands now. */
  async submit (pending: PendingVm): Promise<SubmitOutcome> {
    if (!this.c.election.isLeader()) return { outcome: 'not-leader', leader: this.c.election.leader()?.peerId }
    const done = this.placed.get(pending.id)
    if (done != null) return { outcome: 'placed', ...done }
    const refused = this.rejected.get(pending.id)
    if (refused != null) return { outcome: 'rejected', ...refused }
    this.queue.set(pending.id, { ...pending })
    await this.drainSoon()
    const placed = this.placed.get(pending.id)
    if (placed != null) return { outcome: 'placed', ...placed }
    const rejected = this.rejected.get(pending.id)
    if (rejected != null) return { outcome: 'rejected', ...rejected }
    const entry = this.queue.get(pending.id)
    return { outcome: 'queued', position: this.position(pending.id), reason: entry?.reason ?? 'waiting for capacity' }
  }

  private position (id: string): number {
    return [...this.queue.values()].sort(queueOrder).findIndex(p => p.id === id) + 1
  }

  /** One drain at a time; callers wait for the one that includes their request. */
  private async drainSoon (): Promise<void> {
    this.running = this.running.then(async () => await this.drain()).catch((err: Error) => this.c.logger.error({ err: err.message }, 'scheduling pass failed'))
    await this.running
  }

  private async drain (): Promise<void> {
    if (!this.c.election.isLeader() || this.queue.size === 0) return
    const now = this.c.clock()
    const self = this.c.mesh.self().peerId
    const members = this.c.mesh.members()
    const own = this.c.publisher.current()
    const hosts = hostsSnapshot(members, { peerId: self, state: own })
    const alive = new Set(members.filter(m => m.status === 'alive').map(m => m.peerId)).add(self)
    const running = runningVms(members, self, own)
    let blocked = false
    for (const pending of [...this.queue.values()].sort(queueOrder)) {
      // The lease can pass to another node while this pass waits on hosts: stop placing at once.
      if (!this.c.election.isLeader()) return
      // Cancelled while this pass waited on hosts.
      if (!this.queue.has(pending.id)) continue
      if (pending.deadline <= now) {
        this.queue.delete(pending.id)
        continue
      }
      // Placed already, by another leader (the other side of a partition, or before a change of
      // leader): remember where, never place it again.
      const there = running.get(pending.id)
      if (there != null) {
        this.queue.delete(pending.id)
        this.placed.set(pending.id, there)
        continue
      }
      // Only the gateway that accepted a request may have it placed: cut off from this node, it
      // re-submits to the leader on its side, and a copy placed here too would run twice.
      if (!alive.has(pending.gateway)) {
        this.queue.delete(pending.id)
        continue
      }
      // Strict order within the queue: a request that cannot run yet holds back the ones behind it,
      // so a big high-priority VM is not starved by a stream of small ones. Those behind it are
      // still refused at once if no host could ever take them, rather than wait out their timeout.
      if (blocked) {
        this.rejectIfNeverFits(pending, hosts)
        continue
      }
      const outcome = await this.placeOne(pending, hosts)
      if (outcome === 'wait') blocked = true
    }
  }

  /** Would it fit anywhere if every host were empty? If not, waiting will never help: refuse it. */
  private rejectIfNeverFits (pending: PendingVm, hosts: PlacementHost[], now?: Extract<PlacementResult, { placed: false }>): boolean {
    const empty = hosts.map(h => ({ ...h, free: { cpus: h.capacity.cpus, memoryMiB: h.capacity.memoryMiB, diskMiB: h.capacity.diskMiB } }))
    const ever = place(pending.request, empty, this.policy)
    if (ever.placed) return false
    const result = now ?? ever
    this.queue.delete(pending.id)
    this.rejected.set(pending.id, { reason: result.reason, rejected: result.rejected })
    this.c.logger.info({ vm: pending.id, reason: result.reason }, 'request can never be placed')
    return true
  }

  private async placeOne (pending: PendingVm, hosts: PlacementHost[]): Promise<'placed' | 'wait' | 'rejected'> {
    const result = place(pending.request, hosts, this.policy, { tieBreakSeed: hashSeed(pending.id) })
    if (!result.placed) {
      if (this.rejectIfNeverFits(pending, hosts, result)) return 'rejected'
      pending.reason = result.reason
      return 'wait'
    }
    for (const candidate of result.ranked) {
      try {
        const vm = await this.c.mesh.request<VmRecord>(candidate.peerId, SCHED_RPC.admit, { pending, resources: candidate.resources })
        this.queue.delete(pending.id)
        this.placed.set(pending.id, { host: candidate.name, peerId: candidate.peerId, vm })
        trimOldest(this.placed, 10_000)
        // Keep this pass honest until the host's own gossip catches up.
        const host = hosts.find(h => h.peerId === candidate.peerId)
        if (host != null) {
          host.free.cpus -= candidate.resources.cpus
          host.free.memoryMiB -= candidate.resources.memoryMiB
          host.free.diskMiB -= candidate.resources.diskMiB
        }
        this.c.logger.info({ vm: pending.id, host: candidate.name }, 'VM placed')
        return 'placed'
      } catch (err) {
        this.c.logger.info({ vm: pending.id, host: candidate.name, err: (err as Error).message }, 'host refused the VM; trying the next')
      }
    }
    pending.reason = 'every host that fits refused its reservation just now; retrying'
    return 'wait'
  }
}

/** Every VM the hosts report, by id, with the host that runs it (this host's own state included). */
function runningVms (members: Member[], self: string, own: PublishedHostState): Map<string, { host: string, peerId: string, vm: VmRecord }> {
  const out = new Map<string, { host: string, peerId: string, vm: VmRecord }>()
  for (const member of members) {
    const state = member.peerId === self ? own : asHostState(member.state)
    for (const vm of state?.vms ?? []) out.set(vm.id, { host: member.nodeName !== '' ? member.nodeName : vm.host, peerId: member.peerId, vm })
  }
  return out
}

/** A stable per-request tie-break, so two leaders spread equal choices instead of racing. */
function hashSeed (id: string): number {
  let h = 2166136261
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619)
  return h >>> 0
}

function trimOldest<K, V> (map: Map<K, V>, max: number): void {
  while (map.size > max) map.delete(map.keys().next().value as K)
}
