import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { Driver, DriverVm, ExecResult, HostCapacity, OutputStream, PortForward } from '../../drivers/types.ts'
import type { Store } from '../../store/types.ts'
import type { LocalImages } from '../../catalog/index.ts'
import { InsufficientCapacityError, InvalidVmStateError, VmNameTakenError, VmNotFoundError, VmRequestError } from '../errors.ts'
import { ReservationLedger, type Resources } from './reservations.ts'
import { actionRules, canDo, isTransitional, refusal, type VmAction, type VmState } from './vm-state.ts'
import type { VmEvent, VmRecord } from './vm-record.ts'
import type { HostView, LifecycleAction } from '../types.ts'
import { deepFreeze } from '../../node/freeze.ts'

export interface HostAgentComponents {
  driver: Driver
  store: Store
  images: LocalImages
  logger: Logger
  clock: () => number
}

export interface HostAgentInit {
  hostName: string
  execTimeoutSeconds: number
  maxExecTimeoutSeconds: number
}

export interface CreateVmRequest {
  /** Chosen by the node that accepted the request, so retries are recognised; new if absent. */
  id?: string
  image: string
  name?: string
  cpus?: number
  memoryMiB?: number
  labels?: Record<string, string>
  start?: boolean
  owner: string
}

export interface ExecOptions {
  command: string[]
  env?: Record<string, string>
  timeoutSeconds?: number
  onOutput?: (stream: OutputStream, chunk: Uint8Array) => void
  signal?: AbortSignal
}

export interface HostInfo {
  name: string
  capacity: HostCapacity
  allocated: Resources
  free: Resources
  vms: { total: number, running: number }
  state: 'alive'
}

const COLLECTION = 'vms'

/** 48 random bits; randomUUID draws from a cached pool, randomBytes calls into OpenSSL every time. */
export function newVmId (): string {
  // xxxxxxxx-xxxx-4xxx-...: the first 12 hex digits are all random.
  const uuid = randomUUID()
  return 'vm-' + uuid.slice(0, 8) + uuid.slice(9, 13)
}

/**
 * The host's authority over its own VMs: admits them against its capacity, drives the driver through
 * the state machine, persists every state, and reconciles with what the hypervisor really has.
 */
export class HostAgent extends EventTarget {
  private readonly components: HostAgentComponents
  private readonly init: HostAgentInit
  private readonly vms = new Map<string, VmRecord>()
  private ledger = new ReservationLedger({ cpus: 0, memoryMiB: 0, diskMiB: 0 })
  private hostCapacity?: HostCapacity
  private readonly background = new Set<Promise<unknown>>()
  /** VMs with a lifecycle action under way, and which: one at a time per VM. */
  private readonly busy = new Map<string, string>()
  /** Bumped on every change to a VM record: list() rebuilds its shared copies only then. */
  private revision = 0
  private listed?: { revision: number, copies: VmRecord[] }
  private readonly onDriverExit = (event: Event): void => { this.driverReportedExit(event as CustomEvent<{ id: string, state: DriverVm['state'], reason: string }>) }

  constructor (components: HostAgentComponents, init: HostAgentInit) {
    super()
    this.components = components
    this.init = init
  }

  async start (): Promise<void> {
    const { driver } = this.components
    this.hostCapacity = await driver.capacity()
    this.ledger = new ReservationLedger(this.hostCapacity)
    for (const record of this.components.store.list<VmRecord>(COLLECTION)) this.vms.set(record.id, record)
    await this.reconcile()
    driver.addEventListener('vm-exited', this.onDriverExit)
  }

  async stop (): Promise<void> {
    this.components.driver.removeEventListener('vm-exited', this.onDriverExit)
    await Promise.allSettled([...this.background])
  }

