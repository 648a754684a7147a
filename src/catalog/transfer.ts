/**
 * Bringing a manifest's chunks into the local store: what is held already is skipped (so a pull
 * resumes after a restart), the rest is fetched in parallel from the sources the routing gives
 * (peers first, the provider last), and every blob is checked before it is kept. A corrupt or
 * missing blob is tried at the next source, then again in a later round, a bounded number of times.
 */
import type { Logger } from 'pino'
import type { ChunkStore } from './chunk-store.ts'
import { blobIds, type BundleManifest } from './manifest.ts'
import { ChunkCorruptError, ChunkNotFoundError } from './errors.ts'
import { forEachLimit } from './pool.ts'
import type { TransferProgress } from './types.ts'

export interface ChunkSource {
  kind: 'peer' | 'provider'
  /** For logs: `peer n2`, `s3 bucket ...`. */
  label: string
  /** The blob's stored bytes (unchecked: the store checks them). */
  fetch: (id: string, signal: AbortSignal) => Promise<Buffer>
}

export interface ChunkRouting {
  /** Where to look for a chunk, best first, the provider last; `round` counts failed rounds. */
  sources: (id: string, round: number) => ChunkSource[]
}

export interface FetchOptions {
  /** Chunks in flight at once (fetchMissing only). */
  concurrency?: number
  /** Rounds over all sources before a chunk is given up. */
  rounds?: number
  signal: AbortSignal
  logger: Logger
  /** Called after each chunk lands (progress is updated in place). */
  onChunk?: () => void
}

const DEFAULT_ROUNDS = 3

/** Fills progress's chunk and byte totals from what the store already holds. */
export function countHeld (manifest: BundleManifest, store: ChunkStore, progress: TransferProgress): string[] {
  const ids = blobIds(manifest)
  progress.chunksTotal = ids.length
  progress.bytesTotal = manifest.storedSize
  progress.chunksDone = 0
  progress.bytesDone = 0
  const missing: string[] = []
  for (const id of ids) {
    if (store.has(id)) {
      progress.chunksDone++
      progress.bytesDone += manifest.blobs[id].stored
    } else missing.push(id)
  }
  progress.chunksReused = progress.chunksDone
  return missing
}

/** Fetches one chunk into the store, trying sources round by round; throws once all rounds fail. */
export type FetchCounters = Pick<TransferProgress, 'bytesFromPeers' | 'bytesFromProvider' | 'corruptChunks'>

export async function fetchChunk (id: string, plainSize: number, store: ChunkStore, routing: ChunkRouting, progress: FetchCounters, options: FetchOptions): Promise<void> {
  const rounds = options.rounds ?? DEFAULT_ROUNDS
  let lastError: unknown
  for (let round = 0; round < rounds; round++) {
    for (const source of routing.sources(id, round)) {
      options.signal.throwIfAborted()
      // Another pull, or a peer's request served from here, may have brought it meanwhile.
      if (store.has(id)) return
      try {
        const stored = await source.fetch(id, options.signal)
        await store.put(id, stored, { plainSize })
        if (source.kind === 'peer') progress.bytesFromPeers += stored.length
        else progress.bytesFromProvider += stored.length
        return
      } catch (err) {
        if (options.signal.aborted) throw err
        lastError = err
        if (err instanceof ChunkCorruptError) {
          progress.corruptChunks++
          options.logger.warn({ chunk: id, source: source.label }, 'a fetched chunk was corrupt; fetching it again')
        } else {
          options.logger.debug({ chunk: id, source: source.label, err: (err as Error).message }, 'chunk source failed; trying the next')
        }
      }
    }
    if (round < rounds - 1) await new Promise(resolve => setTimeout(resolve, 100 * (round + 1)))
  }
  if (lastError instanceof ChunkCorruptError) {
    throw new ChunkCorruptError(`chunk ${id.slice(0, 12)}… was corrupt at every source, ${rounds} times; the stored image is damaged: push this version again`, { chunk: id })
  }
  throw new ChunkNotFoundError(`chunk ${id.slice(0, 12)}… could not be fetched from any source after ${rounds} rounds: ${(lastError as Error | undefined)?.message ?? 'no sources'}`, { chunk: id })
}

/** Fetches every chunk of the manifest the store lacks, through `obtain` (which may share fetches). */
export async function fetchMissing (manifest: BundleManifest, missing: string[], progress: TransferProgress, options: FetchOptions & { obtain: (id: string, plainSize: number) => Promise<void> }): Promise<void> {
  await forEachLimit(missing, options.concurrency ?? 4, async id => {
    const info = manifest.blobs[id]
    await options.obtain(id, info.size)
    progress.chunksDone++
    progress.bytesDone += info.stored
    options.onChunk?.()
  })
}
