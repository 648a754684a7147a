import { CorralError } from '../errors.ts'

/** No image of that name on this host. */
export class ImageNotFoundError extends CorralError {
  override name = 'ImageNotFoundError'
}

/** An image of that name is already registered or built in. */
export class ImageExistsError extends CorralError {
  override name = 'ImageExistsError'
}