  /** Brings records in line with the hypervisor after a restart: nothing orphaned, nothing stale. */
  private async reconcile (): Promise<void> {
    const { driver, logger } = this.components
    const actual = new Map((await driver.list()).map(vm => [vm.id, vm]))
    for (const record of [...this.vms.values()]) {
      const real = actual.get(record.id)
      this.ledger.restore(record.id, record)
      if (record.state === 'deleting') {
        await this.finishDelete(record, 'a delete interrupted by a node restart was completed')
        continue
      }
      if (real == null) {
        if (record.state !== 'failed') {
          await this.setState(record, 'failed', 'the hypervisor no longer has this VM (it was lost while the node was down); delete it')
        }
        continue
      }
      if (real.state !== record.state) {
        await this.setState(record, real.state, `reconciled after a node restart: the hypervisor reports it ${real.state}`, { ports: real.ports })
      }
    }
    for (const orphan of actual.values()) {
      if (this.vms.has(orphan.id)) continue
      logger.warn({ vm: orphan.id }, 'removing a VM the hypervisor has but corral has no record of (left by an interrupted create)')
      await driver.delete(orphan.id).catch((err: Error) => logger.error({ vm: orphan.id, err: err.message }, 'could not remove orphaned VM'))
    }
  }

  /**
   * Every VM on this host, oldest first. The copies are frozen and shared until the next change,
   * since the gossip publisher, the scheduler and every list call read far more often than VMs change.
   */
  list (): VmRecord[] {
    if (this.listed?.revision !== this.revision) {
      const copies = [...this.vms.values()].map(vm => deepFreeze(structuredClone(vm))).sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      this.listed = { revision: this.revision, copies }
    }
    return [...this.listed.copies]
  }

  has (id: string): boolean {
    return this.vms.has(id)
  }

  get (id: string): VmRecord {
    return structuredClone(this.require(id))
  }

  /** This host alone, as the API lists hosts when there is no mesh. */
  async hosts (): Promise<HostView[]> {
    return [{ ...this.info(), state: 'alive', images: (await this.components.images.list()).map(i => i.name), self: true }]
  }

  info (): HostInfo {
    const capacity = this.hostCapacity as HostCapacity
    const all = [...this.vms.values()]
    return {
      name: this.init.hostName,
      capacity,
      allocated: this.ledger.used(),
      free: this.ledger.free(),
      vms: { total: all.length, running: all.filter(v => v.state === 'running').length },
      state: 'alive'
    }
  }

  /**
   * Admits and creates a VM; resolves once the record exists. `done` settles when it is booted
   * (`settled()` gives the same, as VmService has it).
   */
  async create (request: CreateVmRequest): Promise<{ vm: VmRecord, done: Promise<VmRecord>, settled: () => Promise<VmRecord> }> {
    // A scheduler that retries (a new leader, a lost answer) sends the same id: admit it once.
    const existing = request.id != null ? this.vms.get(request.id) : undefined
    if (existing != null) {
      const done = Promise.resolve(structuredClone(existing))
      return { vm: structuredClone(existing), done, settled: () => done }
    }
    // A catalog image the host lacks is admitted from its description and pulled in provision().
    const image = await this.components.images.lookup(request.image)
    const id = request.id ?? newVmId()
    const name = request.name ?? `${image.name}-${id.slice(3, 9)}`
    if ([...this.vms.values()].some(v => v.name === name)) throw new VmNameTakenError(`a VM named "${name}" already exists on this host; choose another name or leave name out`, { name })
    const want: Resources = { cpus: request.cpus ?? image.defaultCpus, memoryMiB: request.memoryMiB ?? image.defaultMemoryMiB, diskMiB: image.diskMiB }
    const admission = this.ledger.reserve(id, want)
    if (!admission.ok) throw new InsufficientCapacityError(admission.message, { short: admission.short, free: this.ledger.free() })

    const now = new Date(this.components.clock()).toISOString()
    const record: VmRecord = {
      id, name, image: image.name, host: this.init.hostName, driver: this.components.driver.name, simulated: this.components.driver.simulated,
      state: 'creating', ...want, labels: request.labels ?? {}, ports: [], owner: request.owner, createdAt: now, updatedAt: now
    }
    this.vms.set(id, record)
    try {
      await this.components.store.put(COLLECTION, id, record)
    } catch (err) {
      this.vms.delete(id)
      this.ledger.release(id)
      this.revision++
      throw err
    }
    this.emit({ type: 'vm.state', vm: record, at: now })
    this.components.logger.info({ vm: id, name, image: image.name, owner: request.owner, ...want }, 'VM admitted')

    // No busy mark: while provisioning the VM is creating or starting, which the state machine
    // already refuses other actions in; a mark released after the last state change would make a
    // delete right after ?wait=true answered "running" fail for a moment.
    const done = this.track(this.provision(record, image, request.start !== false))
    return { vm: structuredClone(record), done, settled: () => done }
  }

