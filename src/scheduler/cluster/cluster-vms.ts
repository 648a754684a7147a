import type { Logger } from 'pino'
import type { ExecResult, PortForward } from '../../drivers/types.ts'
import type { FeedChange, Member, MeshNode } from '../../node/index.ts'
import { CorralError } from '../../errors.ts'
import { newVmId, type ExecOptions, type HostAgent } from '../host/host-agent.ts'
import type { Store } from '../../store/types.ts'
import { InsufficientCapacityError } from '../errors.ts'
import { place, type PlacementPolicy, type PlacementResult } from '../placement/index.ts'
import { leaseHolder, type LeaderElection } from '../leader/leader-election.ts'
import { PENDING_RPC, pendingAsVm, queueOrder, type PendingVm, type ScheduledRequest } from './pending.ts'
import { SCHED_RPC, type SchedulerService, type SubmitOutcome } from './scheduler-service.ts'
import { VMS_FEED, type StatePublisher } from './state-publisher.ts'
import { hostsSnapshot } from './snapshot.ts'
import type { VmEvent, VmRecord } from '../host/vm-record.ts'
import type { LocalImages } from '../../catalog/index.ts'
import { VmNotFoundError } from '../errors.ts'
import type { HostView, LifecycleAction, VmCreateRequest, VmService } from '../types.ts'
import { asHostState } from './published-state.ts'
import { VM_RPC, type ExecFrame } from './rpc-handlers.ts'

/** How long a gateway asks around for a VM gossip has not told it about yet. */
const LOOKUP_TIMEOUT_MS = 5_000
/** How many recent placements a gateway remembers the host of (see ClusterVms.remember). */
const PLACED_MEMORY = 4_096

/**
 * An error the owning host raised, re-raised here under the host's own error name, so the API maps
 * it exactly as if the VM were local (404, 409...).
 */
export class ForwardedError extends CorralError {
  constructor (name: string, message: string, details: Record<string, unknown>) {
    super(message, details)
    this.name = name
  }
}

export interface ClusterVmsComponents {
  host: HostAgent
  images: LocalImages
  mesh: MeshNode
  logger: Logger
  election: LeaderElection
  scheduler: SchedulerService
  publisher: StatePublisher
  /** This node's own store: the requests it accepted survive its restart. */
  store: Store
  clock: () => number
}

export interface ClusterVmsInit {
  policy: PlacementPolicy
  resubmitMs: number
  queueTimeoutSeconds: number
}

export type ClusterCreateRequest = VmCreateRequest

const PENDING = 'pending-vms'

type Owner = { local: true } | { local: false, member: Member }

/**
 * The VM service of a node in a mesh: every VM route works on every node. VMs on this host go to
 * the host agent; others are forwarded over libp2p to the host that owns them, with the caller's
 * identity, and their events are relayed from the owners' gossiped state.
 */
export class ClusterVms extends EventTarget implements VmService {
  private readonly c: ClusterVmsComponents
  private readonly init: ClusterVmsInit
  /** Requests this node accepted that no host runs yet (also in the store). */
  private readonly pending = new Map<string, PendingVm>()
  /** VM id -> the host a placement through this node went to, newest last (see remember()). */
  private readonly placedOn = new Map<string, string>()
  private resubmitTimer?: NodeJS.Timeout
  /** Callers waiting for a VM to settle, by VM id: one event listener serves them all. */
  private readonly waiters = new Map<string, Set<(event: VmEvent) => void>>()
  private readonly relayLocal = (event: Event): void => { this.dispatchEvent(new CustomEvent('vm', { detail: (event as CustomEvent<VmEvent>).detail })) }
  private readonly onFeed = (change: FeedChange): void => { this.relayRemote(change) }
  private readonly wakeWaiters = (event: Event): void => {
    const detail = (event as CustomEvent<VmEvent>).detail
    for (const waiter of this.waiters.get(detail.vm.id) ?? []) waiter(detail)
  }

  constructor (components: ClusterVmsComponents, init: ClusterVmsInit) {
    super()
    this.c = components
    this.init = init
  }

