/**
 * Owned feeds: each node is the only writer of its own rows in a named feed (a host's VMs, say),
 * and every other node keeps a replica. A change travels as a small gossiped delta that carries
 * the version range it covers; a replica applies it only on top of exactly the version it has. A
 * gap (a lost or reordered delta), a restarted owner (a new epoch) or a heartbeat advertising a
 * version the replica never reached is repaired by fetching the owner's whole feed over rpc.
 *
 * This keeps bulky, often-changing state out of heartbeats: a heartbeat carries each feed's cursor
 * (epoch and version) only, and a change costs one row on the wire, not the owner's whole list.
 */
import { randomInt } from 'node:crypto'
import { deepFreeze } from './freeze.ts'
import { FEED_NAME_PATTERN } from './wire.ts'

const FEED_NAME = new RegExp(FEED_NAME_PATTERN)

export interface FeedRow { id: string }

/** One gossiped batch of changes: the owner's feed went from version `from` to `to`. */
export interface FeedDelta {
  owner: string
  feed: string
  epoch: number
  from: number
  to: number
  upserts: FeedRow[]
  removes: string[]
}

/** Where a replica stands (or what an owner has published): [epoch, version]. */
export type FeedCursor = [number, number]

/** What changed in a replica, row by row (row absent: removed; previous absent: new). */
export interface FeedChange<Row extends FeedRow = FeedRow> {
  feed: string
  owner: string
  changes: Array<{ id: string, row?: Row, previous?: Row }>
}

export interface FeedSnapshot { epoch: number, version: number, rows: FeedRow[] }

export interface FeedsTransport {
  selfId: string
  publish: (delta: FeedDelta) => void
  fetchSnapshot: (owner: string, feed: string) => Promise<FeedSnapshot>
  emit: (change: FeedChange) => void
  /** Counts deltas applied and whole feeds fetched. */
  count?: (what: 'delta' | 'snapshot') => void
  clock: () => number
  onError: (err: unknown, owner: string, feed: string) => void
}

export interface FeedsInit {
  /** Changes made within this window go out as one delta. */
  batchMs: number
  /**
   * A busy feed sends a delta at most this often (default: batchMs). Every delta reaches every
   * node, several copies each, so a host placing many VMs a second gossips a few larger deltas
   * instead of many small ones; the first change after a quiet spell still goes out after batchMs.
   */
  minGapMs?: number
  /** While this says so, changes wait for flush() (the owner's next heartbeat), not for a timer. */
  deferred?: () => boolean
  /** Bytes of row JSON per delta message; a bigger batch is split. */
  maxDeltaBytes: number
  /** How long a replica may trail a heartbeat's cursor before it fetches the whole feed. */
  graceMs: number
}

/** The handle a service uses for one feed. */
export interface Feed<Row extends FeedRow> {
  /** Add or replace one of this node's rows. */
  set: (row: Row) => void
  remove: (id: string) => void
  /** This node's own rows. */
  own: () => Row[]
  /** One of this node's own rows. */
  mine: (id: string) => Row | undefined
  /** Another node's rows as this node last heard them (empty if never). */
  rowsOf: (owner: string) => ReadonlyMap<string, Row>
  /** Every other node holding a row with this id, and the row. */
  find: (id: string) => Array<{ owner: string, row: Row }>
  /** The version of this node's feed now (changes not yet sent included). */
  version: () => number
  /**
   * Fetches an owner's whole feed now, whatever the deltas said: for a node that must not act on a
   * replica a delta behind (a new scheduler leader, before it places anything).
   */
  catchUp: (owner: string) => Promise<void>
}

interface LocalFeed {
  epoch: number
  version: number
  published: number
  rows: Map<string, FeedRow>
  dirty: Map<string, FeedRow | undefined>
  timer: NodeJS.Timeout | undefined
  /** When the last delta went out (clock ms). */
  flushedAt: number
}

