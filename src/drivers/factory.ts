import type { Logger } from 'pino'
import type { Config } from '../config/index.ts'
import type { Store } from '../store/types.ts'
import type { Driver, DriverName } from './types.ts'
import { DriverUnavailableError } from './errors.ts'

export interface DriverComponents {
  logger: Logger
  store: Store
}

/** Builds the driver a node was configured (or detected) to use; only that driver's code is loaded. */
export async function createDriver (name: DriverName, components: DriverComponents, config: Config, dataDir: string): Promise<Driver> {
  switch (name) {
    case 'sim': {
      components.logger.warn('running the sim driver: VMs on this node are simulated and nothing really boots')
      const { createSimDriver } = await import('./sim/index.ts')
      return createSimDriver(components, { ...config.sim, labels: config.node.labels })
    }
    case 'qemu': {
      const { createQemuDriver } = await import('./qemu/index.ts')
      return createQemuDriver({ logger: components.logger }, {
        dataDir,
        accelerator: config.qemu.accelerator,
        qemuBinary: config.qemu.binary === '' ? undefined : config.qemu.binary,
        imageDirs: config.qemu.imageDirs,
        bootTimeoutMs: config.qemu.bootTimeoutMs,
        labels: config.node.labels
      })
    }
    case 'parallels': {
      const { createParallelsDriver } = await import('./parallels/index.ts')
      return createParallelsDriver({ logger: components.logger }, {
        labels: config.node.labels,
        linkedClones: config.parallels.linkedClones,
        vmDirectory: config.parallels.vmDirectory === '' ? undefined : config.parallels.vmDirectory,
        execAsCurrentUser: config.parallels.execAsCurrentUser,
        stopTimeoutMs: config.parallels.stopTimeoutMs,
        watchIntervalMs: config.parallels.watchIntervalMs
      })
    }
    default:
      throw new DriverUnavailableError(`unknown driver "${String(name)}"; use qemu, parallels or sim`)
  }
}
