/**
 * The cluster-wide record store: the last-writer-wins map of records.ts held in memory, persisted
 * through the Store, fed by local writes, gossip and full sync. It does no networking itself; the
 * mesh gives it a `publish` function and calls applyRemote() with what arrives.
 */
import type { Logger } from 'pino'
import type { Store } from '../store/types.ts'
import { MAX_RECORD_VALUE_BYTES, RECORDS_STORE_COLLECTION } from './constants.ts'
import type { SafeEmitter } from './emitter.ts'
import { RecordInvalidError } from './errors.ts'
import { HybridClock } from './hlc.ts'
import type { Timestamp } from './hlc.ts'
import type { MeshCounters } from './metrics.ts'
import { expiredTombstones, makeEntry, makeTombstone, mergeEntry, recordKey, wins } from './records.ts'
import type { RecordEntry } from './records.ts'
import type { MeshEvents, MeshRecord, RecordOrigin, RecordStore, TrafficChannel } from './types.ts'
import { COLLECTION_PATTERN, MAX_ID_LENGTH, isRecordEntry, jsonSize } from './wire.ts'

const collectionRe = new RegExp(COLLECTION_PATTERN)

export interface MeshRecordStoreInit {
  nodeId: string
  store: Store
  log: Logger
  events: SafeEmitter<MeshEvents>
  counters: MeshCounters
  clock: () => number
  maxClockDriftMs: number
  /** Spread freshly written local entries; failures are logged, sync repairs them. */
  publish: (entries: RecordEntry[]) => Promise<void>
  /** Collections persisted lazily (see MeshNodeInit.volatileCollections). */
  volatileCollections?: Iterable<string>
}

/** How long a change to a volatile collection may wait in memory before it is written. */
const VOLATILE_FLUSH_MS = 5_000

export class MeshRecordStore implements RecordStore {
  private readonly entries = new Map<string, RecordEntry>()
  private readonly hlc: HybridClock
  private readonly init: MeshRecordStoreInit
  private readonly volatile: ReadonlySet<string>
  /** Keys of volatile records changed since they were last written. */
  private readonly unwritten = new Set<string>()
  private flushTimer: NodeJS.Timeout | undefined

  constructor (init: MeshRecordStoreInit) {
    this.init = init
    this.volatile = new Set(init.volatileCollections ?? [])
    this.hlc = new HybridClock({ node: init.nodeId, now: init.clock, maxDriftMs: init.maxClockDriftMs })
  }

  /** Load persisted entries. Unreadable ones are skipped with a warning, never fatal. */
  load (): void {
    let skipped = 0
    for (const stored of this.init.store.list<unknown>(RECORDS_STORE_COLLECTION)) {
      if (!isRecordEntry(stored)) {
        skipped++
        continue
      }
      const entry = stored as RecordEntry
      this.entries.set(recordKey(entry.collection, entry.id), mergeEntry(this.entries.get(recordKey(entry.collection, entry.id)), entry))
      // Our own past writes may be ahead of the wall clock after a clock step back: never reuse them.
      this.hlc.update(entry.hlc)
    }
    if (skipped > 0) this.init.log.warn({ skipped }, 'skipped unreadable mesh records in the store')
  }

  async put<T> (collection: string, id: string, value: T): Promise<void> {
    checkKey(collection, id)
    const size = jsonSize(value)
    if (size === undefined) throw new RecordInvalidError(`The value for ${collection}/${id} has no JSON form; store plain objects, arrays, strings, numbers, booleans or null.`)
    if (size > MAX_RECORD_VALUE_BYTES) {
      throw new RecordInvalidError(`The value for ${collection}/${id} is ${size} bytes of JSON, over the ${MAX_RECORD_VALUE_BYTES}-byte limit; keep large data elsewhere and store a reference.`, { size })
    }
    const entry = makeEntry(collection, id, JSON.parse(JSON.stringify(value)) as unknown, this.hlc.now())
    await this.commitLocal(entry)
  }

  async delete (collection: string, id: string): Promise<boolean> {
    checkKey(collection, id)
    const existed = this.entries.get(recordKey(collection, id))
    const live = existed !== undefined && !existed.deleted
    await this.commitLocal(makeTombstone(collection, id, this.hlc.now()))
    return live
  }

  get<T> (collection: string, id: string): T | undefined {
    const entry = this.entries.get(recordKey(collection, id))
    if (entry === undefined || entry.deleted) return undefined
    return structuredClone(entry.value) as T
  }

  list<T> (collection: string): Array<MeshRecord<T>> {
    const out: Array<MeshRecord<T>> = []
    for (const entry of this.entries.values()) {
      if (entry.collection !== collection || entry.deleted) continue
      out.push({ collection, id: entry.id, value: structuredClone(entry.value) as T, updatedBy: entry.hlc.node, updatedAt: entry.hlc.wall })
    }
    return out
  }