  private async provision (record: VmRecord, pending: Awaited<ReturnType<LocalImages['lookup']>>, boot: boolean): Promise<VmRecord> {
    const { driver, logger } = this.components
    try {
      const image = await this.components.images.prepare(pending)
      const created = await driver.create({ id: record.id, name: record.name, image, cpus: record.cpus, memoryMiB: record.memoryMiB })
      // Going straight on to boot, the VM passes from creating to starting without a settled stop.
      if (boot) {
        record.info = created.info
        this.revision++
      }
      else await this.setState(record, 'stopped', undefined, { info: created.info })
    } catch (err) {
      logger.error({ vm: record.id, err: (err as Error).message }, 'VM creation failed')
      await this.setState(record, 'failed', `creation failed: ${(err as Error).message}`)
      return structuredClone(record)
    }
    if (boot) await this.runAction(record, 'start').catch(() => undefined)
    return structuredClone(record)
  }

  /** start, stop, suspend, resume or restart; resolves with the VM in its new state. */
  async act (id: string, action: LifecycleAction): Promise<VmRecord> {
    const record = this.require(id)
    this.check(record, action)
    return await this.exclusively(record, action, async () => await this.runAction(record, action))
  }

  /** Runs one lifecycle action on a VM; a second one meanwhile is refused, not interleaved. */
  private async exclusively<T> (record: VmRecord, action: string, work: () => Promise<T>): Promise<T> {
    const current = this.busy.get(record.id)
    if (current != null) {
      throw new InvalidVmStateError(`cannot ${action} VM ${record.id} while it is ${record.state}: a ${current} is under way; wait for it to finish`, { id: record.id, state: record.state, action, busyWith: current })
    }
    this.busy.set(record.id, action)
    try {
      return await work()
    } finally {
      this.busy.delete(record.id)
    }
  }

  private async runAction (record: VmRecord, action: LifecycleAction): Promise<VmRecord> {
    const rule = actionRules[action]
    const before = record.state
    if (rule.via != null) await this.setState(record, rule.via)
    try {
      const result = await this.components.driver[action](record.id)
      await this.setState(record, rule.to ?? result.state, undefined, { ports: result.ports, info: result.info ?? record.info })
    } catch (err) {
      const reason = `${action} failed: ${(err as Error).message}`
      this.components.logger.error({ vm: record.id, action, err: (err as Error).message }, 'VM action failed')
      // A failed start leaves a broken VM; a failed stop or suspend leaves it as it was.
      await this.setState(record, action === 'start' || action === 'restart' || action === 'resume' ? 'failed' : before, reason)
      throw err
    }
    return structuredClone(record)
  }

  /** Deletes the VM and releases its reservation. Resolves when it is gone. */
  async delete (id: string): Promise<void> {
    const record = this.require(id)
    this.check(record, 'delete')
    await this.exclusively(record, 'delete', async () => {
      await this.setState(record, 'deleting')
      await this.finishDelete(record)
    })
  }

