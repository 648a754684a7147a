/**
 * corral's state store: named collections of JSON records keyed by id. The embedded back end keeps
 * each collection in one JSON file written atomically; a SQL back end can implement the same shape.
 * Every write resolves only once it is durable (a crash after the promise resolves never loses it).
 */
export interface Store {
  /** Load and check every collection file. Throws StoreCorruptError/StoreVersionError, never repairs. */
  start: () => Promise<void>
  /** Wait for pending writes and release resources. Safe to call twice. */
  stop: () => Promise<void>

  get: <T>(collection: string, id: string) => T | undefined
  list: <T>(collection: string) => T[]
  /** Insert or replace; resolves when durable. */
  put: <T>(collection: string, id: string, value: T) => Promise<void>
  /** Resolves true if the record existed; durable on resolve. */
  delete: (collection: string, id: string) => Promise<boolean>
}
