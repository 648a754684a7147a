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

/** A storage provider has no object under that key. */
export class ObjectNotFoundError extends CorralError {
  override name = 'ObjectNotFoundError'
}

/** A storage provider refused or failed a call; the message names the provider, never credentials. */
export class ProviderError extends CorralError {
  override name = 'ProviderError'
}

/** A provider that is not configured on this node, or is configured wrongly. */
export class ProviderConfigError extends CorralError {
  override name = 'ProviderConfigError'
}

/** A catalog request with a bad id, version, tag, arch or option; the message says what is allowed. */
export class CatalogRequestError extends CorralError {
  override name = 'CatalogRequestError'
}

/** No catalog image with that id. */
export class CatalogImageNotFoundError extends CorralError {
  override name = 'CatalogImageNotFoundError'
}

/** The image exists but has no such version or tag (for that architecture). */
export class CatalogVersionNotFoundError extends CorralError {
  override name = 'CatalogVersionNotFoundError'
}

/** That version of the image was pushed already; versions are immutable. */
export class CatalogVersionExistsError extends CorralError {
  override name = 'CatalogVersionExistsError'
}

/** The user lacks a claim the image requires. */
export class CatalogAccessDeniedError extends CorralError {
  override name = 'CatalogAccessDeniedError'
}

/** The image or version is revoked: no new pulls or VMs from it. */
export class ImageRevokedError extends CorralError {
  override name = 'ImageRevokedError'
}

/** No catalog job with that id on this node. */
export class CatalogJobNotFoundError extends CorralError {
  override name = 'CatalogJobNotFoundError'
}

/** The cache cannot make room: what it holds is in use by running VMs or pulls. */
export class CacheFullError extends CorralError {
  override name = 'CacheFullError'
}

/** A pack an unfinished push builds on was removed from storage (garbage collected) meanwhile. */
export class PackGoneError extends CorralError {
  override name = 'PackGoneError'
}
