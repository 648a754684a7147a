import type { Logger } from 'pino'
import type { Driver, DriverImage, DriverName } from '../drivers/types.ts'
import type { Store } from '../store/types.ts'
import { ImageExistsError, ImageNotFoundError } from './errors.ts'
import type { CatalogVersion, GuestInfo, MinHost } from './types.ts'

export interface ImageRecord extends DriverImage {
  /**
   * 'driver' for images the hypervisor offers on its own, 'registered' for POST /api/v1/images,
   * 'catalog' for catalog images pulled into this host's cache (named `<image>:<version>`).
   */
  source: 'driver' | 'registered' | 'catalog'
  registeredAt?: string
  registeredBy?: string
  /** A catalog image's minimum host: placement never puts it on a smaller host. */
  minHost?: MinHost
}

/** An image described for placement: what a host has, or could pull. */
export interface OfferedImage {
  name: string
  arch: DriverImage['arch']
  os: DriverImage['os']
  defaultCpus: number
  defaultMemoryMiB: number
  diskMiB: number
  minHost?: MinHost
}

/** What LocalImages needs of the catalog (CatalogService implements it). */
export interface CatalogImageSource {
  /** Images unpacked in this host's cache. */
  localImages: () => Array<{ name: string, path: string, version: CatalogVersion }>
  /** Pulls a catalog reference for a VM here; undefined if the name is not a catalog reference. */
  ensure: (name: string) => Promise<{ name: string, path: string, version: CatalogVersion } | undefined>
  /** Versions this host could pull for its arch. */
  pullable: () => Promise<Array<{ name: string, version: CatalogVersion }>>
  /** The version a catalog reference means on this host, without pulling; undefined if not a catalog reference. */
  resolveHere: (name: string) => Promise<{ name: string, version: CatalogVersion } | undefined>
  /** The smallest host a version may run on, if it says. */
  minHostOf?: (version: CatalogVersion) => MinHost | undefined
}

export interface LocalImagesComponents {
  driver: Driver
  store: Store
  logger: Logger
  clock: () => number
  catalog?: CatalogImageSource
}

const COLLECTION = 'images'

/**
 * At most this many pullable versions are offered (newest first): they travel in every heartbeat,
 * which is bounded. Older versions are still pulled on demand by a host that already has the image.
 */
const MAX_OFFERED = 300

/** Which bundles a driver can boot: its own format; sim "runs" anything. */
function bootsOn (driver: DriverName, format: GuestInfo['format']): boolean {
  return driver === 'sim' || driver === format
}

/**
 * The images this host can clone VMs from: the driver's own, those registered by path, and catalog
 * images in this host's cache. A catalog reference it lacks is pulled on demand by get().
 */
export class LocalImages {
  private readonly components: LocalImagesComponents
  /** Driver descriptions of cached catalog images, by path (their files do not change). */
  private readonly described = new Map<string, DriverImage>()

  constructor (components: LocalImagesComponents) {
    this.components = components
  }

  async list (): Promise<ImageRecord[]> {
    const fromDriver = (await this.components.driver.listImages()).map(i => ({ ...i, source: 'driver' as const }))
    const registered = this.components.store.list<ImageRecord>(COLLECTION)
    const names = new Set(fromDriver.map(i => i.name))
    const own = [...fromDriver, ...registered.filter(i => !names.has(i.name))]
    for (const i of own) names.add(i.name)
    const cached: ImageRecord[] = []
    for (const image of this.components.catalog?.localImages() ?? []) {
      if (names.has(image.name) || !bootsOn(this.components.driver.name, image.version.guest.format)) continue
      const described = await this.describeCached(image)
      if (described != null) cached.push(described)
    }
    return [...own, ...cached].sort((a, b) => a.name.localeCompare(b.name))
  }

  private async describeCached (image: { name: string, path: string, version: CatalogVersion }): Promise<ImageRecord | undefined> {
    let described = this.described.get(image.path)
    if (described == null) {
      try {
        described = await this.components.driver.inspectImage(image.name, image.path)
      } catch (err) {
        this.components.logger.warn({ image: image.name, path: image.path, err: (err as Error).message }, 'a cached catalog image is not usable by this driver')
        return undefined
      }
      this.described.set(image.path, described)
    }
    return { ...described, name: image.name, source: 'catalog', registeredAt: image.version.createdAt, registeredBy: image.version.createdBy, ...this.minHostOf(image.version) }
  }

