/**
 * Moving a manifest's chunks: the manifest is cut into segments (neighbouring chunks of one pack,
 * about 8 MiB stored), the unit that is fetched, owned in a swarm and asked of peers. A segment's
 * chunks come from the sources the routing gives (peers first, the provider last); each is checked
 * against its id before it is kept, and what a source did not give, or gave corrupt, is tried at
 * the next source, then again in a later round, a bounded number of times.
 */
import type { Logger } from 'pino'
import { decodeBlob } from './blob.ts'
import type { BundleManifest } from './manifest.ts'
import { ChunkCorruptError, ChunkNotFoundError } from './errors.ts'
import type { TransferProgress } from './types.ts'

export interface Segment {
  /** Same on every node for the same manifest: `<pack>:<first offset>`, or the chunk id. */
  key: string
  ids: string[]
  stored: number
}

export interface BlobSource {
  kind: 'peer' | 'provider'
  /** For logs: `peer n2`, `s3 bucket ...`. */
  label: string
  /** Stored bytes of whichever of these chunks the source has (unchecked: the caller checks). */
  fetch: (ids: string[], signal: AbortSignal) => Promise<Map<string, Buffer>>
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
}

const DEFAULT_ROUNDS = 3
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
      current = { key: `${b.pack}:${b.offset}`, ids: [], stored: 0 }
      currentPack = b.pack
      segments.push(current)
    }
    current.ids.push(b.id)
    current.stored += b.stored
  }
  return segments
}

/** A fetched chunk: checked plain bytes, and the stored form it came in (to keep or pass on). */
export interface FetchedChunk {
  plain: Buffer
  stored: Buffer
}

/**
 * Fetches `wanted` chunks of a segment; resolves with each one's plain and stored bytes, every
 * one checked against its id. Throws once a chunk failed every source in every round.
 */
export async function fetchSegment (segment: Segment, wanted: string[], manifest: BundleManifest, routing: SegmentRouting, counters: FetchCounters, options: FetchOptions): Promise<Map<string, FetchedChunk>> {
  const rounds = options.rounds ?? DEFAULT_ROUNDS
  const plain = new Map<string, FetchedChunk>()
  const remaining = new Set(wanted)
  let lastError: unknown
  let corrupt = false
  for (let round = 0; round < rounds && remaining.size > 0; round++) {
    for (const source of routing.sources(segment, round)) {
      options.signal.throwIfAborted()
      if (remaining.size === 0) break
      let got: Map<string, Buffer>
      try {
        got = await source.fetch([...remaining], options.signal)
      } catch (err) {
        if (options.signal.aborted) throw err
        lastError = err
        options.logger.debug({ segment: segment.key, source: source.label, err: (err as Error).message }, 'chunk source failed; trying the next')
        continue
      }
      // Check and keep the chunks in parallel: decompression runs in libuv's pool.
      await Promise.all([...got].filter(([id]) => remaining.has(id)).map(async ([id, stored]) => {
        try {
          const bytes = await decodeBlob(id, stored, manifest.blobs[id].size)
          plain.set(id, { plain: bytes, stored })
          remaining.delete(id)
          if (source.kind === 'peer') counters.bytesFromPeers += stored.length
          else counters.bytesFromProvider += stored.length
        } catch (err) {
          if (!(err instanceof ChunkCorruptError)) throw err
          corrupt = true
          lastError = err
          counters.corruptChunks++
          options.logger.warn({ chunk: id, source: source.label }, 'a fetched chunk was corrupt; fetching it again')
        }
      }))
    }
    if (remaining.size > 0 && round < rounds - 1) await new Promise(resolve => setTimeout(resolve, 100 * (round + 1)))
  }
  if (remaining.size > 0) {
    const id = [...remaining][0]
    if (corrupt) throw new ChunkCorruptError(`chunk ${id.slice(0, 12)}… was corrupt at every source, ${rounds} times; the stored image is damaged: push this version again`, { chunk: id })
    throw new ChunkNotFoundError(`chunk ${id.slice(0, 12)}… could not be fetched from any source after ${rounds} rounds${lastError != null ? `: ${(lastError as Error).message}` : ''}`, { chunk: id })
  }
  return plain
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
