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

/** The store was used before start() finished, or written after stop(). */
export class StoreClosedError extends CorralError {
  override name = 'StoreClosedError'
}

/** A value cannot be stored as JSON (undefined, a function, a BigInt, a cycle...). */
export class StoreValueError extends CorralError {
  override name = 'StoreValueError'
}

/** A state file could not be written (disk full, permissions...); the message names the file. */
export class StoreWriteError extends CorralError {
  override name = 'StoreWriteError'
}
