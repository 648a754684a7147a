/** corral's state store: the Store contract, its embedded JSON-file back end, and its errors. */
export type { Store } from './types.ts'
export { createJsonStore } from './json-store.ts'
export type { JsonStoreComponents, JsonStoreInit } from './json-store.ts'
export {
  StoreClosedError, StoreCorruptError, StoreKeyError, StoreValueError, StoreVersionError, StoreWriteError
} from './errors.ts'
