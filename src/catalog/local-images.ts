import type { Logger } from 'pino'
import type { Driver, DriverImage } from '../drivers/types.ts'
import type { Store } from '../store/types.ts'
import { ImageExistsError, ImageNotFoundError } from './errors.ts'

export interface ImageRecord extends DriverImage {
  /** 'driver' for images the hypervisor offers on its own, 'registered' for POST /api/v1/images. */
  source: 'driver' | 'registered'
  registeredAt?: string
  registeredBy?: string
}

export interface LocalImagesComponents {
  driver: Driver
  store: Store
  logger: Logger
  clock: () => number
}

const COLLECTION = 'images'

/** The images this host can clone VMs from: the driver's own plus those registered by path. */
export class LocalImages {
  private readonly components: LocalImagesComponents

  constructor (components: LocalImagesComponents) {
    this.components = components
  }

  async list (): Promise<ImageRecord[]> {
    const fromDriver = (await this.components.driver.listImages()).map(i => ({ ...i, source: 'driver' as const }))
    const registered = this.components.store.list<ImageRecord>(COLLECTION)
    const names = new Set(fromDriver.map(i => i.name))
    return [...fromDriver, ...registered.filter(i => !names.has(i.name))].sort((a, b) => a.name.localeCompare(b.name))
  }

  async get (name: string): Promise<ImageRecord> {
    const image = (await this.list()).find(i => i.name === name)
    if (image == null) {
      const known = (await this.list()).map(i => i.name)
      throw new ImageNotFoundError(`no image named "${name}" on this host; known images: ${known.length > 0 ? known.join(', ') : 'none'} (GET /api/v1/images lists them, POST /api/v1/images registers one)`, { image: name })
    }
    return image
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
    const image = await this.get(name)
    if (image.source === 'driver') throw new ImageExistsError(`image "${name}" is provided by the ${this.components.driver.name} driver and cannot be removed through corral`, { image: name })
    await this.components.store.delete(COLLECTION, name)
  }
}
