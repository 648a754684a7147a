/**
 * Unpacking a manifest into a folder. A BundleWriter lays the tree out in a staging folder beside
 * the destination (folders, symlinks, files at their full size: zero runs stay holes), then takes
 * chunks in any order as they arrive and writes each at every offset that uses it; modes are
 * applied last, then one rename. A crash leaves a staging folder to delete, never a half-written
 * image under its name.
 */
import { randomBytes } from 'node:crypto'
import { chmod, lstat, mkdir, open, readdir, rename, rm, symlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { ZERO_CHUNK, type BundleManifest } from './manifest.ts'
import { forEachLimit } from './pool.ts'

export const STAGING_PREFIX = '.unpacking-'

/** Up to this many files are kept open while chunks arrive; bundles with more open per write. */
const MAX_OPEN_FILES = 256

export class BundleWriter {
  readonly manifest: BundleManifest
  readonly final: string
  private readonly staging: string
  /** Where each chunk goes: file index and offset. */
  private readonly refs = new Map<string, Array<{ file: number, offset: number }>>()
  private readonly files: string[] = []
  private readonly handles = new Map<number, FileHandle>()
  private readonly placed = new Set<string>()
  private bytes = 0

  private constructor (manifest: BundleManifest, parentDir: string) {
    this.manifest = manifest
    this.final = join(parentDir, manifest.root)
    this.staging = join(parentDir, `${STAGING_PREFIX}${manifest.root}-${randomBytes(4).toString('hex')}`)
  }

  /** Creates the staging tree; the destination `<parentDir>/<root>` must not exist. */
  static async create (manifest: BundleManifest, parentDir: string): Promise<BundleWriter> {
    const writer = new BundleWriter(manifest, parentDir)
    await mkdir(writer.staging, { recursive: true })
    try {
      await writer.layout()
    } catch (err) {
      await writer.abort()
      throw err
    }
    return writer
  }

  private async layout (): Promise<void> {
    const withData: number[] = []
    for (const entry of this.manifest.entries) {
      const path = join(this.staging, ...entry.path.split('/'))
      if (entry.type === 'dir') await mkdir(path, { mode: 0o700 })
      else if (entry.type === 'symlink') await symlink(entry.target, path)
      else {
        const file = this.files.push(path) - 1
        const handle = await open(path, 'wx', 0o600)
        // The full length now: zero chunks are never written, so they stay holes.
        await handle.truncate(entry.size)
        let offset = 0
        let data = false
        for (const [id, size] of entry.chunks) {
          if (id !== ZERO_CHUNK) {
            let list = this.refs.get(id)
            if (list == null) this.refs.set(id, list = [])
            list.push({ file, offset })
            data = true
          } else this.bytes += size
          offset += size
        }
        if (data && withData.length < MAX_OPEN_FILES) {
          withData.push(file)
          this.handles.set(file, handle)
        } else await handle.close()
      }
    }
  }

  /** Plain bytes written so far (zero runs count as written). */
  get bytesWritten (): number {
    return this.bytes
  }

  /** Chunk ids not written yet. */
  missing (): string[] {
    return [...this.refs.keys()].filter(id => !this.placed.has(id))
  }

  /** Writes a chunk's plain bytes wherever the bundle uses it (once; later calls are no-ops). */
  async place (id: string, plain: Buffer): Promise<void> {
    const refs = this.refs.get(id)
    if (refs == null || this.placed.has(id)) return
    this.placed.add(id)
    for (const { file, offset } of refs) {
      let handle = this.handles.get(file)
      const own = handle == null
      if (handle == null) handle = await open(this.files[file], 'r+')
      try {
        let done = 0
        while (done < plain.length) done += (await handle.write(plain, done, plain.length - done, offset + done)).bytesWritten
      } finally {
        if (own) await handle.close()
      }
      this.bytes += plain.length
    }
  }

  /** Applies modes and moves the bundle to its final path; every chunk must have been placed. */
  async finish (): Promise<string> {
    const missing = this.missing()
    if (missing.length > 0) throw new Error(`bundle ${this.manifest.root} is missing ${missing.length} chunks; it was not finished`)
    await this.closeAll()
    // Modes last, deepest first, so read-only folders do not stop their own contents being written.
    for (const entry of [...this.manifest.entries].reverse()) {
      if (entry.type === 'symlink') continue
      await chmod(join(this.staging, ...entry.path.split('/')), entry.mode)
    }
    await chmod(this.staging, 0o755)
    await rename(this.staging, this.final)
    return this.final
  }

  async abort (): Promise<void> {
    await this.closeAll()
    await removeTree(this.staging)
  }

  private async closeAll (): Promise<void> {
    for (const handle of this.handles.values()) await handle.close().catch(() => {})
    this.handles.clear()
  }
}

export interface UnpackOptions {
  /** Plain, verified bytes of a chunk. */
  readChunk: (id: string, size: number) => Promise<Buffer>
  concurrency?: number
  signal?: AbortSignal
  onProgress?: (bytesWritten: number, totalBytes: number) => void
}

/** Writes the bundle to `<parentDir>/<manifest.root>` (which must not exist) and returns that path. */
export async function unpackBundle (manifest: BundleManifest, parentDir: string, options: UnpackOptions): Promise<string> {
  const writer = await BundleWriter.create(manifest, parentDir)
  try {
    await forEachLimit(writer.missing(), options.concurrency ?? 4, async id => {
      options.signal?.throwIfAborted()
      await writer.place(id, await options.readChunk(id, manifest.blobs[id].size))
      options.onProgress?.(writer.bytesWritten, manifest.size)
    })
    return await writer.finish()
  } catch (err) {
    await writer.abort()
    throw err
  }
}

/** rm -rf that also handles folders unpacked read-only (mode 0555). */
export async function removeTree (path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true })
  } catch {
    await makeWritable(path)
    await rm(path, { recursive: true, force: true })
  }
}

async function makeWritable (path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined)
  if (st == null || !st.isDirectory()) return
  await chmod(path, 0o700).catch(() => {})
  for (const name of await readdir(path).catch(() => [] as string[])) await makeWritable(join(path, name))
}
