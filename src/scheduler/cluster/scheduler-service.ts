import type { Logger } from 'pino'
import type { Member, MeshNode } from '../../node/index.ts'
import type { VmRecord } from '../host/vm-record.ts'
import { place, type PlacementCandidate, type PlacementHost, type PlacementPolicy, type PlacementRejection, type PlacementResult, type Resources } from '../placement/index.ts'
import type { LeaderElection } from '../leader/leader-election.ts'
import { PENDING_RPC, queueOrder, type PendingVm } from './pending.ts'
import { hostsSnapshot } from './snapshot.ts'
import { asHostState } from './published-state.ts'
import type { Admitted } from './rpc-handlers.ts'
import type { StatePublisher } from './state-publisher.ts'

export const SCHED_RPC = {
  submit: 'sched.submit',
  cancel: 'sched.cancel',
  where: 'sched.where',
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
/** A host that refused a request is passed over for it this long (its gossip was behind). */
const REFUSAL_MEMORY_MS = 2_000
/** An admitted VM's resources count against its host until the host's gossip lists it, or this long. */
const RESERVATION_MEMORY_MS = 10_000
/**
 * For this long after a gateway comes back (a healed partition), its requests are confirmed with it
 * before they are placed: a submission sent into the cut waits in TCP's retransmissions and can
 * arrive seconds later, after the gateway had it placed on its own side.
 */
const CONFIRM_AFTER_REVIVAL_MS = 60_000
/** How long a new leader waits for the hosts' VM lists before it places anything. */
const CATCH_UP_MS = 3_000

/**
 * Resources the leader has promised a host that the host's own gossip may not show yet: until the
 * host's gossiped free figures are of its VM feed version `vmsVersion` or later (Infinity while the
 * admission is in flight).
 */
interface Reservation { peerId: string, resources: Resources, since: number, vmsVersion: number }

/**
 * The leader's half of scheduling: a priority queue, placement on a snapshot of the hosts, and
 * admission by the chosen host. Only the host decides whether it has room; the leader only
 * chooses, so two leaders can cost a retry but never overfill.
 *
 * A pass is synchronous: it chooses a host for every request it can and sends the admissions
 * without waiting for them, so hosts admit in parallel (each one's durable write is the slow
 * part). What is in flight or admitted but not yet in a host's gossip is subtracted from that
 * host in the next pass, so passes running ahead of gossip do not pile requests on one host.
 */
export class SchedulerService {
  private readonly c: SchedulerComponents
  private readonly policy: PlacementPolicy
  private readonly queue = new Map<string, PendingVm>()
  /** Requests already placed, so a re-submission is answered, not placed twice. */
  private readonly placed = new Map<string, { host: string, peerId: string, vm: VmRecord }>()
  private readonly rejected = new Map<string, { reason: string, rejected: PlacementRejection[] }>()
  /** Admissions under way, by request id. */
  private readonly admitting = new Map<string, Promise<void>>()
  /** By request id: in flight or admitted, until the host's gossip shows the VM. */
  private readonly reservations = new Map<string, Reservation>()
  /** By request id: hosts that refused it lately, and when. */
  private readonly refusals = new Map<string, Map<string, number>>()
  private timer?: NodeJS.Timeout
  private nextPass?: Promise<void>
  private readonly onMember = (): void => { if (this.queue.size > this.admitting.size) void this.drainSoon() }
  /** Members back from suspect or dead, and when (see CONFIRM_AFTER_REVIVAL_MS). */
  private readonly revivedAt = new Map<string, number>()
  private readonly onRevived = (member: Member): void => { this.revivedAt.set(member.peerId, this.c.clock()) }
  /** Requests of revived gateways: being confirmed, or confirmed still wanted. */
  private readonly confirming = new Map<string, Promise<void>>()
  private readonly confirmed = new Set<string>()
  /**
   * A leader that loses the lease forgets its queue: the gateways keep every request and re-submit
   * it to the new leader, and a stale copy here would be placed a second time (or after its
   * deletion, which is only sent to the leader of the moment) should this node lead again.
   */
  private readonly onLeader = (): void => {
    if (this.c.election.isLeader()) {
      this.catchUp()
      return
    }
    this.queue.clear()
    this.reservations.clear()
    this.refusals.clear()
  }
  /** Set while a new leader fetches the hosts' VM lists (see catchUp). */
  private catchingUp?: Promise<void>

  constructor (components: SchedulerComponents, policy: PlacementPolicy) {
    this.c = components
    this.policy = policy
  }

  start (): void {
    this.c.mesh.handleRpc<PendingVm>(SCHED_RPC.submit, async body => await this.submit(body))
    this.c.mesh.handleRpc<{ id: string }>(SCHED_RPC.cancel, async ({ id }) => {
      this.queue.delete(String(id))
      // An admission under way may be placing it right now: answer once it is over, with whether it did.
      await this.admitting.get(String(id))
      return { cancelled: true, placed: this.placed.has(String(id)) }
    })
    this.c.mesh.handleRpc<{ id: string }>(SCHED_RPC.where, ({ id }) => ({ peerId: this.where(String(id)) ?? null }))
    this.c.mesh.on('member:update', this.onMember)
    this.c.mesh.on('member:alive', this.onRevived)
    this.c.election.addEventListener('leader', this.onLeader)
    this.timer = setInterval(this.onMember, RETRY_EVERY_MS)
  }

  stop (): void {
    clearInterval(this.timer)
    this.c.mesh.off('member:update', this.onMember)
    this.c.mesh.off('member:alive', this.onRevived)
    this.c.election.removeEventListener('leader', this.onLeader)
    this.c.mesh.unhandleRpc(SCHED_RPC.submit)
    this.c.mesh.unhandleRpc(SCHED_RPC.cancel)
    this.c.mesh.unhandleRpc(SCHED_RPC.where)
  }

  /**
   * A new leader fetches every host's VM list before it places anything. The gateways re-submit
   * what the old leader had in flight, and a VM it placed a moment before it died may not have
   * reached this node yet (beyond 10 members a host's VM changes ride its heartbeat, every 25 s
   * with 50): placing that request again would run it twice.
   */
  private catchUp (): void {
    const self = this.c.mesh.self().peerId
    // Alive ones only: a suspect host is most likely cut off, and asking it would hold every
    // placement for CATCH_UP_MS (a partition's minority side); its VMs arrive when it is back.
    const hosts = this.c.mesh.members().filter(m => m.peerId !== self && m.status === 'alive')
    const started = this.c.clock()
    const fetched = Promise.allSettled(hosts.map(async m => await this.c.publisher.vms.catchUp(m.peerId)))
    const catchingUp: Promise<void> = Promise.race([fetched, new Promise(resolve => setTimeout(resolve, CATCH_UP_MS).unref())]).then(outcomes => {
      const failed = Array.isArray(outcomes) ? outcomes.filter(o => o.status === 'rejected').length : hosts.length
      this.c.logger.info({ hosts: hosts.length, failed, ms: this.c.clock() - started }, 'new leader caught up with the hosts\' VM lists')
      if (this.catchingUp === catchingUp) this.catchingUp = undefined
      if (this.queue.size > 0) void this.drainSoon()
    })
    this.catchingUp = catchingUp
  }

  /** Takes a request into the queue (or recognises it) and answers where it stands now. */
  async submit (pending: PendingVm): Promise<SubmitOutcome> {
    if (this.catchingUp != null) await this.catchingUp
    if (!this.c.election.isLeader()) return { outcome: 'not-leader', leader: this.c.election.leader()?.peerId }
    const done = this.placed.get(pending.id)
    if (done != null) return { outcome: 'placed', ...done }
    const refused = this.rejected.get(pending.id)
    if (refused != null) return { outcome: 'rejected', ...refused }
    if (!this.admitting.has(pending.id)) {
      this.queue.set(pending.id, { ...pending })
      await this.drainSoon()
    }
    // A refused admission goes to the next host in the next pass: follow it (bounded: each refusal
    // rules a host out for this request).
    for (let round = 0; round < 64; round++) {
      const admission = this.admitting.get(pending.id)
      // Being confirmed with its gateway (a healed partition): the pass after it decides.
      const confirmation = this.confirming.get(pending.id)
      if (admission != null) await admission
      else if (confirmation != null) await confirmation
      else if (this.queue.has(pending.id) && this.nextPass != null) await this.nextPass
      else break
    }
    const placed = this.placed.get(pending.id)
    if (placed != null) return { outcome: 'placed', ...placed }
    const rejected = this.rejected.get(pending.id)
    if (rejected != null) return { outcome: 'rejected', ...rejected }
    const entry = this.queue.get(pending.id)
    return { outcome: 'queued', position: this.position(pending.id), reason: entry?.reason ?? 'waiting for capacity' }
  }

  /** The host this leader placed a request on (its last 10,000), for a gateway looking for the VM. */
  where (id: string): string | undefined {
    return this.placed.get(id)?.peerId
  }

  private position (id: string): number {
    return [...this.queue.values()].sort(queueOrder).findIndex(p => p.id === id) + 1
  }

  /**
   * A pass right after the requests that arrive together (one I/O turn): under load one snapshot of
   * the cluster serves many placements instead of one each.
   */
  private async drainSoon (): Promise<void> {
    this.nextPass ??= new Promise<void>(resolve => setImmediate(() => {
      this.nextPass = undefined
      try {
        this.drain()
      } catch (err) {
        this.c.logger.error({ err: (err as Error).message }, 'scheduling pass failed')
      }
      resolve()
    }))
    await this.nextPass
  }

  /** One pass over the queue: every request placed, sent for admission, held back or refused. */
  private drain (): void {
    if (!this.c.election.isLeader() || this.queue.size === 0 || this.catchingUp != null) return
    const now = this.c.clock()
    const self = this.c.mesh.self().peerId
    const members = this.c.mesh.members()
    const own = this.c.publisher.current()
    const hosts = hostsSnapshot(members, { peerId: self, state: own })
    const alive = new Set(members.filter(m => m.status === 'alive').map(m => m.peerId)).add(self)
    const versions = new Map(members.map(m => [m.peerId, m.peerId === self ? own.vmsVersion : asHostState(m.state)?.vmsVersion ?? -1]))
    this.holdReserved(hosts, versions, now)
    let blocked = false
    for (const pending of [...this.queue.values()].sort(queueOrder)) {
      // Sent to a host already: its resources are held in `hosts`; the answer decides the rest.
      if (this.admitting.has(pending.id)) continue
      if (pending.deadline <= now) {
        this.queue.delete(pending.id)
        continue
      }
      // Placed already, by another leader (the other side of a partition, or before a change of
      // leader): remember where, never place it again.
      const there = this.placedAt(pending.id, members)
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
      if (this.unconfirmed(pending, now)) continue
      // Strict order within the queue: a request that cannot run yet holds back the ones behind it,
      // so a big high-priority VM is not starved by a stream of small ones. Those behind it are
      // still refused at once if no host could ever take them, rather than wait out their timeout.
      if (blocked) {
        this.rejectIfNeverFits(pending, hosts)
        continue
      }
      if (this.placeOne(pending, hosts, now) === 'wait') blocked = true
    }
  }

  /**
   * A request of a gateway that came back lately is placed only once the gateway says it still
   * keeps it (CONFIRM_AFTER_REVIVAL_MS); until then the pass skips it. A gateway that no longer
   * has it had it placed (or deleted) on its side of the partition: it leaves the queue.
   */
  private unconfirmed (pending: PendingVm, now: number): boolean {
    const revived = this.revivedAt.get(pending.gateway)
    if (revived == null || now - revived > CONFIRM_AFTER_REVIVAL_MS || this.confirmed.has(pending.id)) return false
    if (this.confirming.has(pending.id)) return true
    const confirmation = this.c.mesh.request<{ state?: string }>(pending.gateway, PENDING_RPC.get, { id: pending.id }, { timeoutMs: 5_000 })
      .then(kept => {
        if (kept.state === 'queued') this.confirmed.add(pending.id)
        else this.queue.delete(pending.id)
      }, (err: Error & { details?: { remote?: { name?: string } } }) => {
        if (err.details?.remote?.name === 'VmNotFoundError') this.queue.delete(pending.id)
      })
      .finally(() => {
        this.confirming.delete(pending.id)
        while (this.confirmed.size > 10_000) this.confirmed.delete(this.confirmed.values().next().value as string)
        // The pass that places it, started before the confirmation resolves for submit() to await.
        if (this.queue.has(pending.id)) void this.drainSoon()
      })
    this.confirming.set(pending.id, confirmation)
    return true
  }

  /** The host already running this request's VM, by its VM feed (this node's own, or a replica). */
  private placedAt (id: string, members: Member[]): { host: string, peerId: string, vm: VmRecord } | undefined {
    const self = this.c.mesh.self()
    const mine = this.c.publisher.vms.mine(id)
    if (mine != null) return { host: self.nodeName !== '' ? self.nodeName : mine.host, peerId: self.peerId, vm: mine }
    const [found] = this.c.publisher.vms.find(id)
    if (found == null) return undefined
    const member = members.find(m => m.peerId === found.owner)
    return { host: member != null && member.nodeName !== '' ? member.nodeName : found.row.host, peerId: found.owner, vm: found.row }
  }

  /**
   * Subtracts what this leader promised hosts and their gossip does not show yet; forgets a
   * promise once the host's gossiped free figures include it, or once it is old.
   */
  private holdReserved (hosts: PlacementHost[], versions: Map<string, number>, now: number): void {
    const byPeer = new Map(hosts.map(h => [h.peerId, h]))
    for (const [id, r] of this.reservations) {
      if ((versions.get(r.peerId) ?? -1) >= r.vmsVersion || now - r.since > RESERVATION_MEMORY_MS) {
        this.reservations.delete(id)
        continue
      }
      const host = byPeer.get(r.peerId)
      if (host != null) subtract(host, r.resources)
    }
  }

  /**
   * Would it fit anywhere if every host were empty, reachable and not draining? If not, waiting
   * will never help: refuse it. A host that is suspect, dead or cut off by a partition may come
   * back, so a request only it could take waits (up to its queue timeout) rather than fail.
   */
  private rejectIfNeverFits (pending: PendingVm, hosts: PlacementHost[], now?: Extract<PlacementResult, { placed: false }>): boolean {
    const empty = hosts.map(h => ({ ...h, status: 'alive' as const, draining: false, free: { cpus: h.capacity.cpus, memoryMiB: h.capacity.memoryMiB, diskMiB: h.capacity.diskMiB } }))
    const ever = place(pending.request, empty, this.policy)
    if (ever.placed) return false
    const result = now ?? ever
    this.queue.delete(pending.id)
    this.rejected.set(pending.id, { reason: result.reason, rejected: result.rejected })
    trimOldest(this.rejected, 10_000)
    this.c.logger.info({ vm: pending.id, reason: result.reason }, 'request can never be placed')
    return true
  }

  private placeOne (pending: PendingVm, hosts: PlacementHost[], now: number): 'admitting' | 'wait' | 'rejected' {
    const refusedBy = this.refusals.get(pending.id)
    for (const [peerId, at] of refusedBy ?? []) if (now - at > REFUSAL_MEMORY_MS) refusedBy?.delete(peerId)
    const eligible = refusedBy == null || refusedBy.size === 0 ? hosts : hosts.filter(h => !refusedBy.has(h.peerId))
    const result = place(pending.request, eligible, this.policy, { tieBreakSeed: hashSeed(pending.id) })
    if (!result.placed) {
      if (this.rejectIfNeverFits(pending, hosts, result)) return 'rejected'
      pending.reason = refusedBy != null && refusedBy.size > 0 && eligible.length < hosts.length
        ? 'every host that fits refused its reservation just now; retrying'
        : result.reason
      return 'wait'
    }
    const [candidate] = result.ranked
    // Hold its resources in this pass at once, and in later passes until the host's gossip shows it.
    const host = hosts.find(h => h.peerId === candidate.peerId)
    if (host != null) subtract(host, candidate.resources)
    this.reservations.set(pending.id, { peerId: candidate.peerId, resources: candidate.resources, since: now, vmsVersion: Infinity })
    this.admitting.set(pending.id, this.admit(pending, candidate))
    return 'admitting'
  }

  /** Asks the chosen host to admit the request; a refusal sends it back to the queue without that host. */
  private async admit (pending: PendingVm, candidate: PlacementCandidate): Promise<void> {
    try {
      const { vm, vmsVersion, heartbeat } = await this.c.mesh.request<Admitted>(candidate.peerId, SCHED_RPC.admit, { pending, resources: candidate.resources })
      if (heartbeat !== undefined) this.c.mesh.acceptHeartbeat(candidate.peerId, heartbeat)
      const held = this.reservations.get(pending.id)
      if (held != null) held.vmsVersion = vmsVersion
      this.queue.delete(pending.id)
      this.refusals.delete(pending.id)
      this.placed.set(pending.id, { host: candidate.name, peerId: candidate.peerId, vm })
      trimOldest(this.placed, 10_000)
      this.admitting.delete(pending.id)
      this.c.logger.info({ vm: pending.id, host: candidate.name }, 'VM placed')
    } catch (err) {
      this.admitting.delete(pending.id)
      this.reservations.delete(pending.id)
      const refusedBy = this.refusals.get(pending.id) ?? new Map<string, number>()
      this.refusals.set(pending.id, refusedBy.set(candidate.peerId, this.c.clock()))
      trimOldest(this.refusals, 10_000)
      this.c.logger.info({ vm: pending.id, host: candidate.name, err: (err as Error).message }, 'host refused the VM; trying the next')
      // The next pass, right away, tries the next host (this one is passed over for a moment).
      if (this.queue.has(pending.id)) void this.drainSoon()
    }
  }
}

function subtract (host: PlacementHost, resources: Resources): void {
  host.free.cpus -= resources.cpus
  host.free.memoryMiB -= resources.memoryMiB
  host.free.diskMiB -= resources.diskMiB
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