  /**
   * Merge entries from a peer. Each is checked (size, clock drift) and applied if it wins; returns
   * how many changed local state.
   */
  async applyRemote (entries: RecordEntry[], origin: Exclude<RecordOrigin, 'local'>): Promise<number> {
    const channel: TrafficChannel = origin === 'gossip' ? 'gossip' : 'sync'
    const writes: Array<Promise<void>> = []
    let applied = 0
    for (const entry of entries) {
      const size = jsonSize(entry.value)
      if (size === undefined || size > MAX_RECORD_VALUE_BYTES) {
        this.init.counters.drop(channel, 'oversized')
        continue
      }
      if (!this.hlc.acceptable(entry.hlc)) {
        this.init.counters.drop(channel, 'clock-drift')
        continue
      }
      this.hlc.update(entry.hlc)
      const key = recordKey(entry.collection, entry.id)
      if (!wins(this.entries.get(key), entry)) continue
      const stored: RecordEntry = entry.deleted ? makeTombstone(entry.collection, entry.id, entry.hlc) : entry
      this.entries.set(key, stored)
      applied++
      writes.push(this.persist(key))
      this.emitChange(stored, origin)
    }
    this.init.counters.inc('recordsApplied', applied)
    await Promise.all(writes)
    return applied
  }

  /** Every entry's key and timestamp, tombstones included: what a sync peer compares against. */
  digest (): Array<{ collection: string, id: string, hlc: Timestamp }> {
    return [...this.entries.values()].map(e => ({ collection: e.collection, id: e.id, hlc: e.hlc }))
  }

  entry (collection: string, id: string): RecordEntry | undefined {
    return this.entries.get(recordKey(collection, id))
  }

  allEntries (): RecordEntry[] {
    return [...this.entries.values()]
  }

  size (): number {
    return this.entries.size
  }

  /** Forget tombstones older than the horizon, in memory and in the store. */
  async purgeTombstones (olderThanWall: number): Promise<number> {
    const expired = expiredTombstones(this.entries, olderThanWall)
    for (const key of expired) {
      const entry = this.entries.get(key)!
      this.entries.delete(key)
      await this.init.store.delete(RECORDS_STORE_COLLECTION, storeId(entry.collection, entry.id))
    }
    return expired.length
  }

  private async commitLocal (entry: RecordEntry): Promise<void> {
    const key = recordKey(entry.collection, entry.id)
    this.entries.set(key, mergeEntry(this.entries.get(key), entry))
    this.emitChange(entry, 'local')
    await this.persist(key)
    this.init.publish([entry]).catch((err: unknown) => {
      this.init.log.warn({ err, collection: entry.collection, id: entry.id }, 'could not gossip a record; full sync will carry it')
    })
  }

  /**
   * Write whatever currently wins for `key`. Each call writes the winner at call time and the
   * store applies calls in order, so the stored value always ends as the in-memory one.
   */
  private async persist (key: string): Promise<void> {
    const entry = this.entries.get(key)
    if (entry === undefined) return
    if (this.volatile.has(entry.collection)) {
      // Every node would otherwise rewrite its records file (fsync and all) on every renewal.
      this.unwritten.add(key)
      this.flushTimer ??= setTimeout(() => {
        this.flushTimer = undefined
        this.flush().catch(() => undefined)
      }, VOLATILE_FLUSH_MS)
      this.flushTimer.unref?.()
      return
    }
    await this.write(entry)
  }

  /** Writes the volatile records changed since their last write (the mesh calls it at stop too). */
  async flush (): Promise<void> {
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    const keys = [...this.unwritten]
    this.unwritten.clear()
    await Promise.all(keys.map(async key => {
      const entry = this.entries.get(key)
      if (entry !== undefined) await this.write(entry)
    }))
  }

  private async write (entry: RecordEntry): Promise<void> {
    try {
      await this.init.store.put(RECORDS_STORE_COLLECTION, storeId(entry.collection, entry.id), entry)
    } catch (err) {
      this.init.log.error({ err, collection: entry.collection, id: entry.id }, 'could not persist a mesh record; it stays in memory and will be re-sent by peers')
      throw err
    }
  }

  private emitChange (entry: RecordEntry, origin: RecordOrigin): void {
    this.init.events.emit('record:changed', {
      collection: entry.collection,
      id: entry.id,
      value: entry.deleted ? null : structuredClone(entry.value),
      deleted: entry.deleted,
      hlc: entry.hlc,
      origin
    })
  }
}

/** Collection names cannot contain "/", so this id is unambiguous (and at most 192 characters). */
function storeId (collection: string, id: string): string {
  return `${collection}/${id}`
}

function checkKey (collection: string, id: string): void {
  if (typeof collection !== 'string' || !collectionRe.test(collection)) {
    throw new RecordInvalidError(`Collection name ${JSON.stringify(collection)} is not allowed: use 1 to 63 characters from a-z, 0-9 and "-", starting with a letter.`)
  }
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH) {
    throw new RecordInvalidError(`Record id ${JSON.stringify(id)} is not allowed: use a non-empty string of at most ${MAX_ID_LENGTH} characters.`)
  }
}
