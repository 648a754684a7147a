import type { Logger } from 'pino'
import type { Config } from '../config/index.ts'
import type { Store } from '../store/types.ts'
import type { Driver, DriverName } from './types.ts'
import { DriverUnavailableError } from './errors.ts'
import { createSimDriver } from './sim/index.ts'

export interface DriverComponents {
  logger: Logger
  store: Store
}

/** Builds the driver a node was configured (or detected) to use. */
export async function createDriver (name: DriverName, components: DriverComponents, config: Config, dataDir: string): Promise<Driver> {
  switch (name) {
    case 'sim':
      components.logger.warn('running the sim driver: VMs on this node are simulated and nothing really boots')
      return createSimDriver(components, { ...config.sim, labels: config.node.labels })
    default:
      throw new DriverUnavailableError(`the ${name} driver is not wired into this build yet (data dir ${dataDir})`)
  }
}
