/**
 * How the catalog lays its objects out in a provider:
 *   packs/<aa>/<sha256>                  chunk blobs appended into objects of about 32 MiB
 *   chunks/<aa>/<sha256>                 a chunk as its own object (read only; older pushes)
 *   manifests/<sha256>.json              a bundle manifest, named by its digest
 *   images/<id>/<version>/<arch>.json    the version record, so a bucket describes itself
 * A manifest says where each chunk is (pack and offset). Packs keep requests few: a pull reads
 * byte ranges spanning many chunks, at close to the speed of one large download. A push learns
 * where the chunks it shares with earlier versions already are from their manifests, and stores
 * only the new ones.
 */
import { createHash } from 'node:crypto'
import type { BlobSink } from './pack.ts'
import { decodeManifest, encodeManifest, manifestDigest, type BlobInfo, type BundleManifest } from './manifest.ts'
import { ObjectNotFoundError, ManifestInvalidError } from './errors.ts'
import { TaskPool } from './pool.ts'
import type { ProviderCallOptions, StorageProvider } from './providers/types.ts'
import type { CatalogVersion } from './types.ts'

export const chunkKey = (id: string): string => `chunks/${id.slice(0, 2)}/${id}`
export const packKey = (pack: string): string => `packs/${pack.slice(0, 2)}/${pack}`
export const manifestKey = (digest: string): string => `manifests/${digest}.json`
export const versionKey = (image: string, version: string, arch: string): string => `images/${image}/${version}/${arch}.json`

/** Where a stored chunk is: in a pack at an offset, or (no pack) its own object. */
export type Location = Pick<BlobInfo, 'stored' | 'pack' | 'offset'>

export interface PackSinkOptions extends ProviderCallOptions {
  /** Chunks already in the provider (from earlier manifests): not stored again. */
  known: Map<string, Location>
  /** A pack is uploaded once it holds this many bytes. */
  packBytes?: number
  /** Packs uploading at once. */
  concurrency?: number
  /** Also gets every new chunk (the pushing node's cache). */
  also?: BlobSink
}

/** Largest gap between two wanted chunks of a pack that one ranged read spans rather than splits. */
const MAX_GAP = 64 * 1024
/** Largest single ranged read. */
const MAX_RANGE = 32 * 1024 * 1024

export class Repository {
  readonly provider: StorageProvider

  constructor (provider: StorageProvider) {
    this.provider = provider
  }

  /** A sink for packFolder that appends new chunks into packs and uploads each as it fills. */
  packSink (options: PackSinkOptions): BlobSink & { locate: (id: string) => Location | undefined, flush: () => Promise<void>, packsWritten: () => number } {
    const packBytes = options.packBytes ?? 32 * 1024 * 1024
    const pool = new TaskPool(options.concurrency ?? 2)
    const written = new Map<string, Location>()
    let parts: Array<{ id: string, stored: Buffer }> = []
    let bytes = 0
    let packs = 0
    const upload = async (batch: Array<{ id: string, stored: Buffer }>): Promise<void> => {
      const data = Buffer.concat(batch.map(p => p.stored))
      const pack = createHash('sha256').update(data).digest('hex')
      await this.provider.put(packKey(pack), data, options)
      let offset = 0
      for (const p of batch) {
        written.set(p.id, { stored: p.stored.length, pack, offset })
        offset += p.stored.length
      }
      packs++
    }
    const cut = async (): Promise<void> => {
      if (parts.length === 0) return
      const batch = parts
      parts = []
      bytes = 0
      await pool.add(async () => await upload(batch))
    }
    return {
      has: async id => options.known.get(id)?.stored ?? written.get(id)?.stored,
      put: async (id, stored, plainSize) => {
        parts.push({ id, stored })
        bytes += stored.length
        await options.also?.put(id, stored, plainSize)
        if (bytes >= packBytes) await cut()
      },
      locate: id => options.known.get(id) ?? written.get(id),
      flush: async () => {
        await cut()
        await pool.drain()
      },
      packsWritten: () => packs
    }
  }

