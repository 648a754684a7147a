/**
 * Counts failed logins per username (existing or not, so a lock says nothing about existence) and
 * locks a username for `lockSeconds` once `maxFailures` happen inside `windowSeconds`.
 * Kept in memory: a restart forgets it, which is acceptable for slowing down guessing.
 */
import type { LockoutOptions } from './types.ts'
import { LOCKOUT_MAX_TRACKED } from './constants.ts'

interface Entry {
  /** Failure times (ms) inside the window, oldest first. */
  failures: number[]
  lockedUntil?: number
}

export class LoginLockout {
  readonly #options: LockoutOptions
  readonly #clock: () => number
  readonly #maxTracked: number
  readonly #entries = new Map<string, Entry>()

  constructor (options: LockoutOptions, clock: () => number, maxTracked = LOCKOUT_MAX_TRACKED) {
    this.#options = options
    this.#clock = clock
    this.#maxTracked = maxTracked
  }

  /** When the username is locked, the time (ms) it unlocks; otherwise undefined. */
  lockedUntil (username: string): number | undefined {
    const entry = this.#entries.get(username)
    if (entry?.lockedUntil == null) return undefined
    if (entry.lockedUntil > this.#clock()) return entry.lockedUntil
    this.#entries.delete(username)
    return undefined
  }

  /** Records a failure; returns the unlock time if this failure locked the username. */
  recordFailure (username: string): number | undefined {
    if (this.#options.maxFailures <= 0) return undefined
    const now = this.#clock()
    const windowStart = now - this.#options.windowSeconds * 1000
    let entry = this.#entries.get(username)
    if (entry == null) {
      this.#makeRoom(now)
      entry = { failures: [] }
      this.#entries.set(username, entry)
    }
    entry.failures = entry.failures.filter(time => time > windowStart)
    entry.failures.push(now)
    if (entry.failures.length >= this.#options.maxFailures) {
      entry.failures = []
      entry.lockedUntil = now + this.#options.lockSeconds * 1000
      return entry.lockedUntil
    }
    return undefined
  }

  recordSuccess (username: string): void {
    this.#entries.delete(username)
  }

  clear (): void {
    this.#entries.clear()
  }

  get size (): number {
    return this.#entries.size
  }

  /** Drop stale entries; if still full, drop the oldest-created ones. */
  #makeRoom (now: number): void {
    if (this.#entries.size < this.#maxTracked) return
    const windowStart = now - this.#options.windowSeconds * 1000
    for (const [name, entry] of this.#entries) {
      const locked = entry.lockedUntil != null && entry.lockedUntil > now
      if (!locked && entry.failures.every(time => time <= windowStart)) this.#entries.delete(name)
    }
    for (const name of this.#entries.keys()) {
      if (this.#entries.size < this.#maxTracked) break
      this.#entries.delete(name)
    }
  }
}
