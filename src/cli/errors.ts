import { CorralError } from '../errors.ts'

/** A CLI command failed; the message is printed as is and the process exits non-zero. */
export class CliError extends CorralError {
  override name = 'CliError'
  readonly exitCode: number

  constructor (message: string, exitCode = 1, details: Record<string, unknown> = {}) {
    super(message, details)
    this.exitCode = exitCode
  }
}
