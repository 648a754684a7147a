/**
 * A typed event emitter whose listeners cannot hurt the mesh: a listener that throws is logged
 * and the others still run.
 */
import type { Logger } from 'pino'

export class SafeEmitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<(detail: never) => void>>()
  private readonly log: Logger

  constructor (log: Logger) {
    this.log = log
  }

  on<E extends keyof Events> (event: E, listener: (detail: Events[E]) => void): void {
    let set = this.listeners.get(event)
    if (set === undefined) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(listener as (detail: never) => void)
  }

  off<E extends keyof Events> (event: E, listener: (detail: Events[E]) => void): void {
    this.listeners.get(event)?.delete(listener as (detail: never) => void)
  }

  emit<E extends keyof Events> (event: E, detail: Events[E]): void {
    const set = this.listeners.get(event)
    if (set === undefined) return
    for (const listener of [...set]) {
      try {
        (listener as (detail: Events[E]) => void)(detail)
      } catch (err) {
        this.log.error({ err, event: String(event) }, 'a mesh event listener threw; the mesh carries on')
      }
    }
  }

  clear (): void {
    this.listeners.clear()
  }
}
