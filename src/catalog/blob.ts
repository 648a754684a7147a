/**
 * The stored form of a chunk: one codec byte, then the bytes. Chunks are addressed by the SHA-256
 * of their plain content, so a blob is checked after decoding, wherever it came from (the store, a
 * peer, a provider), and bytes that do not hash to their id are never handed on.
 */
import { createHash, webcrypto } from 'node:crypto'
import { promisify } from 'node:util'
import { constants, zstdCompress, zstdDecompress } from 'node:zlib'
import { ChunkCorruptError } from './errors.ts'

const compress = promisify(zstdCompress)
const decompress = promisify(zstdDecompress)

export const CODEC_RAW = 1
export const CODEC_ZSTD = 2

/** zstd level 3: about as fast as a disk or a network reads, a third smaller on VM disks. */
export const DEFAULT_ZSTD_LEVEL = 3

/** Keep compression only when it saves at least this fraction. */
const WORTHWHILE = 0.97

export function sha256Hex (data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** The same digest computed in libuv's pool (WebCrypto), leaving the main thread to the I/O. */
export async function sha256HexAsync (data: Uint8Array): Promise<string> {
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', data)).toString('hex')
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
  const corrupt = (why: string): ChunkCorruptError => new ChunkCorruptError(`chunk ${id.slice(0, 12)}… is corrupt (${why}); it will be fetched again`, { chunk: id })
  if (stored.length === 0) throw corrupt('empty')
  const body = Buffer.from(stored.buffer, stored.byteOffset + 1, stored.length - 1)
  let plain: Buffer
  if (stored[0] === CODEC_RAW) plain = body
  else if (stored[0] === CODEC_ZSTD) {
    try {
      plain = await decompress(body, expectedSize != null ? { maxOutputLength: expectedSize + 1, chunkSize: Math.max(64 * 1024, expectedSize + 1) } : { chunkSize: 1024 * 1024 })
    } catch (err) {
      throw corrupt(`zstd: ${(err as Error).message}`)
    }
  } else throw corrupt(`unknown codec ${stored[0]}`)
  if (expectedSize != null && plain.length !== expectedSize) throw corrupt(`${plain.length} bytes, expected ${expectedSize}`)
  if (await sha256HexAsync(plain) !== id) throw corrupt('content does not match its SHA-256')
  return plain
}