  start (): void {
    for (const p of this.c.store.list<PendingVm>(PENDING)) {
      this.pending.set(p.id, p)
      this.c.publisher.setPending(p)
    }
    this.c.host.addEventListener('vm', this.relayLocal)
    this.addEventListener('vm', this.wakeWaiters)
    this.c.mesh.on('feed:change', this.onFeed)
    this.c.mesh.handleRpc<{ id: string }>(PENDING_RPC.get, ({ id }) => {
      const pending = this.pending.get(String(id))
      if (pending == null) throw new VmNotFoundError(`no queued VM with id ${String(id)} on this node`, { id })
      return pendingAsVm(pending)
    })
    this.c.mesh.handleRpc<{ id: string }>(PENDING_RPC.delete, async ({ id }) => {
      const placed = await this.deletePending(String(id))
      return { deleted: !placed, placed }
    })
    this.resubmitTimer = setInterval(() => { void this.resubmitAll() }, this.init.resubmitMs)
  }

  stop (): void {
    clearInterval(this.resubmitTimer)
    this.c.mesh.unhandleRpc(PENDING_RPC.delete)
    this.c.mesh.unhandleRpc(PENDING_RPC.get)
    this.c.host.removeEventListener('vm', this.relayLocal)
    this.removeEventListener('vm', this.wakeWaiters)
    this.c.mesh.off('feed:change', this.onFeed)
  }

