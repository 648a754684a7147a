import type { Store } from '../store/types.ts'
import type { RecordStore } from './types.ts'

/**
 * A Store whose chosen collections are cluster-wide records (last writer wins, deletes as
 * tombstones, spread by gossip and full sync) while the rest stay on this node. Services written
 * against Store (auth, for one) become cluster-wide without knowing about the mesh.
 */
export function createReplicatedStore (local: Store, records: RecordStore, replicated: Iterable<string>): Store {
  const shared = new Set(replicated)
  return {
    // The local store and the mesh have their own lifecycles, run by whoever built them.
    start: async () => {},
    stop: async () => {},
    get: <T>(collection: string, id: string): T | undefined =>
      shared.has(collection) ? records.get<T>(collection, id) : local.get<T>(collection, id),
    list: <T>(collection: string): T[] =>
      shared.has(collection) ? records.list<T>(collection).sort((a, b) => a.id.localeCompare(b.id)).map(r => r.value) : local.list<T>(collection),
    put: async <T>(collection: string, id: string, value: T): Promise<void> => {
      if (shared.has(collection)) await records.put(collection, id, value)
      else await local.put(collection, id, value)
    },
    delete: async (collection: string, id: string): Promise<boolean> =>
      shared.has(collection) ? await records.delete(collection, id) : await local.delete(collection, id)
  }
}
