import { CorralError } from '../../errors.ts'

/** The placement request cannot be evaluated as given (e.g. 0 CPUs); details.field names the field. */
export class PlacementRequestError extends CorralError {
  override name = 'PlacementRequestError'
}
