import type { Logger } from 'pino'
import type { MeshNode } from '../../node/index.ts'
import type { VmRecord } from '../host/vm-record.ts'
import { place, type PlacementHost, type PlacementPolicy, type PlacementRejection } from '../placement/index.ts'
import type { LeaderElection } from '../leader/leader-election.ts'
import { queueOrder, type PendingVm } from './pending.ts'
import { hostsSnapshot } from './snapshot.ts'
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

  constructor (components: SchedulerComponents, policy: PlacementPolicy) {
    this.c = components
    this.policy = policy
  }

  start (): void {
    this.c.mesh.handleRpc<PendingVm>(SCHED_RPC.submit, async body => await this.submit(body))
    this.c.mesh.handleRpc<{ id: string }>(SCHED_RPC.cancel, ({ id }) => { this.queue.delete(String(id)); return { cancelled: true } })
    this.c.mesh.on('member:update', this.onMember)
    this.timer = setInterval(this.onMember, RETRY_EVERY_MS)
  }

  stop (): void {
    clearInterval(this.timer)
    this.c.mesh.off('member:update', this.onMember)
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
    const hosts = hostsSnapshot(this.c.mesh.members(), { peerId: self, state: this.c.publisher.current() })
    for (const pending of [...this.queue.values()].sort(queueOrder)) {
      if (pending.deadline <= now) {
        this.queue.delete(pending.id)
        continue
      }
      const outcome = await this.placeOne(pending, hosts)
      // Strict order within the queue: a request that cannot run yet holds back the ones behind it,
      // so a big high-priority VM is not starved by a stream of small ones.
      if (outcome === 'wait') break
    }
  }

  private async placeOne (pending: PendingVm, hosts: PlacementHost[]): Promise<'placed' | 'wait' | 'rejected'> {
    const result = place(pending.request, hosts, this.policy, { tieBreakSeed: hashSeed(pending.id) })
    if (!result.placed) {
      // Would it fit anywhere if every host were empty? If not, waiting will never help.
      const empty = hosts.map(h => ({ ...h, free: { cpus: h.capacity.cpus, memoryMiB: h.capacity.memoryMiB, diskMiB: h.capacity.diskMiB } }))
      if (!place(pending.request, empty, this.policy).placed) {
        this.queue.delete(pending.id)
        this.rejected.set(pending.id, { reason: result.reason, rejected: result.rejected })
        this.c.logger.info({ vm: pending.id, reason: result.reason }, 'request can never be placed')
        return 'rejected'
      }
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

/** A stable per-request tie-break, so two leaders spread equal choices instead of racing. */
function hashSeed (id: string): number {
  let h = 2166136261
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619)
  return h >>> 0
}

function trimOldest<K, V> (map: Map<K, V>, max: number): void {
  while (map.size > max) map.delete(map.keys().next().value as K)
}
