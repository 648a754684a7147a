/**
 * Unpacking a manifest into a folder: every entry in a staging folder beside the destination, each
 * file written chunk by chunk at its offset (zero runs are left as holes), modes applied last, then
 * one rename. A crash leaves a staging folder to delete, never a half-written image under its name.
 */
import { randomBytes } from 'node:crypto'
import { chmod, lstat, mkdir, open, readdir, rename, rm, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { ZERO_CHUNK, type BundleManifest } from './manifest.ts'
import { forEachLimit } from './pool.ts'

export interface UnpackOptions {
  /** Plain, verified bytes of a chunk (from the local store, which fetches what it lacks). */
  readChunk: (id: string, size: number) => Promise<Buffer>
  concurrency?: number
  signal?: AbortSignal
  onProgress?: (bytesWritten: number, totalBytes: number) => void
}

export const STAGING_PREFIX = '.unpacking-'

/** Writes the bundle to `<parentDir>/<manifest.root>` (which must not exist) and returns that path. */
export async function unpackBundle (manifest: BundleManifest, parentDir: string, options: UnpackOptions): Promise<string> {
  const final = join(parentDir, manifest.root)
  const staging = join(parentDir, `${STAGING_PREFIX}${manifest.root}-${randomBytes(4).toString('hex')}`)
  await mkdir(staging, { recursive: true })
  let written = 0
  try {
    for (const entry of manifest.entries) {
      options.signal?.throwIfAborted()
      const path = join(staging, ...entry.path.split('/'))
      if (entry.type === 'dir') await mkdir(path, { mode: 0o700 })
      else if (entry.type === 'symlink') await symlink(entry.target, path)
      else {
        const handle = await open(path, 'wx', 0o600)
        try {
          const jobs: Array<{ id: string, size: number, offset: number }> = []
          let offset = 0
          for (const [id, size] of entry.chunks) {
            if (id !== ZERO_CHUNK) jobs.push({ id, size, offset })
            offset += size
          }
          await forEachLimit(jobs, options.concurrency ?? 4, async job => {
            options.signal?.throwIfAborted()
            const data = await options.readChunk(job.id, job.size)
            let done = 0
            while (done < data.length) done += (await handle.write(data, done, data.length - done, job.offset + done)).bytesWritten
            written += data.length
            options.onProgress?.(written, manifest.size)
          })
          // Zero chunks were skipped: the file's length makes them holes.
          await handle.truncate(entry.size)
          written += entry.chunks.filter(([id]) => id === ZERO_CHUNK).reduce((n, [, size]) => n + size, 0)
          options.onProgress?.(written, manifest.size)
        } finally {
          await handle.close()
        }
      }
    }
    // Modes last, deepest first, so read-only folders do not stop their own contents being written.
    for (const entry of [...manifest.entries].reverse()) {
      if (entry.type === 'symlink') continue
      await chmod(join(staging, ...entry.path.split('/')), entry.mode)
    }
    await chmod(staging, 0o755)
    await rename(staging, final)
    return final
  } catch (err) {
    await removeTree(staging)
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
