import { CorralError } from '../errors.ts'

/** A configuration value is missing or not allowed; the message names the key, value and rule. */
export class ConfigError extends CorralError {
  override name = 'ConfigError'
}
