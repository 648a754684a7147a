/**
 * The embedded Store: each collection is one JSON file, `<dataDir>/state/<collection>.json`, holding
 * `{ "schemaVersion": 1, "collection": name, "records": { id: value } }`. All records live in memory
 * after start(); every change rewrites its collection's file atomically (see atomic-file.ts).
 *
 * Values are kept as their JSON text, so what get/list return is exactly what a restart would load
 * (Dates come back as strings, undefined properties vanish), and parsing that text is the deep copy
 * that keeps callers from mutating stored state.
 *
 * Group commit: one file write at a time per collection. Changes made while a write is in flight
 * wait in `waiters`; when it finishes, one write carries all of them and resolves all their
 * promises. So hundreds of puts per second cost a handful of fsyncs, not hundreds.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { Logger } from 'pino'
import { removeTempFiles, syncFolder, writeFileAtomic } from './atomic-file.ts'
import { COLLECTION_NAME, MAX_ID_LENGTH, SCHEMA_VERSION, STATE_FOLDER } from './constants.ts'
import {
  StoreClosedError, StoreCorruptError, StoreKeyError, StoreValueError, StoreVersionError, StoreWriteError
} from './errors.ts'
import type { Store } from './types.ts'

export interface JsonStoreComponents {
  logger: Logger
}

export interface JsonStoreInit {
  /** corral's data folder; collections go to `<dataDir>/state/`. Created if missing. */
  dataDir: string
}

interface Waiter {
  resolve: () => void
  reject: (err: Error) => void
}

interface Collection {
  readonly name: string
  readonly path: string
  /** id -> the record's JSON text, in insertion order. */
  readonly records: Map<string, string>
  /** Callers whose change is in `records` but in no write that has started yet. */
  waiters: Waiter[]
  /** The commit loop while one runs: at most one per file, so writes never race each other. */
  committing: Promise<void> | undefined
  /** The last write failed, so the file is behind memory until a later write succeeds. */
  behind: boolean
}

type Phase = 'new' | 'starting' | 'running' | 'stopped'

export class JsonStore implements Store {
  private readonly log: Logger
  private readonly stateDir: string
  private collections = new Map<string, Collection>()
  private phase: Phase = 'new'
  /** Reads are refused until files are loaded: an empty answer would look like "no VMs". */
  private loaded = false
  private starting: Promise<void> | undefined
  private stopping: Promise<void> | undefined

  constructor (components: JsonStoreComponents, init: JsonStoreInit) {
    this.log = components.logger
    this.stateDir = join(init.dataDir, STATE_FOLDER)
  }

  async start (): Promise<void> {
    if (this.phase === 'stopped') {
      throw new StoreClosedError('This store was stopped and cannot be started again; create a new one.')
    }
    // Concurrent start() calls share one load; a failed load may be retried once the file is fixed.
    this.starting ??= this.load().catch((err: unknown) => {
      this.starting = undefined
      throw err
    })
    await this.starting
  }

  async stop (): Promise<void> {
    this.stopping ??= this.drain()
    await this.stopping
  }

  get<T> (collection: string, id: string): T | undefined {
    this.assertLoaded()
    checkCollection(collection)
    checkId(id)
    const text = this.collections.get(collection)?.records.get(id)
    return text === undefined ? undefined : JSON.parse(text) as T
  }

  /** Records ordered by id, so the order is the same before and after a restart. */
  list<T> (collection: string): T[] {
    this.assertLoaded()
    checkCollection(collection)
    const records = this.collections.get(collection)?.records
    if (records === undefined) return []
    return [...records.keys()].sort().map(id => JSON.parse(records.get(id) as string) as T)
  }

  /**
   * The change is visible to get/list at once and durable when the promise resolves. If the write
   * fails the promise rejects, but the change stays in memory and goes out with the next write.
   */
  async put<T> (collection: string, id: string, value: T): Promise<void> {
    this.assertWritable()
    checkCollection(collection)
    checkId(id)
    const text = toJsonText(value, collection, id)
    const target = this.collectionFor(collection)
    target.records.set(id, text)
    await this.commit(target)
  }

  async delete (collection: string, id: string): Promise<boolean> {
    this.assertWritable()
    checkCollection(collection)
    checkId(id)
    const target = this.collections.get(collection)
    if (target === undefined) return false
    const existed = target.records.delete(id)
    // A no-op still waits if the file may lag memory: `false` must mean "durably absent".
    if (existed || target.committing !== undefined || target.behind) await this.commit(target)
    return existed
  }

