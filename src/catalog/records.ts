/**
 * Catalog metadata as cluster-wide records: one `catalog` record per image (description, tags,
 * claims, revocation) and one `catalog-versions` record per version and architecture (manifest
 * digest, sizes, guest). Writes go through the mesh's record store, so every node serves the same
 * catalog; separate version records mean two nodes pushing two versions at once both win.
 */
import type { RecordStore } from '../node/index.ts'
import { CatalogRequestError, CatalogImageNotFoundError, CatalogVersionNotFoundError } from './errors.ts'
import type { CatalogArch, CatalogEntry, CatalogImage, CatalogVersion } from './types.ts'

export const IMAGES = 'catalog'
export const VERSIONS = 'catalog-versions'

export const IMAGE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/
export const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,39}$/
export const TAG = VERSION
export const DEFAULT_TAG = 'latest'

export function checkImageId (id: string): string {
  if (!IMAGE_ID.test(id)) throw new CatalogRequestError(`"${id}" is not a catalog image id: use 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit (e.g. macos-15-xcode-16)`, { field: 'id' })
  return id
}

export function checkVersion (version: string, field = 'version'): string {
  if (!VERSION.test(version)) throw new CatalogRequestError(`"${version}" is not a valid ${field}: use 1-40 letters, digits, ".", "_", "+" or "-", starting with a letter or digit (e.g. 16.1 or 2024-11-25)`, { field })
  return version
}

/** `x86_64`/`arm64`, also accepting the other spellings tools use (amd64, aarch64). */
export function normaliseArch (arch: string): CatalogArch {
  const a = arch.toLowerCase()
  if (a === 'x86_64' || a === 'amd64' || a === 'x64') return 'x86_64'
  if (a === 'arm64' || a === 'aarch64') return 'arm64'
  throw new CatalogRequestError(`"${arch}" is not an architecture corral knows: use x86_64 (amd64) or arm64 (aarch64)`, { field: 'arch' })
}

export const versionRecordId = (image: string, version: string, arch: string): string => `${image}:${version}:${arch}`

/** `id`, `id:version` or `id:tag`. */
export function parseRef (ref: string): { id: string, selector?: string } {
  const i = ref.indexOf(':')
  if (i === -1) return { id: checkImageId(ref) }
  return { id: checkImageId(ref.slice(0, i)), selector: checkVersion(ref.slice(i + 1), 'version or tag') }
}

export class CatalogRecords {
  private readonly records: RecordStore

  constructor (records: RecordStore) {
    this.records = records
  }

  image (id: string): CatalogImage | undefined {
    return this.records.get<CatalogImage>(IMAGES, id)
  }

  requireImage (id: string): CatalogImage {
    const image = this.image(id)
    if (image == null) {
      const known = this.images().map(i => i.id).slice(0, 20)
      throw new CatalogImageNotFoundError(`the catalog has no image "${id}"; known: ${known.length > 0 ? known.join(', ') : 'none yet'} (corral catalog list)`, { image: id })
    }
    return image
  }

  images (): CatalogImage[] {
    return this.records.list<CatalogImage>(IMAGES).map(r => r.value).sort((a, b) => a.id.localeCompare(b.id))
  }

  /** Every version of an image (all arches), newest first. */
  versions (id: string): CatalogVersion[] {
    return this.allVersions().filter(v => v.image === id)
  }

  allVersions (): CatalogVersion[] {
    return this.records.list<CatalogVersion>(VERSIONS).map(r => r.value).sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.version.localeCompare(a.version))
  }

  version (image: string, version: string, arch: string): CatalogVersion | undefined {
    return this.records.get<CatalogVersion>(VERSIONS, versionRecordId(image, version, arch))
  }

  entry (id: string): CatalogEntry {
    return { ...this.requireImage(id), versions: this.versions(id) }
  }

  entries (): CatalogEntry[] {
    const versions = this.allVersions()
    return this.images().map(image => ({ ...image, versions: versions.filter(v => v.image === image.id) }))
  }

  async putImage (image: CatalogImage): Promise<void> {
    await this.records.put(IMAGES, image.id, image)
  }

  async putVersion (version: CatalogVersion): Promise<void> {
    await this.records.put(VERSIONS, versionRecordId(version.image, version.version, version.arch), version)
  }

  async deleteVersion (version: CatalogVersion): Promise<void> {
    await this.records.delete(VERSIONS, versionRecordId(version.image, version.version, version.arch))
  }

  async deleteImage (id: string): Promise<void> {
    for (const v of this.versions(id)) await this.deleteVersion(v)
    await this.records.delete(IMAGES, id)
  }

  /**
   * The version a reference means for an arch: `id:x` is version x, else tag x; `id` alone is the
   * `latest` tag, else the newest version for that arch.
   */
  resolve (ref: string, arch?: CatalogArch): { image: CatalogImage, version: CatalogVersion } {
    const { id, selector } = parseRef(ref)
    const image = this.requireImage(id)
    const versions = this.versions(id).filter(v => arch == null || v.arch === arch)
    const archNote = arch != null ? ` for ${arch}` : ''
    let wanted: string | undefined
    if (selector != null) wanted = versions.some(v => v.version === selector) ? selector : image.tags[selector]
    else wanted = image.tags[DEFAULT_TAG] ?? versions[0]?.version
    if (selector != null && wanted == null) {
      throw new CatalogVersionNotFoundError(`image "${id}" has no version or tag "${selector}"${archNote}; versions: ${versions.map(v => v.version).join(', ') || 'none'}, tags: ${Object.keys(image.tags).join(', ') || 'none'}`, { image: id, selector })
    }
    const version = versions.find(v => v.version === wanted)
    if (version == null) {
      throw new CatalogVersionNotFoundError(`image "${id}" has no version${wanted != null ? ` ${wanted}` : ''}${archNote}; push one with corral catalog push`, { image: id, selector, arch })
    }
    return { image, version }
  }
}
