export { ConfigSchema, configKeys, type Config, type ConfigKey } from './schema.ts'
export { resolveConfig, allowed, type ConfigSources } from './load.ts'
export { ConfigError } from './errors.ts'
