/**
 * Downloading one large object to a file with parallel ranged reads (any provider), so a
 * multi-gigabyte pack comes down at the speed of several connections; parts are written at their
 * offsets, so order does not matter.
 */
import { open } from 'node:fs/promises'
import { ObjectNotFoundError } from '../errors.ts'
import { forEachLimit } from '../pool.ts'
import type { StorageProvider } from './types.ts'

export interface DownloadOptions {
  partSize?: number
  concurrency?: number
  signal?: AbortSignal
  onBytes?: (bytes: number) => void
}

export async function downloadToFile (provider: StorageProvider, key: string, path: string, options: DownloadOptions = {}): Promise<number> {
  const size = await provider.head(key, { signal: options.signal })
  if (size == null) throw new ObjectNotFoundError(`no object ${key} in ${provider.describe()}`, { key })
  const partSize = options.partSize ?? 16 * 1024 * 1024
  const handle = await open(path, 'w')
  try {
    await handle.truncate(size)
    const starts = Array.from({ length: Math.ceil(size / partSize) }, (_, i) => i * partSize)
    await forEachLimit(starts, options.concurrency ?? 4, async start => {
      const end = Math.min(size, start + partSize)
      const data = await provider.getRange(key, start, end, { signal: options.signal })
      if (data.length !== end - start) throw new Error(`${provider.describe()} returned ${data.length} bytes for ${key} bytes ${start}-${end}; expected ${end - start}`)
      let done = 0
      while (done < data.length) done += (await handle.write(data, done, data.length - done, start + done)).bytesWritten
      options.onBytes?.(data.length)
    })
  } finally {
    await handle.close()
  }
  return size
}
