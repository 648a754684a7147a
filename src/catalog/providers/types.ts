/**
 * The one contract every storage provider implements: folder, s3, azure, artifactory. A provider
 * stores opaque objects under keys (`chunks/ab/<id>`, `manifests/<digest>.json`...); what the
 * objects mean, and checking them, is the catalog's job. Providers never log or return credentials.
 */

export type ProviderKind = 'folder' | 's3' | 'azure' | 'artifactory'

export interface ObjectInfo {
  key: string
  size: number
  /** When it was last written (ms since the epoch), where the provider says; garbage collection keeps young objects. */
  modifiedAt?: number
}

export interface ProviderCallOptions {
  signal?: AbortSignal
}

export interface StorageProvider {
  /** The configured name versions refer to (equal to its kind: one provider of each kind). */
  readonly name: ProviderKind
  /** Where it stores, for messages (bucket, endpoint, folder); never a credential. */
  describe: () => string
  /** Size of the object, or undefined if there is none. */
  head: (key: string, options?: ProviderCallOptions) => Promise<number | undefined>
  /** The whole object; ObjectNotFoundError if absent. */
  get: (key: string, options?: ProviderCallOptions) => Promise<Buffer>
  /** Bytes [start, end) of the object. */
  getRange: (key: string, start: number, end: number, options?: ProviderCallOptions) => Promise<Buffer>
  /**
   * Optional: bytes [start, end) in the pieces they arrive in, so a reader can check and write
   * them without gathering them into one buffer first. Throws (after what it gave) if the object
   * ends early; ObjectNotFoundError before the first piece if it is absent.
   */
  getRangeStream?: (key: string, start: number, end: number, options?: ProviderCallOptions) => AsyncIterable<Buffer>
  /** Create or replace; readers never see a partial object. */
  put: (key: string, data: Buffer, options?: ProviderCallOptions) => Promise<void>
  /** Every object whose key starts with prefix (which ends in `/` or is empty). */
  list: (prefix: string, options?: ProviderCallOptions) => AsyncIterable<ObjectInfo>
  /** Idempotent. */
  delete: (key: string, options?: ProviderCallOptions) => Promise<void>
}

/** Keys are built by corral: `/`-separated, no empty, `.` or `..` parts. */
export function checkKey (key: string): string {
  if (key === '' || key.startsWith('/') || key.includes('\\') || key.includes('\0') || key.split('/').some(p => p === '' || p === '.' || p === '..')) {
    throw new TypeError(`invalid storage key "${key}"`)
  }
  return key
}

/** A configured prefix as `a/b/` (or empty). */
export function normalisePrefix (prefix: string): string {
  const trimmed = prefix.split('/').filter(p => p !== '').join('/')
  return trimmed === '' ? '' : `${trimmed}/`
}
