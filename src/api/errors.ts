import { CorralError } from '../errors.ts'

/** The request does not match the schema; the message lists every field to fix. */
export class RequestValidationError extends CorralError {
  override name = 'RequestValidationError'
}

/** No route for that method and path. */
export class RouteNotFoundError extends CorralError {
  override name = 'RouteNotFoundError'
}

/** The route exists but not for that method. */
export class MethodNotAllowedError extends CorralError {
  override name = 'MethodNotAllowedError'
}

/** The body is larger than api.maxBodyBytes. */
export class PayloadTooLargeError extends CorralError {
  override name = 'PayloadTooLargeError'
}

/** The body is not JSON, or not declared as JSON. */
export class UnsupportedBodyError extends CorralError {
  override name = 'UnsupportedBodyError'
}

/** A cluster route was called on a node that has no mesh. */
export class MeshUnavailableError extends CorralError {
  override name = 'MeshUnavailableError'
}

/** A catalog route was called on a node built without a catalog. */
export class CatalogUnavailableError extends CorralError {
  override name = 'CatalogUnavailableError'
}
