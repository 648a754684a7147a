import { CorralError } from '../errors.ts'

/** A state file exists but cannot be parsed. It is left untouched for the operator. */
export class StoreCorruptError extends CorralError {
  override name = 'StoreCorruptError'
}

/** A state file was written by a schema version this build does not know. */
export class StoreVersionError extends CorralError {
  override name = 'StoreVersionError'
}

/** A name given as a collection or id would escape the data folder or is not allowed. */
export class StoreKeyError extends CorralError {
  override name = 'StoreKeyError'
}