  private async finishDelete (record: VmRecord, reason?: string): Promise<void> {
    try {
      await this.components.driver.delete(record.id)
    } catch (err) {
      await this.setState(record, 'failed', `delete failed: ${(err as Error).message}; try again`)
      throw err
    }
    await this.components.store.delete(COLLECTION, record.id)
    this.vms.delete(record.id)
    this.ledger.release(record.id)
    this.components.logger.info({ vm: record.id, reason }, 'VM deleted')
    this.emit({ type: 'vm.deleted', vm: { ...record, updatedAt: this.now() }, previous: 'deleting', at: this.now() })
  }

  async exec (id: string, options: ExecOptions): Promise<ExecResult> {
    const record = this.require(id)
    this.check(record, 'exec')
    const timeoutSeconds = options.timeoutSeconds ?? this.init.execTimeoutSeconds
    if (timeoutSeconds > this.init.maxExecTimeoutSeconds) {
      throw new VmRequestError(`timeoutSeconds ${timeoutSeconds} is above this node's maximum of ${this.init.maxExecTimeoutSeconds}; ask for less`, { max: this.init.maxExecTimeoutSeconds })
    }
    return await this.components.driver.exec(id, {
      command: options.command, env: options.env, timeoutMs: timeoutSeconds * 1000, onOutput: options.onOutput, signal: options.signal
    })
  }

  async forwardPort (id: string, guestPort: number): Promise<PortForward> {
    const record = this.require(id)
    this.check(record, 'exec')
    const forward = await this.components.driver.forwardPort(id, guestPort)
    if (!record.ports.some(p => p.guestPort === guestPort && p.hostPort === forward.hostPort)) {
      await this.setState(record, record.state, record.stateReason, { ports: [...record.ports.filter(p => p.guestPort !== guestPort), forward] })
    }
    return forward
  }

  /** Waits for background work on a VM (provisioning) to settle; for callers that asked to wait. */
  private track<T> (work: Promise<T>): Promise<T> {
    this.background.add(work)
    void work.finally(() => this.background.delete(work)).catch(() => undefined)
    return work
  }

  private driverReportedExit (event: CustomEvent<{ id: string, state: DriverVm['state'], reason: string }>): void {
    const record = this.vms.get(event.detail.id)
    if (record == null || record.state === 'deleting' || record.state === 'stopping') return
    this.components.logger.warn({ vm: record.id, reason: event.detail.reason }, 'VM exited without being asked to')
    void this.track(this.setState(record, event.detail.state, event.detail.reason, { ports: [] }))
  }

  private require (id: string): VmRecord {
    const record = this.vms.get(id)
    if (record == null) throw new VmNotFoundError(`no VM with id ${id}; GET /api/v1/vms lists the VMs that exist`, { id })
    return record
  }

  private check (record: VmRecord, action: VmAction): void {
    if (!canDo(action, record.state)) throw new InvalidVmStateError(refusal(action, record.state, record.id), { id: record.id, state: record.state, action })
  }

  private async setState (record: VmRecord, state: VmState, reason?: string, extra: Partial<Pick<VmRecord, 'ports' | 'info'>> = {}): Promise<void> {
    const previous = record.state
    this.revision++
    record.state = state
    record.updatedAt = this.now()
    if (reason != null) record.stateReason = reason
    else delete record.stateReason
    if (extra.ports != null) record.ports = extra.ports
    if (extra.info != null) record.info = extra.info
    if (state === 'stopped' || state === 'failed') record.ports = []
    const write = this.components.store.put(COLLECTION, record.id, record)
    // A transitional state need not be durable before the driver acts: after a crash, reconciling asks
    // the hypervisor anyway. Settled states are awaited, so what a client is told is on disk.
    if (isTransitional(state) && state !== 'creating') {
      void write.catch((err: Error) => this.components.logger.error({ vm: record.id, err: err.message }, 'could not persist VM state'))
    } else {
      await write
    }
    if (previous !== state) this.emit({ type: 'vm.state', vm: record, previous, at: record.updatedAt })
  }

  private emit (event: VmEvent): void {
    this.revision++
    this.dispatchEvent(new CustomEvent('vm', { detail: structuredClone(event) }))
  }

  private now (): string {
    return new Date(this.components.clock()).toISOString()
  }
}