  list (): VmRecord[] {
    const all = [...this.c.host.list(), ...[...this.pending.values()].map(pendingAsVm)]
    for (const member of this.remoteMembers()) {
      if (member.status === 'dead') continue
      all.push(...this.c.publisher.vms.rowsOf(member.peerId).values(), ...this.c.publisher.pending.rowsOf(member.peerId).values())
    }
    // A request placed a moment ago may show both as pending and on its host: the host wins.
    const byId = new Map<string, VmRecord>()
    for (const vm of all) if (!byId.has(vm.id) || vm.host !== '') byId.set(vm.id, vm)
    return [...byId.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  async get (id: string): Promise<VmRecord> {
    const mine = this.pending.get(id)
    // Placed already, but this node has not heard the leader's answer yet (its resubmission round
    // is still waiting on other requests): the host's record, not the stale queued copy.
    if (mine != null && !this.placedSomewhere(id)) return pendingAsVm(mine)
    const elsewhere = this.remotePending(id)
    if (elsewhere != null) return elsewhere.vm
    let owner: Owner
    try {
      owner = await this.owner(id)
    } catch (err) {
      // No host has it: a gateway may still keep it queued, its feed not here yet (a node that
      // just joined, or a partition that just healed).
      if ((err as Error).name !== 'VmNotFoundError') throw err
      return await this.askGateways(id).catch(() => { throw err })
    }
    if (owner.local) return this.c.host.get(id)
    return await this.call<VmRecord>(owner.member, VM_RPC.get, { id })
  }

  private async askGateways (id: string): Promise<VmRecord> {
    const asked = this.remoteMembers().filter(m => m.status !== 'dead')
      .map(async m => await this.c.mesh.request<VmRecord>(m.peerId, PENDING_RPC.get, { id }, { timeoutMs: LOOKUP_TIMEOUT_MS }))
    return await Promise.any(asked)
  }

  /** What placement would do with this request now, and why each host was or was not chosen. */
  explain (request: ClusterCreateRequest): PlacementResult {
    return place(toScheduled(request), this.snapshot(), this.init.policy)
  }

  /**
   * Accepts a VM request: keeps it (durably) until a host runs it, hands it to the leader, and
   * answers at once: placed (the host's record) or queued (with its position).
   */
  async create (request: ClusterCreateRequest): Promise<{ vm: VmRecord, settled: () => Promise<VmRecord> }> {
    const now = this.c.clock()
    const self = this.c.mesh.self()
    const pending: PendingVm = {
      id: newVmId(),
      request: toScheduled(request),
      priority: request.priority ?? 50,
      enqueuedAt: now,
      deadline: now + (request.queueTimeoutSeconds ?? this.init.queueTimeoutSeconds) * 1000,
      gateway: self.peerId,
      gatewayName: self.nodeName,
      state: 'queued'
    }
    // Written down (and gossiped) only if it has to wait: until the client has its answer nothing
    // is promised, and most requests are placed at once.
    const outcome = await this.submit(pending)
    const want = request.start !== false ? 'running' : 'stopped'
    // Followed only for a caller that waits: watching asks the host, and most callers poll later.
    const settled = (): Promise<VmRecord> => this.watch(pending.id, want, pending.deadline)
    if (outcome.outcome === 'placed') {
      if (outcome.peerId !== self.peerId) this.remember(pending.id, outcome.peerId)
      return { vm: outcome.vm, settled }
    }
    if (outcome.outcome === 'rejected') {
      throw new InsufficientCapacityError(outcome.reason, { rejected: outcome.rejected })
    }
    if (outcome.outcome === 'queued') Object.assign(pending, { position: outcome.position, reason: outcome.reason })
    await this.savePending(pending)
    this.dispatchEvent(new CustomEvent('vm', { detail: { type: 'vm.state', vm: pendingAsVm(pending), at: new Date(now).toISOString() } satisfies VmEvent }))
    return { vm: pendingAsVm(pending), settled }
  }

  /**
   * Where this gateway just had a VM placed: until the host's VM feed reaches this node (a delta
   * batch, ~20 ms) a GET or a wait right after the create goes straight there instead of asking
   * every node of the cluster.
   */
  private remember (id: string, peerId: string): void {
    this.placedOn.set(id, peerId)
    while (this.placedOn.size > PLACED_MEMORY) this.placedOn.delete(this.placedOn.keys().next().value as string)
  }

  /** To the leader (this node included); no leader or no answer leaves it queued for the next round. */
  private async submit (pending: PendingVm): Promise<SubmitOutcome> {
    const leader = this.c.election.leader() ?? this.lateLeader()
    let outcome: SubmitOutcome
    try {
      if (leader == null) outcome = { outcome: 'queued', position: 0, reason: 'waiting for the scheduler leader to be elected' }
      else if (leader.peerId === this.c.mesh.self().peerId) outcome = await this.c.scheduler.submit(pending)
      else outcome = await this.c.mesh.request<SubmitOutcome>(leader.peerId, SCHED_RPC.submit, pending, { timeoutMs: 30_000 })
    } catch (err) {
      outcome = { outcome: 'queued', position: 0, reason: `the scheduler leader did not answer (${(err as Error).message}); retrying` }
    }
    if (outcome.outcome === 'not-leader') outcome = { outcome: 'queued', position: 0, reason: 'the scheduler leader is changing; retrying' }
    if (outcome.outcome === 'queued' && this.pending.has(pending.id)) {
      const current = this.pending.get(pending.id) as PendingVm
      if (current.position !== outcome.position || current.reason !== outcome.reason) {
        await this.savePending({ ...current, position: outcome.position, reason: outcome.reason })
      }
    }
    return outcome
  }

  /**
   * The lease's holder while its renewal is late to arrive here (a busy machine, a slow link) but
   * the holder is alive: it still leads as far as it knows, and says 'not-leader' if it does not.
   * Without this a gateway queued every request for a resubmit round each time a renewal lagged.
   */
  private lateLeader (): { peerId: string } | undefined {
    const holder = leaseHolder(this.c.mesh)
    if (holder == null) return undefined
    const member = this.c.mesh.member(holder)
    return member?.status === 'alive' ? { peerId: holder } : undefined
  }

  /** Carries the accepted requests to whoever leads now, until a host has them or they time out. */
  private async resubmitAll (): Promise<void> {
    const now = this.c.clock()
    for (const pending of [...this.pending.values()].sort(queueOrder)) {
      if (pending.state !== 'queued') continue
      if (this.placedSomewhere(pending.id)) {
        await this.forgetPending(pending.id)
        continue
      }
      if (pending.deadline <= now) {
        const failed: PendingVm = { ...pending, state: 'failed', reason: `no host could take it within its queue timeout (${Math.round((pending.deadline - pending.enqueuedAt) / 1000)} s); last reason: ${pending.reason ?? 'none'}` }
        await this.savePending(failed)
        this.dispatchEvent(new CustomEvent('vm', { detail: { type: 'vm.state', vm: pendingAsVm(failed), previous: 'queued', at: new Date(now).toISOString() } satisfies VmEvent }))
        continue
      }
      const outcome = await this.submit(pending)
      if (outcome.outcome === 'placed') await this.forgetPending(pending.id)
      // Unless create() got the same answer meanwhile, refused the client and forgot the request.
      if (outcome.outcome === 'rejected' && this.pending.has(pending.id)) {
        await this.savePending({ ...pending, state: 'failed', reason: outcome.reason })
      }
    }
  }

  /**
   * settled() for a caller that may never wait for it (POST without ?wait=true): its rejection (the
   * VM deleted meanwhile) must not go unhandled, which would end the whole node process.
   */
  private watch (id: string, want: 'running' | 'stopped', deadline: number): Promise<VmRecord> {
    const done = this.settled(id, want, deadline)
    done.catch(() => undefined)
    return done
  }

  /**
   * Resolves once the VM is in `want` state (or failed) on its host; a VM still queued when its
   * queue time is up is answered as it stands (the resubmit round marks it failed).
   */
  private async settled (id: string, want: 'running' | 'stopped', deadline: number): Promise<VmRecord> {
    // Woken by the VM's own events (local ones at once, remote ones as their feed relays them), with
    // a slow re-check as a safety net, so thousands of creates do not mean thousands of poll loops.
    return await new Promise<VmRecord>((resolve, reject) => {
      let over = false
      const finish = (settle: () => void): void => {
        if (over) return
        over = true
        const waiting = this.waiters.get(id)
        waiting?.delete(onEvent)
        if (waiting?.size === 0) this.waiters.delete(id)
        clearInterval(timer)
        settle()
      }
      const gone = (): void => finish(() => reject(new VmNotFoundError(`VM ${id} was deleted while it was being created`, { id })))
      const consider = (vm: VmRecord): void => {
        if (vm.state === want || vm.state === 'failed') finish(() => resolve(vm))
        else if (vm.state === 'queued' && this.c.clock() > deadline + this.init.resubmitMs * 2) finish(() => resolve(vm))
      }
      const onEvent = (detail: VmEvent): void => {
        if (detail.type === 'vm.deleted') gone()
        else consider(detail.vm)
      }
      const check = async (): Promise<void> => {
        const vm = await this.get(id).catch(() => undefined)
        if (vm == null) gone()
        else consider(vm)
      }
      const waiting = this.waiters.get(id) ?? new Set()
      this.waiters.set(id, waiting.add(onEvent))
      const timer = setInterval(() => { void check() }, 1000)
      void check()
    })
  }

  private placedSomewhere (id: string): boolean {
    return this.c.host.has(id) || this.c.publisher.vms.find(id).length > 0
  }

  /** The gateway node that keeps this request, if another node does and no host runs it yet. */
  private remotePending (id: string): { member: Member, vm: VmRecord } | undefined {
    if (this.placedSomewhere(id)) return undefined
    for (const { owner, row } of this.c.publisher.pending.find(id)) {
      const member = this.c.mesh.member(owner)
      if (member != null) return { member, vm: row }
    }
    return undefined
  }

  private async savePending (pending: PendingVm): Promise<void> {
    this.pending.set(pending.id, pending)
    await this.c.store.put(PENDING, pending.id, pending)
    this.c.publisher.setPending(pending)
  }

  private async forgetPending (id: string): Promise<void> {
    if (!this.pending.delete(id)) return
    await this.c.store.delete(PENDING, id)
    this.c.publisher.removePending(id)
  }

  /**
   * Withdraws a request this node keeps. True if a host has it after all (the leader placed it
   * before this node heard): the caller must then delete the VM there, or it would run on unseen.
   */
  private async deletePending (id: string): Promise<boolean> {
    const pending = this.pending.get(id)
    if (pending == null) throw new VmNotFoundError(`no queued VM with id ${id} on this node`, { id })
    await this.forgetPending(id)
    const leader = this.c.election.leader()
    const answer = leader != null ? await this.c.mesh.request<{ placed?: boolean }>(leader.peerId, SCHED_RPC.cancel, { id }).catch(() => undefined) : undefined
    if (answer?.placed === true || this.placedSomewhere(id)) return true
    this.dispatchEvent(new CustomEvent('vm', { detail: { type: 'vm.deleted', vm: pendingAsVm(pending), previous: pending.state, at: new Date(this.c.clock()).toISOString() } satisfies VmEvent }))
    return false
  }

  private snapshot (): ReturnType<typeof hostsSnapshot> {
    const self = this.c.mesh.self().peerId
    return hostsSnapshot(this.c.mesh.members(), { peerId: self, state: this.c.publisher.current() })
  }

  async act (id: string, action: LifecycleAction, caller = ''): Promise<VmRecord> {
    const owner = await this.owner(id)
    if (owner.local) return await this.c.host.act(id, action)
    return await this.call<VmRecord>(owner.member, VM_RPC.act, { id, action, caller })
  }

  async delete (id: string, caller = ''): Promise<void> {
    const elsewhere = this.pending.has(id) ? undefined : this.remotePending(id)
    if (this.pending.has(id)) {
      if (!await this.deletePending(id)) return
    } else if (elsewhere != null) {
      if ((await this.call<{ placed?: boolean }>(elsewhere.member, PENDING_RPC.delete, { id, caller })).placed !== true) return
    }
    let owner: Owner
    try {
      owner = await this.owner(id)
    } catch (err) {
      if ((err as Error).name !== 'VmNotFoundError' || elsewhere != null) throw err
      // A gateway whose feed is not here yet may keep it queued (see get()).
      const withdrawn = await Promise.any(this.remoteMembers().filter(m => m.status !== 'dead')
        .map(async m => await this.c.mesh.request<{ placed?: boolean }>(m.peerId, PENDING_RPC.delete, { id, caller }, { timeoutMs: LOOKUP_TIMEOUT_MS })))
        .catch(() => { throw err })
      if (withdrawn.placed !== true) return
      owner = await this.owner(id)
    }
    if (owner.local) return await this.c.host.delete(id)
    await this.call(owner.member, VM_RPC.delete, { id, caller })
  }

  async forwardPort (id: string, guestPort: number): Promise<PortForward> {
    const owner = await this.owner(id)
    if (owner.local) return await this.c.host.forwardPort(id, guestPort)
    return await this.call<PortForward>(owner.member, VM_RPC.forwardPort, { id, guestPort })
  }

  /** Which node runs the VM: the proxy carries connections to it there. */
  async locate (id: string): Promise<{ local: true } | { local: false, peerId: string, nodeName: string }> {
    const owner = await this.owner(id)
    return owner.local ? { local: true } : { local: false, peerId: owner.member.peerId, nodeName: owner.member.nodeName }
  }

  async exec (id: string, options: ExecOptions & { caller?: string }): Promise<ExecResult> {
    const owner = await this.owner(id)
    if (owner.local) return await this.c.host.exec(id, options)
    const body = { id, command: options.command, env: options.env, timeoutSeconds: options.timeoutSeconds, caller: options.caller ?? '' }
    const timeoutMs = ((options.timeoutSeconds ?? 3600) + 30) * 1000
    try {
      const frames = this.c.mesh.requestStream<ExecFrame, ExecResult>(owner.member.peerId, VM_RPC.exec, body, { signal: options.signal, timeoutMs })
      while (true) {
        const next = await frames.next()
        if (next.done === true) return next.value
        options.onOutput?.(next.value.stream, Buffer.from(next.value.data, 'base64'))
      }
    } catch (err) {
      throw this.translate(err, owner.member)
    }
  }

  async hosts (): Promise<HostView[]> {
    const ownImages = (await this.c.images.list()).map(i => i.name)
    const views: HostView[] = []
    for (const member of this.c.mesh.members()) {
      const published = member.self ? undefined : asHostState(member.state)
      const info = member.self ? this.c.host.info() : published?.host
      if (info == null) continue
      views.push({
        ...info,
        name: member.nodeName !== '' ? member.nodeName : info.name,
        state: member.status,
        peerId: member.peerId,
        images: member.self ? ownImages : published?.images ?? [],
        self: member.self,
        lastSeen: new Date(member.lastSeen).toISOString()
      })
    }
    return views.sort((a, b) => a.name.localeCompare(b.name))
  }

  /** This host, a member whose gossip lists the VM, or (gossip lagging) whoever answers for it. */
  private async owner (id: string): Promise<Owner> {
    if (this.c.host.has(id)) return { local: true }
    const remote = this.remoteMembers()
    const gossiped = this.c.publisher.vms.find(id).map(({ owner }) => this.c.mesh.member(owner)).find(m => m != null && m.status !== 'dead')
    if (gossiped != null) return { local: false, member: gossiped }
    // Placed through this node a moment ago, its host's feed not here yet.
    const placedOn = this.placedOn.get(id)
    const recent = placedOn != null ? this.c.mesh.member(placedOn) : undefined
    if (recent != null && recent.status !== 'dead') return { local: false, member: recent }
    // Placed through another gateway lately: the leader knows where, one question instead of one
    // to every node (in a large cluster a host's VM list reaches the others a heartbeat later).
    const told = await this.askLeaderWhere(id)
    if (told === 'self') return { local: true }
    if (told != null) return { local: false, member: told }
    const asked = remote.filter(m => m.status !== 'dead').map(async member => {
      await this.c.mesh.request(member.peerId, VM_RPC.get, { id }, { timeoutMs: LOOKUP_TIMEOUT_MS })
      return member
    })
    try {
      return { local: false, member: await Promise.any(asked) }
    } catch {
      throw new VmNotFoundError(`no VM with id ${id} on any host of the cluster; GET /api/v1/vms lists the VMs that exist`, { id })
    }
  }

  private async askLeaderWhere (id: string): Promise<Member | 'self' | undefined> {
    const leader = this.c.election.leader()
    if (leader == null) return undefined
    const self = this.c.mesh.self().peerId
    const peerId = leader.peerId === self
      ? this.c.scheduler.where(id)
      : (await this.c.mesh.request<{ peerId: string | null }>(leader.peerId, SCHED_RPC.where, { id }, { timeoutMs: LOOKUP_TIMEOUT_MS }).catch(() => undefined))?.peerId
    if (peerId == null) return undefined
    if (peerId === self) return this.c.host.has(id) ? 'self' : undefined
    const member = this.c.mesh.member(peerId)
    return member != null && member.status !== 'dead' ? member : undefined
  }

  private async call<T> (member: Member, method: string, body: unknown): Promise<T> {
    try {
      return await this.c.mesh.request<T>(member.peerId, method, body)
    } catch (err) {
      throw this.translate(err, member)
    }
  }

  private translate (err: unknown, member: Member): Error {
    const e = err as CorralError
    if (e?.name === 'RpcRemoteError') {
      const remote = (e.details.remote ?? {}) as { name?: string, message?: string, details?: Record<string, unknown> }
      return new ForwardedError(remote.name ?? 'RpcRemoteError', remote.message ?? e.message, { ...(remote.details ?? {}), host: member.nodeName })
    }
    if (e?.name === 'PeerUnavailableError') {
      return new ForwardedError('PeerUnavailableError', `host ${member.nodeName} (${member.peerId}) that runs this VM is unavailable (${member.status}); retry when it is back, or delete the VM once it is`, { host: member.nodeName, peerId: member.peerId })
    }
    return err as Error
  }

  private remoteMembers (): Member[] {
    return this.c.mesh.members().filter(m => !m.self)
  }

  /** Turns the changes in a host's VM feed into the same events local VMs produce. */
  private relayRemote (change: FeedChange): void {
    if (change.feed !== VMS_FEED) return
    const at = new Date().toISOString()
    for (const { row, previous } of change.changes as Array<{ row?: VmRecord, previous?: VmRecord }>) {
      if (row != null && previous?.state !== row.state) this.dispatchEvent(new CustomEvent('vm', { detail: { type: 'vm.state', vm: row, previous: previous?.state, at } satisfies VmEvent }))
      if (row == null && previous != null) this.dispatchEvent(new CustomEvent('vm', { detail: { type: 'vm.deleted', vm: previous, previous: previous.state, at } satisfies VmEvent }))
    }
  }
}

/** The scheduler's view of an API create request: host labels are what placement matches. */
function toScheduled (request: ClusterCreateRequest): ScheduledRequest {
  return {
    image: request.image,
    name: request.name,
    cpus: request.cpus,
    memoryMiB: request.memoryMiB,
    vmLabels: request.labels,
    start: request.start,
    owner: request.owner,
    arch: request.arch,
    os: request.os,
    driver: request.driver,
    simulated: request.simulated,
    labels: request.hostLabels,
    labelsNot: request.hostLabelsNot
  }
}
