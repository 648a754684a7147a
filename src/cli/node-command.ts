import { readFile } from 'node:fs/promises'
import { Command, Option } from 'commander'
import { configKeys, resolveConfig, ConfigError } from '../config/index.ts'
import { selectDriver, qemuArchOf } from '../drivers/select.ts'
import { createLogger } from './logger.ts'
import { startNode } from './assemble.ts'
import { whichSync } from './which.ts'
import { CliError } from './errors.ts'

const defaultsUrl = new URL('../../config/default.yaml', import.meta.url)

/** `corral node`: one flag per config key, generated from the config schema. */
export function nodeCommand (version: string, env: Record<string, string | undefined>): Command {
  const command = new Command('node')
    .description('run a corral node: the host agent and the REST + websocket gateway')
    .addOption(new Option('--config <file>', 'YAML file merged over the embedded defaults').env('CORRAL_CONFIG'))
    .addOption(new Option('--admin-password <password>', 'same as --auth-admin-password'))
    .addOption(new Option('--join <token>', 'join a cluster with a token from `corral cluster init` or `corral cluster token` (same as --cluster-join-token)'))
  for (const key of configKeys()) {
    command.addOption(new Option(`--${key.flag} <value>`, `config ${key.dotted} (env ${key.env}${key.envAlias != null ? ` or ${key.envAlias}` : ''})`))
  }
  command.action(async (options: Record<string, string | undefined>) => {
    const flags: Record<string, string> = {}
    for (const key of configKeys()) {
      const value = options[camel(key.flag)]
      if (value != null) flags[key.dotted] = value
    }
    if (options.adminPassword != null && flags['auth.adminPassword'] == null) flags['auth.adminPassword'] = options.adminPassword
    if (options.join != null && flags['cluster.joinToken'] == null) flags['cluster.joinToken'] = options.join

    let config
    try {
      const fileYaml = options.config != null ? await readFile(options.config, 'utf8').catch((err: Error) => { throw new ConfigError(`cannot read config file ${options.config}: ${err.message}`) }) : undefined
      config = resolveConfig({ defaultsYaml: await readFile(defaultsUrl, 'utf8'), fileYaml, fileName: options.config, env, flags })
    } catch (err) {
      if (err instanceof ConfigError) throw new CliError(`corral node cannot start: ${err.message}`, 2)
      throw err
    }
    const logger = createLogger(config.log.level, config.log.format)
    const driverName = selectDriver(config.driver, { which: whichSync, platform: process.platform, qemuArch: qemuArchOf(process.arch) })
    // dist/ (compiled), or src/ (TypeScript) when dist/ is missing or does not match src/ (npm run build).
    logger.info({ driver: driverName, requested: config.driver, dataDir: config.dataDir, code: import.meta.url.endsWith('.ts') ? 'src' : 'dist' }, 'starting corral node')
    const node = await startNode(config, driverName, logger, version)
    const url = `http://${node.api.address()}`
    logger.info({ url, driver: driverName }, 'corral node ready')
    // A line scripts and tests can wait for, on stdout, apart from the logs.
    process.stdout.write(`corral node ready at ${url} (driver ${driverName}${node.driver.simulated ? ', simulated VMs' : ''})\n`)
    if (node.initialAdminPassword != null) {
      process.stdout.write(`admin password (shown only this once): ${node.initialAdminPassword}\n`)
    }
    await new Promise<void>(resolve => {
      const shutdown = (signal: string): void => {
        logger.info({ signal }, 'stopping corral node')
        void node.stop().then(resolve)
      }
      process.once('SIGINT', shutdown)
      process.once('SIGTERM', shutdown)
    })
  })
  return command
}

const camel = (flag: string): string => flag.replace(/-([a-z0-9])/g, (_m, c: string) => c.toUpperCase())
