/**
 * The stored form of a chunk: one codec byte, then the bytes. Chunks are addressed by the SHA-256
 * of their plain content, so a blob is checked after decoding, wherever it came from (the store, a
 * peer, a provider), and bytes that do not hash to their id are never handed on.
 */
import { createHash } from 'node:crypto'
import { promisify } from 'node:util'
import { constants, zstdCompress, zstdDecompressSync } from 'node:zlib'
import { ChunkCorruptError } from './errors.ts'

const compress = promisify(zstdCompress)

export const CODEC_RAW = 1
export const CODEC_ZSTD = 2

/** zstd level 3: about as fast as a disk or a network reads, a third smaller on VM disks. */
export const DEFAULT_ZSTD_LEVEL = 3

/** Keep compression only when it saves at least this fraction. */
const WORTHWHILE = 0.97

export function sha256Hex (data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

export const CHUNK_ID = /^[0-9a-f]{64}$/

/** Compresses off the main thread (libuv's pool); incompressible data is stored raw. */
export async function encodeBlob (plain: Uint8Array, level = DEFAULT_ZSTD_LEVEL): Promise<Buffer> {
  if (level > 0) {
    // One output buffer of the input's size: zlib's default 16 KiB pieces each cost a callback
    // and a copy on the main thread, which dominated a pull's CPU.
    const packed = await compress(plain, { chunkSize: Math.max(64 * 1024, plain.length), params: { [constants.ZSTD_c_compressionLevel]: level } })
    if (packed.length < plain.length * WORTHWHILE) return Buffer.concat([Buffer.from([CODEC_ZSTD]), packed])
  }
  return Buffer.concat([Buffer.from([CODEC_RAW]), plain])
}

/**
 * The plain content of a blob, checked against its id; throws ChunkCorruptError on any mismatch
 * (unknown codec, undecodable, wrong size, wrong hash).
 */
export async function decodeBlob (id: string, stored: Uint8Array, expectedSize?: number): Promise<Buffer> {
  const { plain } = await checkBlob(id, [Buffer.from(stored.buffer, stored.byteOffset, stored.length)], expectedSize)
  return plain.length === 1 ? plain[0] : Buffer.concat(plain)
}

/** A checked chunk: its plain bytes (in pieces), and its stored form when that is one buffer. */
export interface CheckedBlob {
  plain: Buffer[]
  stored?: Buffer
}

/**
 * Decodes and checks a blob that may come in pieces (as a stream delivered it), without copying
 * a raw one: its plain pieces are views of the stored ones. Decompressed and hashed on the calling
 * thread (about a millisecond per MiB): WebCrypto would hash in libuv's pool but copies every
 * chunk on this thread first, which cost about as much as the hash and doubled the memory a pull
 * churns through (each 64 MiB of new buffers sets off a full garbage collection).
 */
export async function checkBlob (id: string, pieces: Buffer[], expectedSize?: number): Promise<CheckedBlob> {
  const first = pieces.find(p => p.length > 0)
  if (first == null) throw chunkCorrupt(id, 'empty')
  const codec = first[0]
  let plain: Buffer[]
  let stored: Buffer | undefined
  if (codec === CODEC_RAW) {
    plain = []
    let skip = 1
    for (const p of pieces) {
      if (skip > 0 && p.length > 0) {
        if (p.length > 1) plain.push(p.subarray(1))
        skip = 0
      } else if (p.length > 0) plain.push(p)
    }
    if (pieces.length === 1) stored = pieces[0]
  } else if (codec === CODEC_ZSTD) {
    stored = pieces.length === 1 ? pieces[0] : Buffer.concat(pieces)
    const body = stored.subarray(1)
    try {
      // On this thread, into one buffer: the pool's version also copies its output once more at
      // the end, and those extra bytes alone set off a third more of a pull's garbage collections.
      plain = [zstdDecompressSync(body, expectedSize != null ? { maxOutputLength: expectedSize + 1, chunkSize: Math.max(64 * 1024, expectedSize + 1) } : { chunkSize: 1024 * 1024 })]
    } catch (err) {
      throw chunkCorrupt(id, `zstd: ${(err as Error).message}`)
    }
  } else throw chunkCorrupt(id, `unknown codec ${codec}`)
  const size = plain.reduce((n, p) => n + p.length, 0)
  if (expectedSize != null && size !== expectedSize) throw chunkCorrupt(id, `${size} bytes, expected ${expectedSize}`)
  const hash = createHash('sha256')
  for (const p of plain) hash.update(p)
  if (hash.digest('hex') !== id) throw chunkCorrupt(id, 'content does not match its SHA-256')
  return stored != null ? { plain, stored } : { plain }
}

export function chunkCorrupt (id: string, why: string): ChunkCorruptError {
  return new ChunkCorruptError(`chunk ${id.slice(0, 12)}… is corrupt (${why}); it will be fetched again`, { chunk: id })
}
