import { CorralError } from '../errors.ts'

/** No image of that name on this host. */
export class ImageNotFoundError extends CorralError {
  override name = 'ImageNotFoundError'
}

/** An image of that name is already registered or built in. */
export class ImageExistsError extends CorralError {
  override name = 'ImageExistsError'
}

/** Chunking parameters a manifest or the config gives that this corral cannot use. */
export class ChunkingParamsError extends CorralError {
  override name = 'ChunkingParamsError'
}

/** A bundle manifest that is malformed, unsafe to unpack, or not the one its digest names. */
export class ManifestInvalidError extends CorralError {
  override name = 'ManifestInvalidError'
}

/** Stored bytes whose content does not hash to the chunk id they were stored under. */
export class ChunkCorruptError extends CorralError {
  override name = 'ChunkCorruptError'
}

/** No chunk with that id in the store, on the peers asked, or in the provider. */
export class ChunkNotFoundError extends CorralError {
  override name = 'ChunkNotFoundError'
}

/** A folder that cannot be packed as a bundle (missing, special files, unreadable). */
export class BundleInvalidError extends CorralError {
  override name = 'BundleInvalidError'
}
