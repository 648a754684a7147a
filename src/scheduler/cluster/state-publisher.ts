import type { Logger } from 'pino'
import type { MeshNode } from '../../node/index.ts'
import type { LocalImages } from '../../catalog/index.ts'
import type { HostAgent } from '../host/host-agent.ts'
import type { PublishedHostState } from './published-state.ts'

/** Coalesces bursts of VM changes into one announcement at most this often. */
const PUBLISH_EVERY_MS = 50

/**
 * Keeps this host's gossiped state (capacity, VMs, images) in step with the host agent: the host
 * is its only writer, and the mesh versions every announcement.
 */
export class StatePublisher {
  private readonly components: { host: HostAgent, images: LocalImages, mesh: MeshNode, logger: Logger }
  private timer?: NodeJS.Timeout
  private readonly onChange = (): void => { this.schedule() }

  constructor (components: { host: HostAgent, images: LocalImages, mesh: MeshNode, logger: Logger }) {
    this.components = components
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
    const state: PublishedHostState = {
      kind: 'corral-host/1',
      host: host.info(),
      images: (await images.list()).map(i => i.name),
      vms: host.list()
    }
    mesh.setLocalState(state)
  }
}
