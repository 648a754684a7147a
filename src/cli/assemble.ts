import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { mkdir } from 'node:fs/promises'
import type { Logger } from 'pino'
import type { Config } from '../config/index.ts'
import { createJsonStore } from '../store/index.ts'
import { createAuthService } from '../auth/index.ts'
import { LocalImages } from '../catalog/index.ts'
import { HostAgent } from '../scheduler/index.ts'
import { createApiServer, type ApiServer } from '../api/index.ts'
import { createDriver } from '../drivers/factory.ts'
import type { Driver } from '../drivers/types.ts'

export interface RunningNode {
  api: ApiServer
  driver: Driver
  /** Set on the first start only, when no admin password was configured. */
  initialAdminPassword?: string
  stop: () => Promise<void>
}

/**
 * Builds one node from a validated config: store, driver, auth, images, host agent, API. Each piece
 * gets its dependencies passed in; stop() takes them down in reverse order and is safe twice.
 */
export async function startNode (config: Config, driverName: Driver['name'], logger: Logger, version: string): Promise<RunningNode> {
  const clock = Date.now
  const dataDir = resolve(config.dataDir)
  await mkdir(dataDir, { recursive: true })
  const stack: Array<() => Promise<void>> = []
  const stop = async (): Promise<void> => {
    while (stack.length > 0) await (stack.pop() as () => Promise<void>)().catch((err: Error) => logger.error({ err: err.message }, 'error while stopping'))
  }
  try {
    const store = createJsonStore({ logger: logger.child({ component: 'store' }) }, { dataDir })
    await store.start()
    stack.push(async () => await store.stop())

    const driver = await createDriver(driverName, { logger: logger.child({ component: 'driver' }), store }, config, dataDir)
    await driver.open()
    stack.push(async () => await driver.close())

    const auth = createAuthService({ store, logger, clock }, {
      dataDir,
      adminPassword: config.auth.adminPassword === '' ? undefined : config.auth.adminPassword,
      tokenTtlSeconds: config.auth.tokenTtlSeconds,
      lockout: config.auth.lockout
    })
    await auth.start()
    stack.push(async () => await auth.stop())

    const images = new LocalImages({ driver, store, logger: logger.child({ component: 'images' }), clock })
    const host = new HostAgent({ driver, store, images, logger: logger.child({ component: 'host' }), clock }, {
      hostName: config.node.name !== '' ? config.node.name : hostname(),
      execTimeoutSeconds: config.vm.execTimeoutSeconds,
      maxExecTimeoutSeconds: config.vm.maxExecTimeoutSeconds
    })
    await host.start()
    stack.push(async () => await host.stop())

    const api = createApiServer({ auth, vms: host, images, logger: logger.child({ component: 'api' }), clock }, {
      addr: config.api.addr, maxBodyBytes: config.api.maxBodyBytes, version
    })
    await api.start()
    stack.push(async () => await api.stop())

    return { api, driver, initialAdminPassword: auth.takeInitialAdminPassword(), stop }
  } catch (err) {
    await stop()
    throw err
  }
}
