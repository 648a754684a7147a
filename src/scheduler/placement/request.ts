import { PlacementRequestError } from './errors.ts'
import type { PlacementHost, PlacementImage, PlacementRequest, Resources } from './types.ts'

/** Rejects requests no host could sensibly be judged against; the API schema catches most first. */
export function checkRequest (request: PlacementRequest): void {
  if (typeof request.image !== 'string' || request.image === '') {
    throw new PlacementRequestError('the request names no image: set image to one GET /api/v1/images lists', { field: 'image' })
  }
  for (const field of ['cpus', 'memoryMiB'] as const) {
    const value = request[field]
    if (value != null && (!Number.isSafeInteger(value) || value < 1)) {
      throw new PlacementRequestError(`${field} must be a whole number of at least 1, got ${String(value)}: ask for at least 1 or leave it out to use the image's default`, { field })
    }
  }
}

/** The image as this host knows it: its own cached copy first, else what it could pull. */
export function imageOnHost (host: PlacementHost, name: string): { image: PlacementImage, cached: boolean } | undefined {
  const cached = host.images.find(i => i.name === name)
  if (cached != null) return { image: cached, cached: true }
  const pullable = host.pullable?.find(i => i.name === name)
  if (pullable != null) return { image: pullable, cached: false }
  return undefined
}

/**
 * What the VM reserves: CPUs and memory as asked or the image's defaults, disk from the image.
 * Without the image, only what the request states outright is known.
 */
export function resolveResources (request: PlacementRequest, image: PlacementImage | undefined): Partial<Resources> {
  const need: Partial<Resources> = {}
  const cpus = request.cpus ?? image?.defaultCpus
  const memoryMiB = request.memoryMiB ?? image?.defaultMemoryMiB
  if (cpus != null) need.cpus = cpus
  if (memoryMiB != null) need.memoryMiB = memoryMiB
  if (image != null) need.diskMiB = image.diskMiB
  return need
}
