import type { Logger } from 'pino'
import type { MeshNode } from '../../node/index.ts'
import type { LocalImages } from '../../catalog/index.ts'
import type { HostAgent } from '../host/host-agent.ts'
import type { PublishedHostState } from './published-state.ts'
import type { PendingVm } from './pending.ts'

/** Coalesces bursts of VM changes into one announcement at most this often. */
const PUBLISH_EVERY_MS = 50

/**
 * Keeps this host's gossiped state (capacity, VMs, images) in step with the host agent: the host
 * is its only writer, and the mesh versions every announcement.
 */
export class StatePublisher {
  private readonly components: { host: HostAgent, images: LocalImages, mesh: MeshNode, logger: Logger }
  /** Requests this node accepted and still holds (set by the gateway). */
  private pending: () => PendingVm[] = () => []
  private timer?: NodeJS.Timeout
  private imageInfo: PublishedHostState['imageInfo'] = []
  private imageNames: string[] = []
  private pullable: PublishedHostState['imageInfo'] = []
  private readonly onChange = (): void => { this.schedule() }

  constructor (components: { host: HostAgent, images: LocalImages, mesh: MeshNode, logger: Logger }) {
    this.components = components
  }

  /** The gateway's queue of accepted requests, published so any node can show them. */
  setPendingSource (source: () => PendingVm[]): void {
    this.pending = source
  }

  /** Publish soon (coalesced), e.g. after the pending queue changed. */
  changed (): void {
    this.schedule()
  }

  async start (): Promise<void> {
    this.components.host.addEventListener('vm', this.onChange)
    await this.publish()
  }

  async stop (): Promise<void> {
    this.components.host.removeEventListener('vm', this.onChange)
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
    const { host, images, mesh } = this.components
    const all = await images.list()
    this.imageNames = all.map(i => i.name)
    this.imageInfo = all.map(i => ({ name: i.name, arch: i.arch, os: i.os, defaultCpus: i.defaultCpus, defaultMemoryMiB: i.defaultMemoryMiB, diskMiB: i.diskMiB }))
    this.pullable = await images.pullable()
    mesh.setLocalState(this.current())
  }

  /** This host's state now (images as of the last publish): fresher than its own gossip. */
  current (): PublishedHostState {
    return {
      kind: 'corral-host/1',
      host: this.components.host.info(),
      images: this.imageNames,
      imageInfo: this.imageInfo,
      pullable: this.pullable,
      vms: this.components.host.list(),
      pending: this.pending(),
      draining: false
    }
  }
}
