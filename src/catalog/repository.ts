/**
 * How the catalog lays its objects out in a provider:
 *   chunks/<aa>/<sha256>                 a chunk blob (codec byte + bytes)
 *   manifests/<sha256>.json              a bundle manifest, named by its digest
 *   images/<id>/<version>/<arch>.json    the version record, so a bucket describes itself
 * Chunks shared by versions are stored once: a push asks before it uploads.
 */
import type { BlobSink } from './pack.ts'
import { decodeManifest, encodeManifest, manifestDigest, type BundleManifest } from './manifest.ts'
import { ObjectNotFoundError, ManifestInvalidError } from './errors.ts'
import type { ProviderCallOptions, StorageProvider } from './providers/types.ts'
import type { CatalogVersion } from './types.ts'

export const chunkKey = (id: string): string => `chunks/${id.slice(0, 2)}/${id}`
export const manifestKey = (digest: string): string => `manifests/${digest}.json`
export const versionKey = (image: string, version: string, arch: string): string => `images/${image}/${version}/${arch}.json`

export class Repository {
  readonly provider: StorageProvider

  constructor (provider: StorageProvider) {
    this.provider = provider
  }

  /** A sink for packFolder: chunks the provider has already are neither compressed nor sent. */
  sink (options: ProviderCallOptions & { also?: BlobSink } = {}): BlobSink {
    return {
      has: async id => await this.provider.head(chunkKey(id), options),
      put: async (id, stored, plainSize) => {
        await this.provider.put(chunkKey(id), stored, options)
        await options.also?.put(id, stored, plainSize)
      }
    }
  }

  async getChunk (id: string, options?: ProviderCallOptions): Promise<Buffer> {
    return await this.provider.get(chunkKey(id), options)
  }

  async putManifest (manifest: BundleManifest, options?: ProviderCallOptions): Promise<string> {
    const bytes = encodeManifest(manifest)
    const digest = manifestDigest(bytes)
    await this.provider.put(manifestKey(digest), bytes, options)
    return digest
  }

  /** The manifest, checked against its digest and validated. */
  async getManifest (digest: string, options?: ProviderCallOptions): Promise<BundleManifest> {
    let bytes: Buffer
    try {
      bytes = await this.provider.get(manifestKey(digest), options)
    } catch (err) {
      if (err instanceof ObjectNotFoundError) throw new ManifestInvalidError(`manifest ${digest.slice(0, 12)}… is missing from ${this.provider.describe()}; the version was deleted from storage or pushed elsewhere`, { manifest: digest })
      throw err
    }
    return decodeManifest(bytes, digest)
  }

  async putVersionDoc (version: CatalogVersion, options?: ProviderCallOptions): Promise<void> {
    await this.provider.put(versionKey(version.image, version.version, version.arch), Buffer.from(JSON.stringify(version, null, 2)), options)
  }
}
