/**
 * Content-defined chunking (FastCDC with normalised chunking, a 32-bit gear hash). A boundary
 * depends only on the bytes just before it, so an edit in a large disk moves the boundaries near
 * the edit and leaves the rest of the chunks, and therefore their ids, as they were.
 *
 * The gear table and the masks are part of the format: changing them changes every boundary and
 * loses deduplication against everything already pushed, so they are versioned by `algorithm`.
 */
import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'
import { ChunkingParamsError } from './errors.ts'

export const CHUNKER_ALGORITHM = 'fastcdc-gear32-v1'

export interface ChunkingParams {
  algorithm: typeof CHUNKER_ALGORITHM
  /** No boundary before this many bytes (except at the end of a file). */
  minSize: number
  /** The size chunks tend to; a power of two. */
  avgSize: number
  /** A boundary is forced here. */
  maxSize: number
}

/** 256 KiB / 1 MiB / 4 MiB: few enough objects for a bucket, small enough that an edit stays local. */
export const DEFAULT_CHUNKING: ChunkingParams = { algorithm: CHUNKER_ALGORITHM, minSize: 256 * 1024, avgSize: 1024 * 1024, maxSize: 4 * 1024 * 1024 }

/** The gear table: 256 fixed pseudo-random words, derived from SHA-256 so anyone can rebuild it. */
const GEAR = (() => {
  const table = new Int32Array(256)
  for (let i = 0; i < 256; i++) table[i] = createHash('sha256').update(`corral-gear-${i}`).digest().readInt32BE(0)
  return table
})()

/** `bits` one-bits taken from the top of a 32-bit word (those bits mix in the most bytes). */
function topMask (bits: number): number {
  return bits >= 32 ? -1 : ((-1 << (32 - bits)) | 0)
}

export function checkChunkingParams (params: ChunkingParams): void {
  const { algorithm, minSize, avgSize, maxSize } = params
  if (algorithm !== CHUNKER_ALGORITHM) throw new ChunkingParamsError(`unknown chunking algorithm "${String(algorithm)}"; this corral knows ${CHUNKER_ALGORITHM}`)
  const whole = (n: number): boolean => Number.isInteger(n) && n > 0
  if (!whole(minSize) || !whole(avgSize) || !whole(maxSize)) throw new ChunkingParamsError('chunk sizes must be positive whole numbers of bytes')
  if ((avgSize & (avgSize - 1)) !== 0 || avgSize < 256 || avgSize > 2 ** 26) throw new ChunkingParamsError(`avgSize ${avgSize} must be a power of two from 256 B to 64 MiB`)
  if (!(minSize < avgSize && avgSize < maxSize)) throw new ChunkingParamsError(`chunk sizes must grow: minSize ${minSize} < avgSize ${avgSize} < maxSize ${maxSize}`)
  if (maxSize > 64 * 1024 * 1024) throw new ChunkingParamsError(`maxSize ${maxSize} exceeds 64 MiB`)
}

/** The masks of normalised chunking (level 2): harder to cut before avgSize, easier after. */
function masksOf (params: ChunkingParams): { small: number, large: number } {
  const bits = Math.round(Math.log2(params.avgSize))
  return { small: topMask(bits + 2), large: topMask(bits - 2) }
}

/**
 * Length of the chunk that starts at `start`, looking at no more than `end`. The caller must give
 * at least maxSize bytes unless this is the end of the data; otherwise results would depend on
 * how the data was read.
 */
export function cutPoint (buf: Uint8Array, start: number, end: number, params: ChunkingParams, masks = masksOf(params)): number {
  const n = end - start
  if (n <= params.minSize) return n
  const normal = start + Math.min(params.avgSize, n)
  const limit = start + Math.min(params.maxSize, n)
  const { small, large } = masks
  let h = 0
  let i = start + params.minSize
  for (; i < normal; i++) {
    h = ((h << 1) + GEAR[buf[i]]) | 0
    if ((h & small) === 0) return i - start + 1
  }
  for (; i < limit; i++) {
    h = ((h << 1) + GEAR[buf[i]]) | 0
    if ((h & large) === 0) return i - start + 1
  }
  return limit - start
}

/** Chunk lengths of a whole buffer (tests and small data). */
export function chunkLengths (data: Uint8Array, params: ChunkingParams = DEFAULT_CHUNKING): number[] {
  checkChunkingParams(params)
  const masks = masksOf(params)
  const lengths: number[] = []
  let start = 0
  while (start < data.length) {
    const len = cutPoint(data, start, data.length, params, masks)
    lengths.push(len)
    start += len
  }
  return lengths
}

export interface FileChunk {
  offset: number
  /** A copy the caller owns. */
  data: Buffer
}

/** Bytes read from the file at a time, beside the carried-over tail of at most maxSize. */
const READ_BLOCK = 16 * 1024 * 1024

/** The chunks of a file in order; boundaries do not depend on READ_BLOCK. */
export async function * chunkFile (path: string, params: ChunkingParams = DEFAULT_CHUNKING, signal?: AbortSignal): AsyncGenerator<FileChunk> {
  checkChunkingParams(params)
  const masks = masksOf(params)
  const handle = await open(path, 'r')
  try {
    const buf = Buffer.allocUnsafe(params.maxSize + READ_BLOCK)
    let filled = 0
    let fileOffset = 0
    let eof = false
    for (;;) {
      signal?.throwIfAborted()
      while (!eof && filled < buf.length) {
        const { bytesRead } = await handle.read(buf, filled, buf.length - filled, null)
        if (bytesRead === 0) eof = true
        filled += bytesRead
      }
      let start = 0
      while (start < filled && (eof || filled - start >= params.maxSize)) {
        const len = cutPoint(buf, start, filled, params, masks)
        yield { offset: fileOffset, data: Buffer.from(buf.subarray(start, start + len)) }
        fileOffset += len
        start += len
      }
      if (eof) return
      buf.copyWithin(0, start, filled)
      filled -= start
    }
  } finally {
    await handle.close()
  }
}
