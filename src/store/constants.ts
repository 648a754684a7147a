/** The only layout of a state file this build reads and writes. Bump it with a migration. */
export const SCHEMA_VERSION = 1

/** Collection names become file names, so they are kept to a portable, path-safe alphabet. */
export const COLLECTION_NAME = /^[a-z][a-z0-9-]{0,62}$/

/** Ids are JSON object keys, never paths, so any string is safe; the cap keeps files sane. */
export const MAX_ID_LENGTH = 200

/** Collections live in their own folder so nothing else in the data dir is mistaken for one. */
export const STATE_FOLDER = 'state'
