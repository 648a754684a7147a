import type { Logger } from 'pino'
import type { Feed, MeshNode } from '../../node/index.ts'
import type { LocalImages } from '../../catalog/index.ts'
import type { HostAgent } from '../host/host-agent.ts'
import type { VmEvent, VmRecord } from '../host/vm-record.ts'
import type { PublishedHostState } from './published-state.ts'
import { pendingAsVm, type PendingVm } from './pending.ts'

/** Coalesces bursts of VM changes into one announcement at most this often. */
const PUBLISH_EVERY_MS = 50

/** The mesh feeds a host's VMs and the requests its gateway keeps travel in (see src/node/feeds.ts). */
export const VMS_FEED = 'vms'
export const PENDING_FEED = 'pending-vms'

/**
 * Keeps what this host tells the cluster in step with the host agent; the host is its only writer.
 * Its VMs and the requests it accepted go row by row in two mesh feeds (a change costs one row on
 * the wire, whatever the host runs); the heartbeat state carries capacity, free resources, images,
 * and the VM feed's version those figures include.
 */
export class StatePublisher {
  private readonly components: { host: HostAgent, images: LocalImages, mesh: MeshNode, logger: Logger }
  readonly vms: Feed<VmRecord>
  readonly pending: Feed<VmRecord>
  private timer?: NodeJS.Timeout
  private imageInfo: PublishedHostState['imageInfo'] = []
  private imageNames: string[] = []
  private pullable: PublishedHostState['imageInfo'] = []
  /** The scheduler leader, once the election runs (see followLeader). */
  private leader: () => string | undefined = () => undefined
  /** What the last publish said (see tellLeader). */
  private lastPublished?: { news: string, free: PublishedHostState['host']['free'] }
  private readonly onVm = (event: Event): void => {
    const { type, vm } = (event as CustomEvent<VmEvent>).detail
    if (type === 'vm.deleted') this.vms.remove(vm.id)
    else this.vms.set(vm)
    this.schedule()
  }

  constructor (components: { host: HostAgent, images: LocalImages, mesh: MeshNode, logger: Logger }) {
    this.components = components
    this.vms = components.mesh.feed<VmRecord>(VMS_FEED)
    this.pending = components.mesh.feed<VmRecord>(PENDING_FEED)
  }

  /** A request this node accepted, as other nodes list it (and route its delete here). */
  setPending (pending: PendingVm): void {
    this.pending.set(pendingAsVm(pending))
  }

  removePending (id: string): void {
    this.pending.remove(id)
  }

  /** Who leads the scheduler, so news it cannot infer reaches it directly (see tellLeader). */
  followLeader (leader: () => string | undefined): void {
    this.leader = leader
  }

  /**
   * The state as it is this instant, published without waiting for the coalescing timer (images as
   * of the last full publish): after an admission, whose answer carries it to the leader.
   */
  publishNow (): void {
    this.components.mesh.setLocalState(this.current())
  }

  /** Publish soon (coalesced), e.g. after the images changed. */
  changed (): void {
    this.schedule()
  }

  async start (): Promise<void> {
    this.components.host.addEventListener('vm', this.onVm)
    for (const vm of this.components.host.list()) this.vms.set(vm)
    await this.publish()
  }

  async stop (): Promise<void> {
    this.components.host.removeEventListener('vm', this.onVm)
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private schedule (): void {
    if (this.timer != null) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.publish().catch((err: Error) => this.components.logger.error({ err: err.message }, 'could not publish host state'))
    }, PUBLISH_EVERY_MS)
  }

  async publish (): Promise<void> {
    const { images, mesh } = this.components
    const all = await images.list()
    this.imageNames = all.map(i => i.name)
    this.imageInfo = all.map(i => ({ name: i.name, arch: i.arch, os: i.os, defaultCpus: i.defaultCpus, defaultMemoryMiB: i.defaultMemoryMiB, diskMiB: i.diskMiB, ...(i.minHost != null ? { minHost: i.minHost } : {}) }))
    this.pullable = await images.pullable()
    const state = this.current()
    mesh.setLocalState(state)
    this.tellLeader(state)
  }

  /**
   * In a large cluster the state is broadcast only with the next heartbeat (25 s with 50 members),
   * and the leader would place queued requests that late after a VM is deleted. What the leader cannot infer since the last
   * publish (resources freed; capacity, images or draining changed) goes to it directly; its own
   * admissions it knows from their answers.
   */
  private tellLeader (state: PublishedHostState): void {
    const previous = this.lastPublished
    const { free, capacity } = state.host
    const news = JSON.stringify([capacity, state.images, state.pullable?.map(p => p.name), state.draining])
    this.lastPublished = { news, free }
    const leader = this.leader()
    if (previous == null || leader == null || leader === this.components.mesh.self().peerId) return
    const freed = free.cpus > previous.free.cpus || free.memoryMiB > previous.free.memoryMiB || free.diskMiB > previous.free.diskMiB
    if (!freed && news === previous.news) return
    this.components.mesh.sendHeartbeatTo(leader).catch((err: Error) => {
      this.components.logger.debug({ err: err.message }, 'could not tell the scheduler leader about this host\'s news; it learns by gossip')
    })
  }

  /** This host's state now (images as of the last publish): fresher than its own gossip. */
  current (): PublishedHostState {
    return {
      kind: 'corral-host/2',
      host: this.components.host.info(),
      vmsVersion: this.vms.version(),
      images: this.imageNames,
      imageInfo: this.imageInfo,
      pullable: this.pullable,
      draining: false
    }
  }
}
