// What dist/ was compiled from: one line per file under src/ with its SHA-1, written by
// scripts/build.js into dist/.source-stamp. bin/corral.js runs dist/ only while the stamp still
// matches src/ (contents, not times: a clone, checkout or copy changes times but not contents).
// Plain JavaScript: it runs before anything TypeScript can.
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative, sep } from 'node:path'

export const STAMP_FILE = '.source-stamp'

/** The stamp of root/src as it is now (about 2 ms for the ~170 files). */
export function sourceStamp (root) {
  const src = join(root, 'src')
  const files = readdirSync(src, { recursive: true, withFileTypes: true })
    .filter(entry => entry.isFile())
    .map(entry => join(entry.parentPath, entry.name))
    .sort()
  return files.map(file => `${createHash('sha1').update(readFileSync(file)).digest('hex')} ${relative(src, file).split(sep).join('/')}\n`).join('')
}

/** True when root/dist holds a build of the sources as they are now. */
export function distIsCurrent (root) {
  let stamp
  try {
    stamp = readFileSync(join(root, 'dist', STAMP_FILE), 'utf8')
  } catch {
    return false
  }
  try {
    return stamp === sourceStamp(root)
  } catch {
    return false
  }
}
