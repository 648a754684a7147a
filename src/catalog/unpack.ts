/**
 * Unpacking a manifest into a folder. A BundleWriter lays the tree out in a staging folder beside
 * the destination (folders, symlinks, files at their full size: zero runs stay holes), then takes
 * chunks in any order as they arrive and writes each at every offset that uses it; modes are
 * applied last, then one rename. A crash never leaves a half-written image under its name.
 *
 * A resumable writer keeps a journal of the chunks it placed beside its staging folder. Opened
 * again after a crash, it re-reads each journalled chunk from the staging files and keeps those
 * whose bytes still hash to their id (a crash can lose writes the journal recorded).
 */
import { createHash, randomBytes } from 'node:crypto'
import { appendFile, chmod, lstat, mkdir, open, readdir, readFile, rename, rm, symlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { ZERO_CHUNK, type BundleManifest } from './manifest.ts'
import { forEachLimit } from './pool.ts'

export const STAGING_PREFIX = '.unpacking-'

/** Up to this many files are kept open while chunks arrive; bundles with more open per write. */
const MAX_OPEN_FILES = 256
/** Buffers in one vectored write (Linux takes up to 1024). */
const MAX_IOV = 512

/** What is left of `pieces` after their first `skip` bytes. */
function rest (pieces: Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = []
  for (const p of pieces) {
    if (skip >= p.length) { skip -= p.length; continue }
    out.push(skip > 0 ? p.subarray(skip) : p)
    skip = 0
  }
  return out
}

export class BundleWriter {
  readonly manifest: BundleManifest
  readonly final: string
  private readonly staging: string
  /** Where each chunk goes: file index and offset. */
  private readonly refs = new Map<string, Array<{ file: number, offset: number }>>()
  private readonly files: string[] = []
  private readonly handles = new Map<number, FileHandle>()
  private readonly placed = new Set<string>()
  private readonly placing = new Set<string>()
  private journalHandle?: Promise<FileHandle>
  /** Placed ids waiting for their journal line, and the write under way. */
  private unjournalled: string[] = []
  private journalling?: Promise<void>
  private bytes = 0

  /** Present for a resumable writer: one placed chunk id per line. */
  private readonly journal?: string

  private constructor (manifest: BundleManifest, parentDir: string, stagingName?: string) {
    this.manifest = manifest
    this.final = join(parentDir, manifest.root)
    this.staging = join(parentDir, stagingName ?? `${STAGING_PREFIX}${manifest.root}-${randomBytes(4).toString('hex')}`)
    if (stagingName != null) this.journal = `${this.staging}.placed`
  }

  /** Creates the staging tree; the destination `<parentDir>/<root>` must not exist. */
  static async create (manifest: BundleManifest, parentDir: string): Promise<BundleWriter> {
    const writer = new BundleWriter(manifest, parentDir)
    await mkdir(writer.staging, { recursive: true })
    try {
      await writer.layout(false)
    } catch (err) {
      await writer.abort()
      throw err
    }
    return writer
  }

  /**
   * A writer that survives a crash: its staging folder has a fixed name, and what an earlier run
   * placed there (and still hashes right) counts as placed.
   */
  static async resumable (manifest: BundleManifest, parentDir: string): Promise<BundleWriter> {
    const writer = new BundleWriter(manifest, parentDir, `${STAGING_PREFIX}${manifest.root}`)
    const journal = await readFile(writer.journal as string, 'utf8').catch(() => undefined)
    const resuming = journal != null && await lstat(writer.staging).then(st => st.isDirectory(), () => false)
    if (!resuming) {
      await removeTree(writer.staging)
      await rm(writer.journal as string, { force: true })
      await mkdir(writer.staging, { recursive: true })
    }
    try {
      await writer.layout(resuming)
      if (resuming) await writer.recheck(new Set((journal as string).split('\n').filter(l => /^[0-9a-f]{64}$/.test(l))))
    } catch (err) {
      await writer.abort()
      throw err
    }
    return writer
  }

  /** Keeps the journalled chunks whose bytes in the staging files still hash to their id. */
  private async recheck (journalled: Set<string>): Promise<void> {
    const good: string[] = []
    for (const id of journalled) {
      const plain = await this.readPlaced(id, true)
      if (plain != null) {
        this.placed.add(id)
        this.bytes += plain.length * (this.refs.get(id)?.length ?? 0)
        good.push(id)
      }
    }
    await appendFile(this.journal as string, '', { flag: 'w' })
    if (good.length > 0) await appendFile(this.journal as string, good.join('\n') + '\n')
  }

  private async layout (resuming: boolean): Promise<void> {
    const withData: number[] = []
    for (const entry of this.manifest.entries) {
      const path = join(this.staging, ...entry.path.split('/'))
      if (entry.type === 'dir') await mkdir(path, { mode: 0o700, recursive: resuming })
      else if (entry.type === 'symlink') {
        if (resuming) await rm(path, { force: true })
        await symlink(entry.target, path)
      } else {
        const file = this.files.push(path) - 1
        const handle = resuming
          ? await open(path, 'r+').catch(async () => await open(path, 'wx+', 0o600))
          : await open(path, 'wx+', 0o600)
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

  has (id: string): boolean {
    return this.placed.has(id)
  }

  /** Writes a chunk's plain bytes wherever the bundle uses it (once; later calls are no-ops). */
  async place (id: string, plain: Buffer): Promise<void> {
    await this.placeAll([[id, plain]])
  }

  /**
   * Writes chunks wherever the bundle uses them (each once; placed ones are skipped). A chunk may
   * come in pieces (as the network delivered it); chunks that follow each other in a file go down
   * in one vectored write, and journal lines are written in batches.
   */
  async placeAll (chunks: Iterable<[id: string, plain: Buffer | Buffer[]]>): Promise<void> {
    const mine: string[] = []
    const writes: Array<{ file: number, offset: number, data: Buffer[], bytes: number }> = []
    for (const [id, plain] of chunks) {
      const refs = this.refs.get(id)
      if (refs == null || this.placed.has(id) || this.placing.has(id)) continue
      this.placing.add(id)
      mine.push(id)
      const data = Array.isArray(plain) ? plain : [plain]
      const bytes = data.reduce((n, p) => n + p.length, 0)
      if (bytes !== this.manifest.blobs[id]?.size) {
        this.placing.delete(id)
        for (const done of mine) this.placing.delete(done)
        throw new Error(`chunk ${id.slice(0, 12)}… came with ${bytes} bytes, the manifest says ${String(this.manifest.blobs[id]?.size)}; not placed`)
      }
      for (const { file, offset } of refs) writes.push({ file, offset, data, bytes })
    }
    if (mine.length === 0) return
    try {
      writes.sort((a, b) => a.file - b.file || a.offset - b.offset)
      const runs: Array<{ file: number, offset: number, data: Buffer[], bytes: number }> = []
      for (const w of writes) {
        const last = runs[runs.length - 1]
        if (last != null && last.file === w.file && last.offset + last.bytes === w.offset && last.data.length + w.data.length <= MAX_IOV) {
          last.data.push(...w.data)
          last.bytes += w.bytes
        } else runs.push({ file: w.file, offset: w.offset, data: [...w.data], bytes: w.bytes })
      }
      await Promise.all(runs.map(async run => await this.writeRun(run.file, run.offset, run.data, run.bytes)))
      for (const id of mine) this.placed.add(id)
      // Journalled only once written, so a restart never trusts a chunk it did not write.
      if (this.journal != null) {
        this.unjournalled.push(...mine)
        this.journalSoon()
        // A chunk counts as placed (progress, resume) only once its journal line is written;
        // concurrent placements still share one journal write.
        for (let round = 0; round < 1000 && this.journalling != null; round++) await this.journalling
      }
    } finally {
      for (const id of mine) this.placing.delete(id)
    }
  }

  private journalSoon (): void {
    this.journalling ??= this.writeJournal().finally(() => {
      this.journalling = undefined
      // Ids that came in as the last write finished.
      if (this.unjournalled.length > 0) this.journalSoon()
    })
  }

  /**
   * Appends placed ids to the journal, as many as are waiting in each write. A line lost to a
   * failed write only means that chunk is fetched again if the pull has to resume.
   */
  private async writeJournal (): Promise<void> {
    // Bounded: each pass takes everything waiting; placements stop once the pull ends.
    for (let pass = 0; pass < 1_000_000 && this.unjournalled.length > 0; pass++) {
      const ids = this.unjournalled
      this.unjournalled = []
      try {
        // One handle, opened once.
        this.journalHandle ??= open(this.journal as string, 'a')
        await (await this.journalHandle).write(ids.join('\n') + '\n')
      } catch {
        return
      }
    }
  }

  private async writeRun (file: number, offset: number, data: Buffer[], bytes: number): Promise<void> {
    let handle = this.handles.get(file)
    const own = handle == null
    if (handle == null) handle = await open(this.files[file], 'r+')
    try {
      let done = 0
      let pieces = data
      // Bounded: every pass writes at least one byte or throws.
      while (done < bytes) {
        const { bytesWritten } = await handle.writev(pieces, offset + done)
        if (bytesWritten <= 0) throw new Error(`writing ${this.files[file]} made no progress`)
        done += bytesWritten
        if (done < bytes) pieces = rest(data, done)
      }
    } finally {
      if (own) await handle.close()
    }
    this.bytes += bytes
  }

  /**
   * A placed chunk's plain bytes read back from the staging files (to serve a peer), or
   * undefined; with `check`, only if they still hash to the id.
   */
  async readPlaced (id: string, check = false): Promise<Buffer | undefined> {
    const ref = this.refs.get(id)?.[0]
    if (ref == null || (!check && !this.placed.has(id))) return undefined
    const size = this.manifest.blobs[id]?.size
    if (size == null) return undefined
    const out = Buffer.allocUnsafe(size)
    let handle = this.handles.get(ref.file)
    const own = handle == null
    try {
      if (handle == null) handle = await open(this.files[ref.file], 'r')
      const { bytesRead } = await handle.read(out, 0, size, ref.offset)
      if (bytesRead !== size) return undefined
    } catch {
      return undefined
    } finally {
      if (own) await handle?.close()
    }
    if (check && createHash('sha256').update(out).digest('hex') !== id) return undefined
    return out
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
    // Still readable (a peer may ask for a chunk between this rename and the image's record).
    for (let i = 0; i < this.files.length; i++) this.files[i] = this.final + this.files[i].slice(this.staging.length)
    if (this.journal != null) await rm(this.journal, { force: true })
    return this.final
  }

  /** Removes the staging folder (and journal): nothing of this unpack is kept. */
  async abort (): Promise<void> {
    await this.closeAll()
    await removeTree(this.staging)
    if (this.journal != null) await rm(this.journal, { force: true })
  }

  /** Closes files but keeps the staging folder and journal for a later resume. */
  async suspend (): Promise<void> {
    await this.closeAll()
  }

  private async closeAll (): Promise<void> {
    // Bounded: each wait ends a write, and nothing is placed once the pull stops.
    for (let i = 0; i < 100 && this.journalling != null; i++) await this.journalling
    for (const handle of this.handles.values()) await handle.close().catch(() => {})
    this.handles.clear()
    const journal = this.journalHandle
    this.journalHandle = undefined
    await journal?.then(async h => await h.close()).catch(() => {})
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