  /** `{ minHost }` for a catalog version that has one, else nothing (spread into descriptions). */
  private minHostOf (version: CatalogVersion): { minHost?: MinHost } {
    const minHost = this.components.catalog?.minHostOf?.(version)
    return minHost != null ? { minHost } : {}
  }

  async get (name: string): Promise<ImageRecord> {
    const image = (await this.list()).find(i => i.name === name)
    if (image != null) return image
    // A catalog reference this host lacks: pull it now (the gateway checked the user's claims).
    const pulled = await this.components.catalog?.ensure(name)
    if (pulled != null) {
      const described = await this.describeCached(pulled)
      if (described != null) return described
    }
    const known = (await this.list()).map(i => i.name)
    throw new ImageNotFoundError(`no image named "${name}" on this host; known images: ${known.length > 0 ? known.join(', ') : 'none'} (GET /api/v1/images lists them, POST /api/v1/images registers one)`, { image: name })
  }

  /**
   * The image a VM of `name` gets, at once: what the host has, or for a catalog reference it lacks a
   * description from the catalog (`pending`, no path yet) that prepare() turns into files. This is
   * what admission uses, so a pull of many gigabytes happens after the VM is admitted, not during.
   */
  async lookup (name: string): Promise<ImageRecord & { pending?: boolean }> {
    const image = (await this.list()).find(i => i.name === name)
    if (image != null) return image
    const resolved = await this.components.catalog?.resolveHere(name)
    if (resolved != null) {
      const held = (await this.list()).find(i => i.name === resolved.name)
      if (held != null) return held
      const v = resolved.version
      return {
        name: resolved.name, arch: v.arch, os: v.guest.os, path: '', defaultCpus: v.guest.defaultCpus, defaultMemoryMiB: v.guest.defaultMemoryMiB,
        diskMiB: v.guest.diskMiB, simulated: this.components.driver.simulated, source: 'catalog', pending: true, registeredAt: v.createdAt, registeredBy: v.createdBy,
        ...this.minHostOf(v)
      }
    }
    return await this.get(name)
  }

  /** The image with its files here: a pending catalog image is pulled now (verified, then unpacked). */
  async prepare (image: ImageRecord & { pending?: boolean }): Promise<ImageRecord> {
    if (image.pending !== true) return image
    return await this.get(image.name)
  }

  /** Catalog versions this host does not hold but could pull, described for placement. */
  async pullable (): Promise<OfferedImage[]> {
    const catalog = this.components.catalog
    if (catalog == null) return []
    const held = new Set(catalog.localImages().map(i => i.name))
    return (await catalog.pullable())
      .filter(p => !held.has(p.name) && bootsOn(this.components.driver.name, p.version.guest.format))
      .slice(0, MAX_OFFERED)
      .map(({ name, version }) => ({
        name, arch: version.arch, os: version.guest.os, defaultCpus: version.guest.defaultCpus, defaultMemoryMiB: version.guest.defaultMemoryMiB, diskMiB: version.guest.diskMiB,
        ...this.minHostOf(version)
      }))
  }

  async register (name: string, path: string, by: string): Promise<ImageRecord> {
    if ((await this.list()).some(i => i.name === name)) throw new ImageExistsError(`an image named "${name}" already exists; choose another name`, { image: name })
    const described = await this.components.driver.inspectImage(name, path)
    const record: ImageRecord = { ...described, name, source: 'registered', registeredAt: new Date(this.components.clock()).toISOString(), registeredBy: by }
    await this.components.store.put(COLLECTION, name, record)
    this.components.logger.info({ image: name, path, by }, 'image registered')
    return record
  }

  async remove (name: string): Promise<void> {
    const image = (await this.list()).find(i => i.name === name)
    if (image == null) throw new ImageNotFoundError(`no image named "${name}" on this host`, { image: name })
    if (image.source === 'driver') throw new ImageExistsError(`image "${name}" is provided by the ${this.components.driver.name} driver and cannot be removed through corral`, { image: name })
    if (image.source === 'catalog') throw new ImageExistsError(`image "${name}" is a catalog image cached on this host; the cache manages it (corral catalog ...)`, { image: name })
    await this.components.store.delete(COLLECTION, name)
  }
}
