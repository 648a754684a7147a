/**
 * Moving a manifest's chunks: the manifest is cut into segments (neighbouring chunks of one pack,
 * about 8 MiB stored), the unit that is fetched, owned in a swarm and asked of peers. A segment's
 * chunks come from the sources the routing gives (peers first, the provider last); each is checked
 * against its id before it is kept, and what a source did not give, or gave corrupt, is tried at
 * the next source, then again in a later round, a bounded number of times. A source that streams
 * (the provider, for a pull) hands each chunk on as its bytes arrive: it is checked and kept while
 * the rest of the segment is still on the wire, from the pieces the network delivered.
 */
import type { Logger } from 'pino'
import { checkBlob, CODEC_ZSTD, type CheckedBlob } from './blob.ts'
import type { BundleManifest } from './manifest.ts'
import { ChunkCorruptError, ChunkNotFoundError } from './errors.ts'
import type { TransferProgress } from './types.ts'

export interface Segment {
  /** Same on every node for the same manifest: `<pack>:<first offset>`, or the chunk id. */
  key: string
  ids: string[]
  stored: number
  /** The pack its chunks are in (absent: a chunk stored as its own object). */
  pack?: string
}

export interface BlobSource {
  kind: 'peer' | 'provider'
  /** For logs: `peer n2`, `s3 bucket ...`. */
  label: string
  /** A peer asked to fetch from the provider for us (its segment's owner in a swarm). */
  owner?: boolean
  /** Stored bytes of whichever of these chunks the source has (unchecked: the caller checks). */
  fetch: (ids: string[], signal: AbortSignal) => Promise<Map<string, Buffer>>
  /**
   * Optional: the same, each chunk handed to `onBlob` as soon as its stored bytes are in (in
   * pieces); resolves once the source has given all it will.
   */
  stream?: (ids: string[], signal: AbortSignal, onBlob: (id: string, pieces: Buffer[]) => void) => Promise<void>
}

export interface SegmentRouting {
  /** Where to look for a segment's chunks, best first, the provider last; `round` counts failed rounds. */
  sources: (segment: Segment, round: number) => BlobSource[]
}

export type FetchCounters = Pick<TransferProgress, 'bytesFromPeers' | 'bytesFromProvider' | 'corruptChunks'>

export interface FetchOptions {
  /** Rounds over all sources before a chunk is given up. */
  rounds?: number
  signal: AbortSignal
  logger: Logger
  /**
   * Keeps checked chunks (writes them into the image, or the store), a batch at a time; every
   * batch is kept before the fetch ends.
   */
  keep?: (chunks: Array<[id: string, chunk: CheckedBlob]>) => Promise<void>
  /** Use sources' streams (default true); a fetch that must hand stored bytes on asks for whole ones. */
  streaming?: boolean
  /**
   * Keep each chunk's bytes in the result once kept (default true). A pull that wrote them into
   * its image lets the plain bytes go (a read of 32 MiB would otherwise hold all of it until its
   * last byte) and keeps only compressed stored forms, which a peer joining the fetch is sent:
   * read back from the image it would get them uncompressed, twice the bytes between peers.
   */
  retain?: boolean
}

const DEFAULT_ROUNDS = 3
/**
 * Streamed chunks are kept in batches of about this many bytes: one vectored write per batch
 * rather than one per chunk (each write wakes a thread of libuv's pool, which on a busy machine
 * preempts the event loop that is reading the network).
 */
const KEEP_BATCH_BYTES = 4 * 1024 * 1024
const SEGMENT_BYTES = 8 * 1024 * 1024

/**
 * The manifest's segments: packed chunks in pack order, grouped while they stay in one pack and
 * under about 8 MiB; a chunk stored as its own object is a segment alone.
 */
export function segmentsOf (manifest: BundleManifest, maxStored = SEGMENT_BYTES): Segment[] {
  const packed: Array<{ id: string, pack: string, offset: number, stored: number }> = []
  const segments: Segment[] = []
  for (const [id, b] of Object.entries(manifest.blobs)) {
    if (b.pack != null && b.offset != null) packed.push({ id, pack: b.pack, offset: b.offset, stored: b.stored })
    else segments.push({ key: id, ids: [id], stored: b.stored })
  }
  packed.sort((a, b) => (a.pack < b.pack ? -1 : a.pack > b.pack ? 1 : a.offset - b.offset))
  let current: Segment | undefined
  let currentPack = ''
  for (const b of packed) {
    if (current == null || b.pack !== currentPack || current.stored >= maxStored) {
      current = { key: `${b.pack}:${b.offset}`, ids: [], stored: 0, pack: b.pack }
      currentPack = b.pack
      segments.push(current)
    }
    current.ids.push(b.id)
    current.stored += b.stored
  }
  return segments
}

/** Segments fetched as one: what they hold together, and the keys a joining fetch may know them by. */
export interface FetchUnit {
  segment: Segment
  keys: string[]
}

/** Largest provider read a pull makes of neighbouring segments no peer serves. */
export const READ_BYTES = 32 * 1024 * 1024

/**
 * The segments in order, neighbours of one pack merged while `merge` allows each (no peer could
 * serve it: it comes from the provider anyway) and they stay under `maxStored`: one ranged read
 * of 32 MiB costs the provider a quarter of the requests, and the pull a quarter of the waits
 * for a first byte, of four reads of 8 MiB. Lazy, so each decision is taken when a fetch slot
 * is free, with the peers known then.
 */
