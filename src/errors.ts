/**
 * The one base class for corral's errors. Every folder declares its own subclasses in its
 * `errors.ts` with a stable `name`; callers branch on that name and only src/api maps names to
 * HTTP statuses. `message` must say what went wrong and how to fix it, because it reaches users.
 */
export class CorralError extends Error {
  /** Structured facts for API problem documents (e.g. the VM's current state). Never secrets. */
  readonly details: Record<string, unknown>

  constructor (message: string, details: Record<string, unknown> = {}, options?: ErrorOptions) {
    super(message, options)
    this.details = details
  }
}
