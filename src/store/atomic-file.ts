/**
 * Replace a file so that, whatever moment the process (or the machine) dies, the path holds either
 * the complete old contents or the complete new ones, never a mix or an empty file.
 */
import { randomUUID } from 'node:crypto'
import { open, readdir, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/** `<target>.tmp-<pid>-<uuid>`: never ends in `.json`, so a loader never mistakes it for data. */
const TEMP_NAME = /\.tmp-\d+-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export function isTempFileName (name: string): boolean {
  return TEMP_NAME.test(name)
}

/**
 * Write to a temp file in the same folder (rename is only atomic within one file system), fsync it
 * (so the rename can never expose unwritten blocks), rename it over the target, then fsync the
 * folder (so the rename itself survives a power cut). Resolves only when all of that is done.
 */
export async function writeFileAtomic (path: string, data: string | Uint8Array): Promise<void> {
  const folder = dirname(path)
  const temp = join(folder, `${basename(path)}.tmp-${process.pid}-${randomUUID()}`)
  let renamed = false
  try {
    // 'wx': never follow or reuse something already at the temp name. 0o600: state may hold secrets.
    const handle = await open(temp, 'wx', 0o600)
    try {
      await handle.writeFile(data)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, path)
    renamed = true
    await syncFolder(folder)
  } finally {
    // On failure the target still holds the old contents; only the half-written temp goes.
    if (!renamed) await rm(temp, { force: true })
  }
}

/** fsync a folder so that a rename or create in it is durable. */
export async function syncFolder (folder: string): Promise<void> {
  // Windows cannot open a folder as a file and makes renames durable on its own (NTFS journal).
  if (process.platform === 'win32') return
  const handle = await open(folder, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Delete temp files a crash left behind in `folder`. Call it only while no writer is active
 * there. Nothing acknowledged lives only in a temp file (a write resolves after its rename), so
 * they are safe to drop. Returns the names removed, for the log.
 */
export async function removeTempFiles (folder: string): Promise<string[]> {
  const removed: string[] = []
  for (const name of await readdir(folder)) {
    if (!isTempFileName(name)) continue
    await rm(join(folder, name), { force: true })
    removed.push(name)
  }
  return removed
}