  /**
   * The stored bytes of these chunks (unchecked: the caller checks each against its id): chunks
   * in the same pack come in ranged reads that span neighbours (a gap under 64 KiB is read through),
   * others one object each. A chunk the provider lacks is missing from the result.
   */
  async fetchBlobs (blobs: Array<{ id: string, info: Location }>, options?: ProviderCallOptions): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>()
    const { loose, reads } = planReads(blobs)
    for (const id of loose) {
      try {
        out.set(id, await this.provider.get(chunkKey(id), options))
      } catch (err) {
        if (!(err instanceof ObjectNotFoundError)) throw err
      }
    }
    for (const read of reads) {
      let data: Buffer
      try {
        data = await this.provider.getRange(packKey(read.pack), read.start, read.end, options)
      } catch (err) {
        if (err instanceof ObjectNotFoundError) continue
        throw err
      }
      for (const b of read.blobs) {
        const slice = data.subarray(b.offset - read.start, b.offset - read.start + b.stored)
        if (slice.length === b.stored) out.set(b.id, slice)
      }
    }
    return out
  }

  /**
   * The same reads as fetchBlobs, but each chunk is handed to `onBlob` as soon as its bytes are
   * in, as the pieces the provider delivered them in (views, not copies), when the provider can
   * stream (getRangeStream). A chunk the provider lacks is never handed on; a read that fails
   * midway throws after the chunks it completed.
   */
  async streamBlobs (blobs: Array<{ id: string, info: Location }>, onBlob: (id: string, pieces: Buffer[]) => void, options?: ProviderCallOptions): Promise<void> {
    const { loose, reads } = planReads(blobs)
    for (const id of loose) {
      try {
        onBlob(id, [await this.provider.get(chunkKey(id), options)])
      } catch (err) {
        if (!(err instanceof ObjectNotFoundError)) throw err
      }
    }
    for (const read of reads) {
      const key = packKey(read.pack)
      const pieces = this.provider.getRangeStream?.(key, read.start, read.end, options) ?? oneRead(this.provider, key, read.start, read.end, options)
      let pos = read.start
      let j = 0
      let parts: Buffer[] = []
      try {
        for await (let piece of pieces) {
          // Bounded by the piece: every pass consumes part of it, or ends at the last chunk.
          while (piece.length > 0 && j < read.blobs.length) {
            const b = read.blobs[j]
            if (pos < b.offset) {
              const skip = Math.min(b.offset - pos, piece.length)
              piece = piece.subarray(skip)
              pos += skip
              continue
            }
            const take = Math.min(b.offset + b.stored - pos, piece.length)
            parts.push(piece.subarray(0, take))
            piece = piece.subarray(take)
            pos += take
            if (pos === b.offset + b.stored) {
              onBlob(b.id, parts)
              parts = []
              j++
            }
          }
        }
      } catch (err) {
        if (err instanceof ObjectNotFoundError && pos === read.start) continue
        throw err
      }
    }
  }

  async putManifest (manifest: BundleManifest, options?: ProviderCallOptions): Promise<string> {
    const bytes = encodeManifest(manifest)
    const digest = manifestDigest(bytes)
    await this.provider.put(manifestKey(digest), bytes, options)
    return digest
  }

  /** The manifest, checked against its digest and validated. */
  async getManifest (digest: string, options?: ProviderCallOptions): Promise<BundleManifest> {
    let bytes: Buffer
    try {
      bytes = await this.provider.get(manifestKey(digest), options)
    } catch (err) {
      if (err instanceof ObjectNotFoundError) throw new ManifestInvalidError(`manifest ${digest.slice(0, 12)}… is missing from ${this.provider.describe()}; the version was deleted from storage or pushed elsewhere`, { manifest: digest })
      throw err
    }
    return decodeManifest(bytes, digest)
  }

  async putVersionDoc (version: CatalogVersion, options?: ProviderCallOptions): Promise<void> {
    await this.provider.put(versionKey(version.image, version.version, version.arch), Buffer.from(JSON.stringify(version, null, 2)), options)
  }
}

interface PlannedRead { pack: string, start: number, end: number, blobs: Array<{ id: string, offset: number, stored: number }> }

/**
 * How to read these chunks: packed ones in ranged reads of their packs that span neighbours (a
 * gap up to MAX_GAP is read through, a read is at most MAX_RANGE), chunks of their own (`loose`)
 * one object each.
 */
function planReads (blobs: Array<{ id: string, info: Location }>): { loose: string[], reads: PlannedRead[] } {
  const loose: string[] = []
  const byPack = new Map<string, Array<{ id: string, offset: number, stored: number }>>()
  for (const { id, info } of blobs) {
    if (info.pack == null || info.offset == null) {
      loose.push(id)
      continue
    }
    let list = byPack.get(info.pack)
    if (list == null) byPack.set(info.pack, list = [])
    list.push({ id, offset: info.offset, stored: info.stored })
  }
  const reads: PlannedRead[] = []
  for (const [pack, list] of byPack) {
    list.sort((a, b) => a.offset - b.offset)
    let i = 0
    while (i < list.length) {
      const start = list[i].offset
      let end = start + list[i].stored
      let j = i + 1
      while (j < list.length && list[j].offset - end <= MAX_GAP && list[j].offset + list[j].stored - start <= MAX_RANGE) {
        end = Math.max(end, list[j].offset + list[j].stored)
        j++
      }
      reads.push({ pack, start, end, blobs: list.slice(i, j) })
      i = j
    }
  }
  return { loose, reads }
}

/** A provider without streaming reads: the range in one piece. */
async function * oneRead (provider: StorageProvider, key: string, start: number, end: number, options?: ProviderCallOptions): AsyncIterable<Buffer> {
  yield await provider.getRange(key, start, end, options)
}

/** Where each packed chunk of these manifests is, for a push to the same provider to reuse. */
export function knownLocations (manifests: BundleManifest[]): Map<string, Location> {
  const known = new Map<string, Location>()
  for (const m of manifests) {
    for (const [id, b] of Object.entries(m.blobs)) {
      if (b.pack != null && b.offset != null && !known.has(id)) known.set(id, { stored: b.stored, pack: b.pack, offset: b.offset })
    }
  }
  return known
}
