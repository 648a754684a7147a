/** Reading and damaging chunks inside pack objects, for tests. */
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Repository, packKey } from '../../src/catalog/repository.ts'
import type { BundleManifest } from '../../src/catalog/manifest.ts'
import type { StorageProvider } from '../../src/catalog/providers/types.ts'

export { packKey }

export async function fetchBlobsOf (provider: StorageProvider, manifest: BundleManifest, ids: string[]): Promise<Map<string, Buffer>> {
  return await new Repository(provider).fetchBlobs(ids.map(id => ({ id, info: manifest.blobs[id] })))
}

/** Flips a byte in the middle of a chunk where a folder provider at `root` stores it. */
export async function corruptInFolder (root: string, manifest: BundleManifest, id: string): Promise<void> {
  const b = manifest.blobs[id]
  const file = join(root, ...packKey(b.pack as string).split('/'))
  const bytes = await readFile(file)
  bytes[(b.offset as number) + (b.stored >> 1)] ^= 0xff
  await writeFile(file, bytes)
}