interface Replica {
  epoch: number
  version: number
  rows: Map<string, FeedRow>
  /** A heartbeat said the owner is past this replica, since when. */
  behindSince: number | undefined
  advertised: FeedCursor | undefined
  fetching: boolean
}

export class Feeds {
  private readonly t: FeedsTransport
  private readonly init: FeedsInit
  private readonly local = new Map<string, LocalFeed>()
  private readonly remote = new Map<string, Map<string, Replica>>()
  /** feed -> row id -> owners holding it: lookups by id without scanning every replica. */
  private readonly index = new Map<string, Map<string, Set<string>>>()
  private stopped = false

  constructor (transport: FeedsTransport, init: FeedsInit) {
    this.t = transport
    this.init = init
  }

  feed<Row extends FeedRow> (name: string): Feed<Row> {
    if (!FEED_NAME.test(name)) throw new RangeError(`feed name "${name}" must match ${FEED_NAME_PATTERN}`)
    const local = this.localFeed(name)
    return {
      set: row => { this.change(name, local, row.id, deepFreeze(structuredClone(row))) },
      remove: id => { if (local.rows.has(id)) this.change(name, local, id, undefined) },
      own: () => [...local.rows.values()] as Row[],
      mine: id => local.rows.get(id) as Row | undefined,
      rowsOf: owner => (this.remote.get(name)?.get(owner)?.rows ?? new Map()) as ReadonlyMap<string, Row>,
      find: id => {
        const owners = this.index.get(name)?.get(id)
        if (owners == null) return []
        return [...owners].map(owner => ({ owner, row: this.remote.get(name)?.get(owner)?.rows.get(id) as Row }))
      },
      version: () => local.version,
      catchUp: async owner => {
        if (owner === this.t.selfId || this.stopped) return
        const snapshot = await this.t.fetchSnapshot(owner, name)
        if (!this.stopped) this.replace(name, owner, this.replica(name, owner), snapshot)
      }
    }
  }

  /** What the heartbeat advertises: versions already sent, so replicas never wait for unsent ones. */
  cursors (): Record<string, FeedCursor> {
    const out: Record<string, FeedCursor> = {}
    for (const [name, f] of this.local) out[name] = [f.epoch, f.published]
    return out
  }

  /** The whole of one of this node's feeds, for a replica that fell behind. */
  snapshot (name: string): FeedSnapshot | undefined {
    const f = this.local.get(name)
    return f == null ? undefined : { epoch: f.epoch, version: f.version, rows: [...f.rows.values()] }
  }

  onDelta (delta: FeedDelta): void {
    if (delta.owner === this.t.selfId || this.stopped) return
    const replica = this.replica(delta.feed, delta.owner)
    if (replica.epoch === delta.epoch && delta.to <= replica.version) return
    const changes: FeedChange['changes'] = []
    // Version 0 of any epoch is the empty feed: a newly met owner's first delta applies to an
    // empty replica as it is. (A restarted owner's does not: the replica's old rows must be
    // diffed against the whole new feed, or VMs that outlived the restart would flash as deleted.)
    if (replica.epoch !== delta.epoch && delta.from === 0 && replica.rows.size === 0) {
      replica.epoch = delta.epoch
      replica.version = 0
    }
    if (replica.epoch !== delta.epoch || replica.version !== delta.from) {
      // Missed something: only the owner's whole feed repairs that.
      this.markBehind(replica, [delta.epoch, delta.to])
      this.fetch(delta.feed, delta.owner, replica)
      return
    }
    for (const row of delta.upserts) changes.push(this.put(delta.feed, delta.owner, replica, deepFreeze(row)))
    for (const id of delta.removes) {
      const previous = this.drop(delta.feed, delta.owner, replica, id)
      if (previous != null) changes.push({ id, previous })
    }
    replica.version = delta.to
    this.t.count?.('delta')
    if (replica.advertised != null && !isAhead(replica.advertised, replica)) replica.behindSince = undefined
    if (changes.length > 0) this.t.emit({ feed: delta.feed, owner: delta.owner, changes })
  }

