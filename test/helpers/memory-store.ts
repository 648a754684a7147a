/**
 * An in-memory Store for tests: same contract as the JSON store (get/list sync, put/delete async),
 * and values are deep-copied in and out so a test catches code that mutates records in place.
 */
import type { Store } from '../../src/store/types.ts'

export class MemoryStore implements Store {
  readonly #collections = new Map<string, Map<string, unknown>>()
  /** Every completed write, in order, for tests that check what was stored. */
  readonly writes: Array<{ op: 'put' | 'delete', collection: string, id: string }> = []

  async start (): Promise<void> {}

  async stop (): Promise<void> {}

  get<T> (collection: string, id: string): T | undefined {
    const value = this.#collections.get(collection)?.get(id)
    return value === undefined ? undefined : structuredClone(value) as T
  }

  list<T> (collection: string): T[] {
    return [...(this.#collections.get(collection)?.values() ?? [])].map(value => structuredClone(value) as T)
  }

  async put<T> (collection: string, id: string, value: T): Promise<void> {
    // JSON round trip: exactly what a JSON-file store could hold (no Sets, Dates, undefined).
    const copy: unknown = JSON.parse(JSON.stringify(value))
    // Like the JSON store: visible to get/list at once, resolved once "durable".
    let records = this.#collections.get(collection)
    if (records == null) {
      records = new Map()
      this.#collections.set(collection, records)
    }
    records.set(id, copy)
    this.writes.push({ op: 'put', collection, id })
    await Promise.resolve()
  }

  async delete (collection: string, id: string): Promise<boolean> {
    const existed = this.#collections.get(collection)?.delete(id) ?? false
    this.writes.push({ op: 'delete', collection, id })
    await Promise.resolve()
    return existed
  }
}

export function createMemoryStore (): MemoryStore {
  return new MemoryStore()
}
