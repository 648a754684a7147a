/**
 * A content-addressed folder of chunk blobs (stored form: codec byte + bytes), `<dir>/<aa>/<id>`.
 * Writes land whole or not at all (temp file, then rename), so a node killed mid-pull leaves only
 * complete chunks and the pull resumes from them. Reads are checked against the id; a bad blob is
 * deleted so it is fetched again. Last use is kept for least-recently-used eviction.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { CHUNK_ID, decodeBlob } from './blob.ts'
import { ChunkCorruptError, ChunkNotFoundError } from './errors.ts'

export interface ChunkStoreComponents {
  logger: Logger
  clock?: () => number
}

export interface ChunkStoreInit {
  dir: string
}

interface Held { stored: number, lastUsed: number }

export class ChunkStore {
  readonly dir: string
  private readonly log: Logger
  private readonly clock: () => number
  private readonly index = new Map<string, Held>()
  private readonly made = new Set<string>()
  private bytes = 0

  constructor (components: ChunkStoreComponents, init: ChunkStoreInit) {
    this.log = components.logger
    this.clock = components.clock ?? Date.now
    this.dir = init.dir
  }

  /** Indexes what is on disk and clears temp files a killed process left. */
  async open (): Promise<void> {
    await mkdir(join(this.dir, 'tmp'), { recursive: true })
    await rm(join(this.dir, 'tmp'), { recursive: true, force: true })
    await mkdir(join(this.dir, 'tmp'), { recursive: true })
    this.index.clear()
    this.bytes = 0
    for (const sub of await readdir(this.dir)) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue
      this.made.add(sub)
      for (const name of await readdir(join(this.dir, sub))) {
        if (!CHUNK_ID.test(name)) continue
        const st = await stat(join(this.dir, sub, name)).catch(() => undefined)
        if (st == null) continue
        this.index.set(name, { stored: st.size, lastUsed: st.mtimeMs })
        this.bytes += st.size
      }
    }
  }

  private path (id: string): string {
    return join(this.dir, id.slice(0, 2), id)
  }

  has (id: string): boolean {
    return this.index.has(id)
  }

  storedSize (id: string): number | undefined {
    return this.index.get(id)?.stored
  }

  /** Stored bytes held. */
  totalBytes (): number {
    return this.bytes
  }

  count (): number {
    return this.index.size
  }

  /** Ids from least to most recently used. */
  leastRecentlyUsed (): Array<{ id: string, stored: number, lastUsed: number }> {
    return [...this.index].map(([id, h]) => ({ id, ...h })).sort((a, b) => a.lastUsed - b.lastUsed)
  }

  /**
   * Stores a blob. Unless `verified` (the caller just encoded or checked it), it is decoded and
   * checked first, so nothing corrupt is ever kept. Storing an id already held is a no-op.
   */
  async put (id: string, stored: Uint8Array, options: { verified?: boolean, plainSize?: number } = {}): Promise<void> {
    if (!CHUNK_ID.test(id)) throw new ChunkCorruptError(`"${id}" is not a chunk id`, { chunk: id })
    if (this.index.has(id)) return
    if (options.verified !== true) await decodeBlob(id, stored, options.plainSize)
    const sub = id.slice(0, 2)
    if (!this.made.has(sub)) {
      await mkdir(join(this.dir, sub), { recursive: true })
      this.made.add(sub)
    }
    const tmp = join(this.dir, 'tmp', `${id}.${randomBytes(4).toString('hex')}`)
    await writeFile(tmp, stored)
    await rename(tmp, this.path(id))
    if (!this.index.has(id)) {
      this.index.set(id, { stored: stored.length, lastUsed: this.clock() })
      this.bytes += stored.length
      // The file's mtime is "now" already; only a clock that is not the wall clock (tests) needs it set.
      if (Math.abs(this.clock() - Date.now()) > 1000) this.touch(id)
    }
  }

  /** The stored bytes as they are (for a peer, which checks them itself). */
  async readStored (id: string): Promise<Buffer> {
    if (!this.index.has(id)) throw new ChunkNotFoundError(`chunk ${id.slice(0, 12)}… is not in this node's cache`, { chunk: id })
    try {
      const data = await readFile(this.path(id))
      this.touch(id)
      return data
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.forget(id)
        throw new ChunkNotFoundError(`chunk ${id.slice(0, 12)}… vanished from this node's cache`, { chunk: id })
      }
      throw err
    }
  }

  /** The plain content, checked; a corrupt blob is removed and ChunkCorruptError thrown. */
  async readPlain (id: string, plainSize?: number): Promise<Buffer> {
    const stored = await this.readStored(id)
    try {
      return await decodeBlob(id, stored, plainSize)
    } catch (err) {
      if (err instanceof ChunkCorruptError) {
        this.log.warn({ chunk: id }, 'a cached chunk is corrupt; removing it so it is fetched again')
        await this.remove(id)
      }
      throw err
    }
  }

  async remove (id: string): Promise<void> {
    this.forget(id)
    await rm(this.path(id), { force: true })
  }

  private forget (id: string): void {
    const held = this.index.get(id)
    if (held == null) return
    this.index.delete(id)
    this.bytes -= held.stored
  }

  /** Marks a chunk used now; the file's mtime carries it over a restart. */
  touch (id: string): void {
    const held = this.index.get(id)
    if (held == null) return
    held.lastUsed = this.clock()
    const when = new Date(held.lastUsed)
    utimes(this.path(id), when, when).catch(() => {})
  }
}