  private async load (): Promise<void> {
    this.phase = 'starting'
    await this.makeStateDir()
    const collections = new Map<string, Collection>()
    const entries = await readdir(this.stateDir, { withFileTypes: true })
    // Sorted so that, with several bad files, the operator is told about the same one each time.
    for (const entry of entries.sort((a, b) => a.name < b.name ? -1 : 1)) {
      // Symlinks count: skipping one would let the next put replace what it points at unseen.
      if (!(entry.isFile() || entry.isSymbolicLink()) || !entry.name.endsWith('.json')) continue
      const name = entry.name.slice(0, -'.json'.length)
      if (!COLLECTION_NAME.test(name)) {
        // Likely a copy an operator moved aside; never ours, so left alone.
        this.log.warn({ file: join(this.stateDir, entry.name) }, 'ignoring state file whose name is not a collection name')
        continue
      }
      collections.set(name, await loadCollection(name, join(this.stateDir, entry.name)))
    }
    // Only after every file checked out: when start() refuses, a crash's temp files stay as evidence.
    const removed = await removeTempFiles(this.stateDir)
    if (removed.length > 0) this.log.info({ folder: this.stateDir, removed }, 'removed temp files left by an interrupted write')
    this.collections = collections
    this.loaded = true
    // stop() may have been called while loading; it wins.
    if (this.phase === 'starting') this.phase = 'running'
    this.log.debug({ folder: this.stateDir, collections: [...collections.keys()] }, 'state store loaded')
  }

  /** Create `<dataDir>/state` and make the new folder entries themselves durable. */
  private async makeStateDir (): Promise<void> {
    const firstCreated = await mkdir(this.stateDir, { recursive: true })
    if (firstCreated === undefined) return
    // fsync the parent of every folder mkdir created, from state up to the first one it made.
    for (let folder = this.stateDir; dirname(folder) !== folder; folder = dirname(folder)) {
      await syncFolder(dirname(folder))
      if (folder === firstCreated) break
    }
  }

  private async drain (): Promise<void> {
    this.phase = 'stopped'
    await this.starting?.catch(() => {})
    await Promise.all([...this.collections.values()].map(async c => { await c.committing }))
    const behind = [...this.collections.values()].filter(c => c.behind).map(c => c.path)
    if (behind.length > 0) this.log.error({ files: behind }, 'stopped with changes that could not be written')
  }

  private collectionFor (name: string): Collection {
    let found = this.collections.get(name)
    if (found === undefined) {
      found = newCollection(name, join(this.stateDir, `${name}.json`), new Map())
      this.collections.set(name, found)
    }
    return found
  }

  /** Join the next write of this collection; starts the commit loop if none is running. */
  private async commit (target: Collection): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      target.waiters.push({ resolve, reject })
      target.committing ??= this.runCommits(target)
    })
  }

  private async runCommits (target: Collection): Promise<void> {
    // Yield once so that puts issued in the same tick (a loop, a Promise.all) share the first write.
    await Promise.resolve()
    try {
      // Bounded: each turn takes every waiter, and new ones only arrive while a write is in flight.
      while (target.waiters.length > 0) {
        const batch = target.waiters
        target.waiters = []
        try {
          await writeFileAtomic(target.path, serialise(target))
          target.behind = false
          this.log.debug({ file: target.path, changes: batch.length }, 'state file committed')
          for (const waiter of batch) waiter.resolve()
        } catch (err) {
          target.behind = true
          const error = writeError(target, err)
          this.log.error({ err, file: target.path, waiting: batch.length }, 'state file write failed')
          for (const waiter of batch) waiter.reject(error)
        }
      }
    } finally {
      target.committing = undefined
    }
  }

  private assertLoaded (): void {
    if (!this.loaded) throw new StoreClosedError('The store is not started: await store.start() before reading.')
  }

  private assertWritable (): void {
    if (this.phase === 'running') return
    throw new StoreClosedError(this.phase === 'stopped'
      ? 'The store is stopped and takes no more writes; this change was not saved.'
      : 'The store is not started: await store.start() before writing.')
  }
}

export function createJsonStore (components: JsonStoreComponents, init: JsonStoreInit): Store {
  return new JsonStore(components, init)
}

function newCollection (name: string, path: string, records: Map<string, string>): Collection {
  return { name, path, records, waiters: [], committing: undefined, behind: false }
}