  /** A heartbeat's cursors: a replica that stays behind them past the grace fetches the feed. */
  onCursors (owner: string, cursors: Record<string, FeedCursor> | undefined): void {
    if (owner === this.t.selfId || cursors == null || this.stopped) return
    for (const [name, cursor] of Object.entries(cursors)) {
      const replica = this.replica(name, owner)
      if (!isAhead(cursor, replica)) {
        replica.behindSince = undefined
        continue
      }
      this.markBehind(replica, cursor)
      // Another epoch (an owner met for the first time, or restarted): no delta in flight could
      // bring this replica level, so there is nothing to wait for.
      if (cursor[0] !== replica.epoch) this.fetch(name, owner, replica)
    }
  }

  /**
   * Fetches every feed of an owner now: it was cut off (suspect or dead) and is back, so whatever
   * it changed meanwhile never arrived as deltas.
   */
  refresh (owner: string): void {
    if (this.stopped) return
    for (const [name, owners] of this.remote) {
      const replica = owners.get(owner)
      if (replica != null && replica.epoch !== -1) this.fetch(name, owner, replica)
    }
  }

  /** Housekeeping: fetch feeds that stayed behind an advertised cursor past the grace. */
  tick (): void {
    const now = this.t.clock()
    for (const [name, owners] of this.remote) {
      for (const [owner, replica] of owners) {
        if (replica.behindSince != null && now - replica.behindSince >= this.init.graceMs) this.fetch(name, owner, replica)
      }
    }
  }

  /** Sends what is batched now, without waiting out the batch window. */
  flush (): void {
    for (const [name, f] of this.local) {
      clearTimeout(f.timer)
      this.flushFeed(name, f)
    }
  }

  stop (): void {
    this.stopped = true
    for (const f of this.local.values()) clearTimeout(f.timer)
  }

  private localFeed (name: string): LocalFeed {
    let f = this.local.get(name)
    if (f == null) {
      // A fresh epoch per process: a replica of the last run's feed can never be mistaken for this one.
      f = { epoch: randomInt(2 ** 47), version: 0, published: 0, rows: new Map(), dirty: new Map(), timer: undefined, flushedAt: -Infinity }
      this.local.set(name, f)
    }
    return f
  }

  private change (name: string, f: LocalFeed, id: string, row: FeedRow | undefined): void {
    if (row == null) f.rows.delete(id)
    else f.rows.set(id, row)
    f.dirty.set(id, row)
    f.version++
    if (f.timer == null && this.init.deferred?.() !== true) {
      const gap = f.flushedAt + (this.init.minGapMs ?? this.init.batchMs) - this.t.clock()
      f.timer = setTimeout(() => { this.flushFeed(name, f) }, Math.max(this.init.batchMs, gap))
    }
  }

  private flushFeed (name: string, f: LocalFeed): void {
    f.timer = undefined
    if (this.stopped || f.dirty.size === 0) return
    f.flushedAt = this.t.clock()
    const entries = [...f.dirty]
    f.dirty.clear()
    // Split by size; the version range of the whole batch is spread over its parts, the last one
    // ending at the feed's version, so replicas apply them in order or see the gap.
    const parts: Array<Array<[string, FeedRow | undefined]>> = [[]]
    let bytes = 0
    for (const entry of entries) {
      const size = entry[1] == null ? entry[0].length + 4 : JSON.stringify(entry[1]).length
      if (bytes + size > this.init.maxDeltaBytes && parts[parts.length - 1].length > 0) { parts.push([]); bytes = 0 }
      parts[parts.length - 1].push(entry)
      bytes += size
    }
    const start = f.published
    const end = f.version
    // Each part holds at least one change, so start + i + 1 < end for every part but the last.
    parts.forEach((part, i) => {
      const from = start + i
      const to = i === parts.length - 1 ? end : from + 1
      this.t.publish({
        owner: this.t.selfId,
        feed: name,
        epoch: f.epoch,
        from,
        to,
        upserts: part.flatMap(([, row]) => row == null ? [] : [row]),
        removes: part.flatMap(([id, row]) => row == null ? [id] : [])
      })
    })
    f.published = end
  }

