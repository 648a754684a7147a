/**
 * Cluster-wide records as a last-writer-wins map with tombstones. Pure and deterministic: merging
 * is commutative, associative and idempotent, so nodes that have seen the same entries agree on the
 * same value whatever order the entries arrived in (by gossip, by full sync, or both twice).
 */
import { compareTimestamps } from './hlc.ts'
import type { Timestamp } from './hlc.ts'

/** One version of one record. A delete is an entry too (a tombstone) so it can win a merge. */
export interface RecordEntry {
  collection: string
  id: string
  /** The record's JSON value; null for a tombstone. */
  value: unknown
  deleted: boolean
  hlc: Timestamp
}

/** Entries keyed by recordKey(collection, id). */
export type RecordSnapshot = ReadonlyMap<string, RecordEntry>

/** The map key of a record; NUL cannot appear in a valid collection name. */
export function recordKey (collection: string, id: string): string {
  return `${collection}\u0000${id}`
}

/** Canonical JSON (sorted object keys) so equal values compare equal whatever their key order. */
export function canonicalJson (value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  const keys = Object.keys(value).sort()
  const obj = value as Record<string, unknown>
  return `{${keys.filter(k => obj[k] !== undefined).map(k => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`
}

/**
 * Total order on entries of the same record: by timestamp, and should two entries carry the very
 * same timestamp (only a buggy or malicious writer does that) by their content, so the winner
 * never depends on arrival order.
 */
export function compareEntries (a: RecordEntry, b: RecordEntry): number {
  const byTime = compareTimestamps(a.hlc, b.hlc)
  if (byTime !== 0) return byTime
  if (a.deleted !== b.deleted) return a.deleted ? 1 : -1
  const ja = canonicalJson(a.value)
  const jb = canonicalJson(b.value)
  return ja === jb ? 0 : (ja < jb ? -1 : 1)
}

/** The entry that wins between what we hold (maybe nothing) and an incoming one. */
export function mergeEntry (current: RecordEntry | undefined, incoming: RecordEntry): RecordEntry {
  if (current === undefined) return incoming
  return compareEntries(incoming, current) > 0 ? incoming : current
}

/** The union of two snapshots, each record resolved by mergeEntry. Neither input is changed. */
export function mergeSnapshots (a: RecordSnapshot, b: RecordSnapshot): Map<string, RecordEntry> {
  const out = new Map(a)
  for (const [key, entry] of b) out.set(key, mergeEntry(out.get(key), entry))
  return out
}

/** Whether `incoming` would replace `current` (false for duplicates and older versions). */
export function wins (current: RecordEntry | undefined, incoming: RecordEntry): boolean {
  return current === undefined || compareEntries(incoming, current) > 0
}

/** A live entry. */
export function makeEntry (collection: string, id: string, value: unknown, hlc: Timestamp): RecordEntry {
  return { collection, id, value, deleted: false, hlc }
}

/** A tombstone. */
export function makeTombstone (collection: string, id: string, hlc: Timestamp): RecordEntry {
  return { collection, id, value: null, deleted: true, hlc }
}

/**
 * Tombstones older than `olderThanWall` can be dropped to bound storage. A node that was away
 * longer than that may bring a deleted record back; pick the horizon well above any outage.
 */
export function expiredTombstones (snapshot: RecordSnapshot, olderThanWall: number): string[] {
  const out: string[] = []
  for (const [key, entry] of snapshot) {
    if (entry.deleted && entry.hlc.wall < olderThanWall) out.push(key)
  }
  return out
}
