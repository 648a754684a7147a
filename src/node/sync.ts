/**
 * Full record sync over /corral/sync/1.0.0, so a node that joins or comes back catches up from a
 * peer instead of waiting for new gossip. Length-prefixed JSON frames, one exchange per stream:
 *
 *   initiator -> responder: digest* (key + timestamp of every entry), digest-end
 *   responder -> initiator: records* (what the initiator lacks or has older), want* (what the
 *                           responder lacks or has older), end
 *   initiator -> responder: records* (the wanted entries), end
 *
 * Only differences travel. Every frame is size-limited and schema-checked; a peer that breaks the
 * protocol has its stream aborted and the drop counted, nothing else happens.
 */
import { lpStream } from '@libp2p/utils'
import type { LengthPrefixedStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { MAX_SYNC_FRAME_BYTES, MAX_SYNC_RECORDS, SYNC_CHUNK_ITEMS } from './constants.ts'
import { compareTimestamps } from './hlc.ts'
import type { Timestamp } from './hlc.ts'
import type { MeshCounters } from './metrics.ts'
import type { MeshRecordStore } from './record-store.ts'
import { recordKey } from './records.ts'
import type { RecordEntry } from './records.ts'
import type { DropReason } from './types.ts'
import { decodeSyncFrame, encodeJson, jsonSize } from './wire.ts'
import type { SyncFrame } from './wire.ts'

/** Leave room for the frame envelope when packing items by size. */
const FRAME_BUDGET = MAX_SYNC_FRAME_BYTES - 4096
/** Frames a peer may send in one exchange: every frame but the ends carries at least one item. */
const MAX_FRAMES = 2 * MAX_SYNC_RECORDS + 16

export interface SyncDeps {
  records: MeshRecordStore
  counters: MeshCounters
}

export interface SyncResult {
  /** Entries this side sent. */
  sent: number
  /** Entries received from the peer (applied or not). */
  received: number
}

/** The peer broke the protocol; the frame was counted as dropped. */
export class SyncProtocolViolation extends Error {
  override name = 'SyncProtocolViolation'
  readonly reason: DropReason

  constructor (reason: DropReason, message: string) {
    super(message)
    this.reason = reason
  }
}

type Lp = LengthPrefixedStream<Stream>

function open (stream: Stream): Lp {
  return lpStream(stream, { maxDataLength: MAX_SYNC_FRAME_BYTES, maxBufferSize: 2 * MAX_SYNC_FRAME_BYTES })
}

export async function syncAsInitiator (stream: Stream, deps: SyncDeps, signal: AbortSignal): Promise<SyncResult> {
  const lp = open(stream)
  const digest = deps.records.digest()
  for (const items of chunk(digest)) await write(lp, { t: 'digest', items }, signal)
  await write(lp, { t: 'digest-end', total: digest.length }, signal)

  let received = 0
  const wanted: Array<{ collection: string, id: string }> = []
  for (let frames = 0; ; frames++) {
    if (frames > MAX_FRAMES) throw violation(deps, 'too-many', 'the peer sent more sync frames than any snapshot needs')
    const frame = await read(lp, deps, signal)
    if (frame.t === 'records') {
      received += frame.entries.length
      if (received > MAX_SYNC_RECORDS) throw violation(deps, 'too-many', 'the peer sent more records than allowed')
      await deps.records.applyRemote(frame.entries as RecordEntry[], 'sync')
    } else if (frame.t === 'want') {
      wanted.push(...frame.keys)
      if (wanted.length > MAX_SYNC_RECORDS) throw violation(deps, 'too-many', 'the peer wants more records than allowed')
    } else if (frame.t === 'end') {
      break
    } else {
      throw violation(deps, 'invalid', `unexpected ${frame.t} frame from the responder`)
    }
  }

  const toSend: RecordEntry[] = []
  for (const key of wanted) {
    const entry = deps.records.entry(key.collection, key.id)
    if (entry !== undefined) toSend.push(entry)
  }
  for (const entries of chunk(toSend)) await write(lp, { t: 'records', entries }, signal)
  await write(lp, { t: 'end' }, signal)
  await stream.close({ signal })
  return { sent: toSend.length, received }
}

export async function syncAsResponder (stream: Stream, deps: SyncDeps, signal: AbortSignal): Promise<SyncResult> {
  const lp = open(stream)
  const remote = new Map<string, { collection: string, id: string, hlc: Timestamp }>()
  for (let frames = 0; ; frames++) {
    if (frames > MAX_FRAMES) throw violation(deps, 'too-many', 'the peer sent more digest frames than any snapshot needs')
    const frame = await read(lp, deps, signal)
    if (frame.t === 'digest') {
      for (const item of frame.items) remote.set(recordKey(item.collection, item.id), item)
      if (remote.size > MAX_SYNC_RECORDS) throw violation(deps, 'too-many', 'the peer announced more records than allowed')
    } else if (frame.t === 'digest-end') {
      break
    } else {
      throw violation(deps, 'invalid', `unexpected ${frame.t} frame before the digest ended`)
    }
  }

  const toSend: RecordEntry[] = []
  for (const entry of deps.records.allEntries()) {
    const theirs = remote.get(recordKey(entry.collection, entry.id))
    if (theirs === undefined || compareTimestamps(theirs.hlc, entry.hlc) < 0) toSend.push(entry)
  }
  const wanted: Array<{ collection: string, id: string }> = []
  for (const item of remote.values()) {
    const mine = deps.records.entry(item.collection, item.id)
    if (mine === undefined || compareTimestamps(mine.hlc, item.hlc) < 0) wanted.push({ collection: item.collection, id: item.id })
  }
  for (const entries of chunk(toSend)) await write(lp, { t: 'records', entries }, signal)
  for (const keys of chunk(wanted)) await write(lp, { t: 'want', keys }, signal)
  await write(lp, { t: 'end' }, signal)

  let received = 0
  for (let frames = 0; ; frames++) {
    if (frames > MAX_FRAMES) throw violation(deps, 'too-many', 'the peer sent more record frames than it was asked for')
    const frame = await read(lp, deps, signal)
    if (frame.t === 'records') {
      received += frame.entries.length
      if (received > wanted.length) throw violation(deps, 'too-many', 'the peer sent records it was not asked for')
      await deps.records.applyRemote(frame.entries as RecordEntry[], 'sync')
    } else if (frame.t === 'end') {
      break
    } else {
      throw violation(deps, 'invalid', `unexpected ${frame.t} frame after the digest`)
    }
  }
  await stream.close({ signal })
  return { sent: toSend.length, received }
}

async function write (lp: Lp, frame: SyncFrame, signal: AbortSignal): Promise<void> {
  await lp.write(encodeJson(frame), { signal })
}

async function read (lp: Lp, deps: SyncDeps, signal: AbortSignal): Promise<SyncFrame> {
  let bytes
  try {
    bytes = await lp.read({ signal })
  } catch (err) {
    const reason = lengthErrorReason(err)
    if (reason !== undefined) throw violation(deps, reason, `bad frame: ${(err as Error).message}`)
    throw err
  }
  const decoded = decodeSyncFrame(bytes.subarray(), MAX_SYNC_FRAME_BYTES)
  if (!decoded.ok) throw violation(deps, decoded.reason, `bad frame (${decoded.reason})`)
  deps.counters.accept('sync')
  return decoded.value
}

function violation (deps: SyncDeps, reason: DropReason, message: string): SyncProtocolViolation {
  deps.counters.drop('sync', reason)
  return new SyncProtocolViolation(reason, message)
}

/** lpStream's own errors for bad length prefixes, as drop reasons. */
export function lengthErrorReason (err: unknown): DropReason | undefined {
  const name = (err as { name?: string })?.name
  // A length prefix with too many bytes announces a length over the limit as well.
  if (name === 'InvalidDataLengthError' || name === 'InvalidDataLengthLengthError') return 'oversized'
  if (name === 'InvalidMessageLengthError') return 'malformed'
  return undefined
}

/** Split into frames of at most SYNC_CHUNK_ITEMS items and about FRAME_BUDGET bytes. */
function chunk<T> (items: T[]): T[][] {
  const out: T[][] = []
  let current: T[] = []
  let bytes = 0
  for (const item of items) {
    const size = (jsonSize(item) ?? 0) + 1
    if (current.length > 0 && (current.length >= SYNC_CHUNK_ITEMS || bytes + size > FRAME_BUDGET)) {
      out.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += size
  }
  if (current.length > 0) out.push(current)
  return out
}
