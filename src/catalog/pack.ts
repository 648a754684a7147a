/**
 * Packing a bundle folder: walk it (folders, files, symlinks with their modes), cut each file into
 * content-defined chunks, and hand each chunk the destination does not have yet to it, compressed.
 * All-zero chunks are not stored at all. The result is the manifest; the blobs went to the sink.
 */
import { lstat, readdir, readlink } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { chunkFile, DEFAULT_CHUNKING, type ChunkingParams } from './chunker.ts'
import { encodeBlob, sha256Hex, DEFAULT_ZSTD_LEVEL } from './blob.ts'
import { MANIFEST_FORMAT, ZERO_CHUNK, type BlobInfo, type BundleEntry, type BundleManifest, type ChunkRef } from './manifest.ts'
import { BundleInvalidError } from './errors.ts'
import { TaskPool } from './pool.ts'

/** Where packed chunks go: a provider, a local chunk store, or both. */
export interface BlobSink {
  /** The stored size if the destination holds this chunk already (then it is not sent again). */
  has: (id: string) => Promise<number | undefined>
  put: (id: string, stored: Buffer, plainSize: number) => Promise<void>
  /** Called once every chunk was put: store what is still buffered. */
  flush?: () => Promise<void>
  /** Where the destination keeps a chunk (a pack and an offset), recorded in the manifest. */
  locate?: (id: string) => { pack?: string, offset?: number } | undefined
}

export interface PackProgress {
  /** Plain bytes chunked so far, of totalBytes. */
  bytesRead: number
  totalBytes: number
  /** Chunks compressed and sent, and their stored bytes. */
  blobsSent: number
  bytesSent: number
  /** Chunks the destination already had (shared with another version, or an earlier attempt). */
  blobsReused: number
}

export interface PackOptions {
  chunking?: ChunkingParams
  zstdLevel?: number
  /** Chunks compressed and sent at once. */
  concurrency?: number
  signal?: AbortSignal
  onProgress?: (progress: PackProgress) => void
}

interface WalkedFile { path: string, absolute: string, size: number }

/** Entries in preorder (a folder before its contents, names sorted), and the files to chunk. */
async function walk (root: string): Promise<{ entries: BundleEntry[], files: Map<string, WalkedFile> }> {
  const entries: BundleEntry[] = []
  const files = new Map<string, WalkedFile>()
  const visit = async (dir: string, prefix: string): Promise<void> => {
    const names = (await readdir(dir)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    for (const name of names) {
      const absolute = join(dir, name)
      const path = prefix === '' ? name : `${prefix}/${name}`
      const st = await lstat(absolute)
      if (st.isDirectory()) {
        entries.push({ path, type: 'dir', mode: st.mode & 0o7777 })
        await visit(absolute, path)
      } else if (st.isFile()) {
        const entry: BundleEntry = { path, type: 'file', mode: st.mode & 0o7777, size: st.size, chunks: [] }
        entries.push(entry)
        files.set(path, { path, absolute, size: st.size })
      } else if (st.isSymbolicLink()) {
        entries.push({ path, type: 'symlink', target: await readlink(absolute) })
      } else {
        throw new BundleInvalidError(`${absolute} is neither a file, a folder nor a symlink (a socket or device?); a bundle holds only those`, { path: absolute })
      }
    }
  }
  await visit(root, '')
  return { entries, files }
}

/** Packs `folder` into blobs sent to `sink`; resolves with the manifest once every blob is stored. */
export async function packFolder (folder: string, sink: BlobSink, options: PackOptions = {}): Promise<BundleManifest> {
  const root = resolve(folder)
  const st = await lstat(root).catch(() => undefined)
  if (st == null || !st.isDirectory()) throw new BundleInvalidError(`${root} is not a folder: give the image folder (with image.json) or the .pvm/.macvm bundle`, { path: root })
  const chunking = options.chunking ?? DEFAULT_CHUNKING
  const level = options.zstdLevel ?? DEFAULT_ZSTD_LEVEL
  const { entries, files } = await walk(root)
  const progress: PackProgress = { bytesRead: 0, totalBytes: [...files.values()].reduce((n, f) => n + f.size, 0), blobsSent: 0, bytesSent: 0, blobsReused: 0 }
  // Filled as blobs complete (in any order); the manifest lists them in order of first use, so
  // packing the same folder twice gives the same bytes and the same digest.
  const infos = new Map<string, BlobInfo>()
  const seen = new Set<string>()
  const pool = new TaskPool(options.concurrency ?? 4)
  const report = (): void => options.onProgress?.({ ...progress })

  const store = async (id: string, data: Buffer): Promise<void> => {
    const existing = await sink.has(id)
    if (existing != null) {
      infos.set(id, { size: data.length, stored: existing })
      progress.blobsReused++
    } else {
      const stored = await encodeBlob(data, level)
      await sink.put(id, stored, data.length)
      infos.set(id, { size: data.length, stored: stored.length })
      progress.blobsSent++
      progress.bytesSent += stored.length
    }
    report()
  }

  try {
    for (const entry of entries) {
      if (entry.type !== 'file') continue
      const file = files.get(entry.path) as WalkedFile
      const refs: ChunkRef[] = []
      let size = 0
      for await (const { data } of chunkFile(file.absolute, chunking, options.signal)) {
        size += data.length
        progress.bytesRead += data.length
        if (isZero(data)) {
          refs.push([ZERO_CHUNK, data.length])
          continue
        }
        const id = sha256Hex(data)
        refs.push([id, data.length])
        if (seen.has(id)) continue
        seen.add(id)
        await pool.add(async () => await store(id, data))
      }
      // The file changed size while it was read: the manifest would not match what was stored.
      if (size !== file.size) throw new BundleInvalidError(`${file.absolute} changed while it was packed (${file.size} bytes, then ${size}); do not push an image that is in use`, { path: file.absolute })
      entry.chunks = refs
    }
  } catch (err) {
    await pool.settle()
    throw err
  }
  await pool.drain()
  await sink.flush?.()
  report()
  const blobs: Record<string, BlobInfo> = {}
  for (const id of seen) {
    const info = infos.get(id) as BlobInfo
    const at = sink.locate?.(id)
    blobs[id] = at?.pack != null && at.offset != null ? { ...info, pack: at.pack, offset: at.offset } : info
  }
  const storedSize = Object.values(blobs).reduce((n, b) => n + b.stored, 0)
  return { format: MANIFEST_FORMAT, root: basename(root), chunking, entries, blobs, size: progress.totalBytes, storedSize }
}

const ZEROS = Buffer.alloc(64 * 1024)

export function isZero (data: Buffer): boolean {
  for (let off = 0; off < data.length; off += ZEROS.length) {
    const end = Math.min(off + ZEROS.length, data.length)
    if (!data.subarray(off, end).equals(ZEROS.subarray(0, end - off))) return false
  }
  return true
}