  private replica (name: string, owner: string): Replica {
    let owners = this.remote.get(name)
    if (owners == null) { owners = new Map(); this.remote.set(name, owners) }
    let r = owners.get(owner)
    if (r == null) {
      r = { epoch: -1, version: 0, rows: new Map(), behindSince: undefined, advertised: undefined, fetching: false }
      owners.set(owner, r)
    }
    return r
  }

  private markBehind (replica: Replica, cursor: FeedCursor): void {
    replica.advertised = cursor
    replica.behindSince ??= this.t.clock()
  }

  private fetch (name: string, owner: string, replica: Replica): void {
    if (replica.fetching || this.stopped) return
    replica.fetching = true
    this.t.count?.('snapshot')
    this.t.fetchSnapshot(owner, name)
      .then(snapshot => { if (!this.stopped) this.replace(name, owner, replica, snapshot) })
      .catch((err: unknown) => { this.t.onError(err, owner, name) })
      .finally(() => { replica.fetching = false })
  }

  /** A whole feed replaces the replica; what differs is reported as changes. */
  private replace (name: string, owner: string, replica: Replica, snapshot: FeedSnapshot): void {
    // A delta applied while the fetch was under way may already be past this snapshot.
    if (replica.epoch === snapshot.epoch && snapshot.version <= replica.version) return
    const changes: FeedChange['changes'] = []
    const incoming = new Set<string>()
    for (const row of snapshot.rows) {
      incoming.add(row.id)
      const change = this.put(name, owner, replica, deepFreeze(row))
      if (change.previous == null || JSON.stringify(change.previous) !== JSON.stringify(row)) changes.push(change)
    }
    for (const id of [...replica.rows.keys()]) {
      if (incoming.has(id)) continue
      const previous = this.drop(name, owner, replica, id)
      if (previous != null) changes.push({ id, previous })
    }
    replica.epoch = snapshot.epoch
    replica.version = snapshot.version
    if (replica.advertised == null || !isAhead(replica.advertised, replica)) replica.behindSince = undefined
    if (changes.length > 0) this.t.emit({ feed: name, owner, changes })
  }

  private put (name: string, owner: string, replica: Replica, row: FeedRow): { id: string, row: FeedRow, previous?: FeedRow } {
    const previous = replica.rows.get(row.id)
    replica.rows.set(row.id, row)
    let ids = this.index.get(name)
    if (ids == null) { ids = new Map(); this.index.set(name, ids) }
    let owners = ids.get(row.id)
    if (owners == null) { owners = new Set(); ids.set(row.id, owners) }
    owners.add(owner)
    return previous == null ? { id: row.id, row } : { id: row.id, row, previous }
  }

  private drop (name: string, owner: string, replica: Replica, id: string): FeedRow | undefined {
    const previous = replica.rows.get(id)
    if (previous == null) return undefined
    replica.rows.delete(id)
    const owners = this.index.get(name)?.get(id)
    owners?.delete(owner)
    if (owners?.size === 0) this.index.get(name)?.delete(id)
    return previous
  }
}

/**
 * Is the owner's cursor past what the replica has? A different epoch (a restarted owner) is, unless
 * both are empty: an owner never heard from with nothing in its feed has nothing to fetch.
 */
function isAhead (cursor: FeedCursor, replica: Replica): boolean {
  if (cursor[0] !== replica.epoch) return cursor[1] > 0 || replica.rows.size > 0
  return cursor[1] > replica.version
}