export function * fetchUnits (segments: Segment[], maxStored: number, merge: (segment: Segment) => boolean): Generator<FetchUnit> {
  let i = 0
  while (i < segments.length) {
    const first = segments[i++]
    const unit: FetchUnit = { segment: { ...first, ids: [...first.ids] }, keys: [first.key] }
    if (first.pack != null && merge(first)) {
      while (i < segments.length && segments[i].pack === first.pack && unit.segment.stored + segments[i].stored <= maxStored && merge(segments[i])) {
        const next = segments[i++]
        unit.segment.ids.push(...next.ids)
        unit.segment.stored += next.stored
        unit.keys.push(next.key)
      }
    }
    yield unit
  }
}

/**
 * Fetches `wanted` chunks of a segment; resolves once every one was kept, with each one checked
 * against its id: its plain bytes, and its stored form when that came whole (without retain: no
 * plain bytes, and null unless the stored form is compressed). Throws once a chunk failed every
 * source in every round.
 */
export async function fetchSegment (segment: Segment, wanted: string[], manifest: BundleManifest, routing: SegmentRouting, counters: FetchCounters, options: FetchOptions): Promise<Map<string, CheckedBlob | null>> {
  const rounds = options.rounds ?? DEFAULT_ROUNDS
  const got = new Map<string, CheckedBlob | null>()
  const remaining = new Set(wanted)
  let lastError: unknown
  let corrupt = false
  for (let round = 0; round < rounds && remaining.size > 0; round++) {
    for (const source of routing.sources(segment, round)) {
      options.signal.throwIfAborted()
      if (remaining.size === 0) break
      const checking: Array<Promise<void>> = []
      const keeping: Array<Promise<void>> = []
      let batch: Array<[string, CheckedBlob]> = []
      let batchBytes = 0
      const keepBatch = (): void => {
        if (batch.length === 0 || options.keep == null) return
        keeping.push(options.keep(batch))
        batch = []
        batchBytes = 0
      }
      // Checks one chunk from this source and queues it to be kept; a corrupt one stays wanted.
      const arrived = async (id: string, pieces: Buffer[]): Promise<void> => {
        if (!remaining.has(id)) return
        remaining.delete(id)
        let chunk: CheckedBlob
        try {
          chunk = await checkBlob(id, pieces, manifest.blobs[id].size)
        } catch (err) {
          remaining.add(id)
          if (!(err instanceof ChunkCorruptError)) throw err
          corrupt = true
          lastError = err
          counters.corruptChunks++
          options.logger.warn({ chunk: id, source: source.label }, 'a fetched chunk was corrupt; fetching it again')
          return
        }
        const bytes = pieces.reduce((n, p) => n + p.length, 0)
        if (source.kind === 'peer') counters.bytesFromPeers += bytes
        else counters.bytesFromProvider += bytes
        got.set(id, options.retain !== false ? chunk : chunk.stored != null && chunk.stored[0] === CODEC_ZSTD ? { plain: [], stored: chunk.stored } : null)
        batch.push([id, chunk])
        batchBytes += chunk.plain.reduce((n, p) => n + p.length, 0)
        if (batchBytes >= KEEP_BATCH_BYTES) keepBatch()
      }
      let sourceError: unknown
      try {
        if (source.stream != null && options.streaming !== false) {
          await source.stream([...remaining], options.signal, (id, pieces) => { checking.push(arrived(id, pieces)) })
        } else {
          const fetched = await source.fetch([...remaining], options.signal)
          for (const [id, stored] of fetched) checking.push(arrived(id, [stored]))
        }
      } catch (err) {
        sourceError = err ?? new Error('chunk source failed')
      }
      // What arrived before a failure is kept all the same. A failure to keep (the disk) is not
      // the source's fault: it ends the fetch.
      const checked = await Promise.allSettled(checking)
      keepBatch()
      const kept = await Promise.allSettled(keeping)
      const failed = [...checked, ...kept].find((k): k is PromiseRejectedResult => k.status === 'rejected')
      if (failed != null) throw failed.reason
      if (sourceError != null) {
        if (options.signal.aborted) throw sourceError
        lastError = sourceError
        options.logger.debug({ segment: segment.key, source: source.label, err: (sourceError as Error).message }, 'chunk source failed; trying the next')
      }
    }
    if (remaining.size > 0 && round < rounds - 1) await new Promise(resolve => setTimeout(resolve, 100 * (round + 1)))
  }
  if (remaining.size > 0) {
    const id = [...remaining][0]
    if (corrupt) throw new ChunkCorruptError(`chunk ${id.slice(0, 12)}… was corrupt at every source, ${rounds} times; the stored image is damaged: push this version again`, { chunk: id })
    throw new ChunkNotFoundError(`chunk ${id.slice(0, 12)}… could not be fetched from any source after ${rounds} rounds${lastError != null ? `: ${(lastError as Error).message}` : ''}`, { chunk: id })
  }
  return got
}

/** Fills progress's chunk and byte totals from what is held already; returns what is not. */
export function countHeld (manifest: BundleManifest, held: (id: string) => boolean, progress: TransferProgress): string[] {
  const ids = Object.keys(manifest.blobs)
  progress.chunksTotal = ids.length
  progress.bytesTotal = manifest.storedSize
  progress.chunksDone = 0
  progress.bytesDone = 0
  const missing: string[] = []
  for (const id of ids) {
    if (held(id)) {
      progress.chunksDone++
      progress.bytesDone += manifest.blobs[id].stored
    } else missing.push(id)
  }
  progress.chunksReused = progress.chunksDone
  return missing
}
