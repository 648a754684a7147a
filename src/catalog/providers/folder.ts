/**
 * The folder provider: objects are files under a root folder (a local disk or a mounted share).
 * Writes go to a temp file and are renamed into place, so readers never see half an object.
 */
import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { ObjectNotFoundError, ProviderError } from '../errors.ts'
import { checkKey, normalisePrefix, type ObjectInfo, type StorageProvider } from './types.ts'

export interface FolderProviderInit {
  path: string
}

const TMP = '.tmp'

export function createFolderProvider (init: FolderProviderInit): StorageProvider {
  const root = resolve(init.path)
  const file = (key: string): string => join(root, ...checkKey(key).split('/'))
  const wrap = (op: string, key: string, err: unknown): Error => {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return new ObjectNotFoundError(`no object ${key} in folder ${root}`, { provider: 'folder', key })
    return new ProviderError(`folder ${root}: ${op} ${key} failed: ${(err as Error).message}`, { provider: 'folder', key })
  }

  return {
    name: 'folder',
    describe: () => `folder ${root}`,
    async head (key) {
      try {
        const st = await stat(file(key))
        return st.isFile() ? st.size : undefined
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined
        throw wrap('stat', key, err)
      }
    },
    async get (key) {
      try {
        return await readFile(file(key))
      } catch (err) {
        throw wrap('read', key, err)
      }
    },
    async getRange (key, start, end) {
      let handle
      try {
        handle = await open(file(key), 'r')
        const buf = Buffer.allocUnsafe(Math.max(0, end - start))
        let done = 0
        while (done < buf.length) {
          const { bytesRead } = await handle.read(buf, done, buf.length - done, start + done)
          if (bytesRead === 0) break
          done += bytesRead
        }
        return buf.subarray(0, done)
      } catch (err) {
        throw wrap('read', key, err)
      } finally {
        await handle?.close()
      }
    },
    async put (key, data) {
      const target = file(key)
      const tmp = join(root, TMP, `${randomBytes(6).toString('hex')}`)
      try {
        await mkdir(join(root, TMP), { recursive: true })
        await mkdir(join(target, '..'), { recursive: true })
        await writeFile(tmp, data)
        await rename(tmp, target)
      } catch (err) {
        await rm(tmp, { force: true })
        throw wrap('write', key, err)
      }
    },
    async * list (prefix): AsyncIterable<ObjectInfo> {
      const p = normalisePrefix(prefix)
      const start = p === '' ? root : join(root, ...p.slice(0, -1).split('/'))
      const walk = async function * (dir: string, keyPrefix: string): AsyncGenerator<ObjectInfo> {
        let entries
        try {
          entries = await readdir(dir, { withFileTypes: true })
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
          throw wrap('list', keyPrefix, err)
        }
        for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
          if (keyPrefix === '' && entry.name === TMP) continue
          const key = keyPrefix + entry.name
          if (entry.isDirectory()) yield * walk(join(dir, entry.name), `${key}/`)
          else if (entry.isFile()) {
            const st = await stat(join(dir, entry.name))
            yield { key, size: st.size, modifiedAt: st.mtimeMs }
          }
        }
      }
      yield * walk(start, p)
    },
    async delete (key) {
      await rm(file(key), { force: true })
    }
  }
}