/** Read and check one file. Never repairs: a bad file stops start() and is left byte-identical. */
async function loadCollection (name: string, path: string): Promise<Collection> {
  const bytes = await readFile(path)
  const corrupt = (problem: string, cause?: unknown): StoreCorruptError => new StoreCorruptError(
    `State file ${path} is corrupt: ${problem}. corral will not start on it and has not changed it. ` +
    `Restore it from a backup, or move it aside (e.g. rename it to ${name}.json.broken) to start with ` +
    `an empty "${name}" collection.`, { file: path, collection: name }, { cause })

  let doc: unknown
  try {
    // fatal: invalid UTF-8 is damage, not something to paper over with U+FFFD.
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err) {
    throw corrupt(bytes.length === 0 ? 'it is empty' : `it is not valid JSON (${(err as Error).message})`, err)
  }
  if (!isPlainObject(doc)) throw corrupt('it does not hold a JSON object')
  // The version is checked before anything else because a newer version may change the rest.
  if (doc.schemaVersion !== SCHEMA_VERSION) {
    if (typeof doc.schemaVersion !== 'number') throw corrupt('it has no numeric "schemaVersion"')
    throw new StoreVersionError(
      `State file ${path} has schemaVersion ${doc.schemaVersion}, but this corral reads only version ` +
      `${SCHEMA_VERSION}. It was probably written by a newer corral: run that version again, or restore ` +
      'the file from a backup made by this version. The file has not been changed.',
      { file: path, collection: name, schemaVersion: doc.schemaVersion })
  }
  if (doc.collection !== name) {
    throw corrupt(`it says it holds collection ${JSON.stringify(doc.collection)}, not "${name}"`)
  }
  if (!isPlainObject(doc.records)) throw corrupt('its "records" is not a JSON object')
  const records = new Map<string, string>()
  for (const [id, value] of Object.entries(doc.records)) {
    if (!isValidId(id)) throw corrupt(`it holds a record with an invalid id ${show(id)}`)
    records.set(id, JSON.stringify(value))
  }
  return newCollection(name, path, records)
}

/**
 * Built from the kept texts instead of JSON.stringify of the whole collection, so a commit does not
 * re-serialise every record. One record per line keeps the file readable and diffable.
 */
function serialise (target: Collection): string {
  const lines: string[] = []
  for (const [id, text] of target.records) lines.push(`${JSON.stringify(id)}:${text}`)
  const head = `{"schemaVersion":${SCHEMA_VERSION},"collection":${JSON.stringify(target.name)},"records":{`
  return `${head}\n${lines.join(',\n')}\n}}\n`
}

function toJsonText (value: unknown, collection: string, id: string): string {
  const where = `The value for ${collection}/${id}`
  const advice = 'Store plain JSON data: objects, arrays, strings, numbers, booleans and null.'
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch (err) {
    // Cycles and BigInts land here.
    throw new StoreValueError(`${where} cannot be written as JSON (${(err as Error).message}). ${advice}`,
      { collection, id }, { cause: err })
  }
  if (text === undefined) {
    throw new StoreValueError(`${where} is ${typeof value}, which JSON cannot hold. ${advice}`, { collection, id })
  }
  return text
}

function writeError (target: Collection, cause: unknown): StoreWriteError {
  const code = (cause as NodeJS.ErrnoException).code
  return new StoreWriteError(
    `Could not write state file ${target.path} (${(cause as Error).message}). The change is kept in ` +
    `memory and goes out with the next successful write; check free disk space and permissions on ` +
    `${dirname(target.path)}.`, { file: target.path, collection: target.name, code }, { cause })
}

function checkCollection (collection: unknown): void {
  if (typeof collection === 'string' && COLLECTION_NAME.test(collection)) return
  throw new StoreKeyError(`Collection name ${show(collection)} is not allowed: it becomes a file name, so use ` +
    '1 to 63 characters from a-z, 0-9 and "-", starting with a letter.', { collection: show(collection) })
}

function isValidId (id: unknown): id is string {
  return typeof id === 'string' && id.length > 0 && id.length <= MAX_ID_LENGTH
}

function checkId (id: unknown): void {
  if (isValidId(id)) return
  throw new StoreKeyError(`Record id ${show(id)} is not allowed: use a non-empty string of at most ` +
    `${MAX_ID_LENGTH} characters.`, { id: show(id) })
}

/** For messages: bounded, and visible even for '' or non-strings. */
function show (value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : `(a ${typeof value})`
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
