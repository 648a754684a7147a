/**
 * The manifest of a packed bundle (a qemu image folder, a Parallels .pvm/.macvm): its entries with
 * modes and sizes, each file as a list of chunks, and each distinct chunk once with its plain and
 * stored size. A manifest is addressed by the SHA-256 of its JSON, so a catalog record naming that
 * digest pins every byte of the image.
 */
import { ManifestInvalidError } from './errors.ts'
import { checkChunkingParams, type ChunkingParams } from './chunker.ts'
import { CHUNK_ID, sha256Hex } from './blob.ts'
import { ChunkingParamsError } from './errors.ts'

export const MANIFEST_FORMAT = 'corral-bundle/1'

/** A run of zero bytes: nothing is stored, and unpacking leaves a hole (sparse files stay sparse). */
export const ZERO_CHUNK = 'zero'

/** [chunk id or ZERO_CHUNK, plain length]. */
export type ChunkRef = [id: string, size: number]

export interface DirEntry { path: string, type: 'dir', mode: number }
export interface FileEntry { path: string, type: 'file', mode: number, size: number, chunks: ChunkRef[] }
export interface SymlinkEntry { path: string, type: 'symlink', target: string }
export type BundleEntry = DirEntry | FileEntry | SymlinkEntry

export interface BlobInfo {
  /** Plain bytes. */
  size: number
  /** Bytes as stored and transferred (compressed). */
  stored: number
  /** The pack object holding it, and where in that pack; absent: its own object chunks/<aa>/<id>. */
  pack?: string
  offset?: number
}

export interface BundleManifest {
  format: typeof MANIFEST_FORMAT
  /** Name of the bundle folder (e.g. `test-guest`, `macOS 15.macvm`); unpacking recreates it. */
  root: string
  chunking: ChunkingParams
  /** Parents before children, sorted by path; paths are relative, `/`-separated. */
  entries: BundleEntry[]
  /** Every distinct stored chunk once. */
  blobs: Record<string, BlobInfo>
  /** Plain bytes of all files. */
  size: number
  /** Sum of blobs' stored bytes: what a pull with an empty cache transfers. */
  storedSize: number
}

const MAX_ENTRIES = 1_000_000
const MAX_PATH = 4096

/** Canonical bytes of a manifest: its digest is the SHA-256 of exactly these. */
export function encodeManifest (manifest: BundleManifest): Buffer {
  return Buffer.from(JSON.stringify(manifest))
}

export function manifestDigest (bytes: Uint8Array): string {
  return sha256Hex(bytes)
}

/** Parses and checks manifest bytes; with `digest`, also that they are the manifest it names. */
export function decodeManifest (bytes: Uint8Array, digest?: string): BundleManifest {
  if (digest != null && manifestDigest(bytes) !== digest) {
    throw new ManifestInvalidError(`the manifest fetched for ${digest.slice(0, 12)}… does not match its digest (corrupt or replaced in storage); push the version again`, { manifest: digest })
  }
  let raw: unknown
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'))
  } catch (err) {
    throw new ManifestInvalidError(`the manifest is not JSON: ${(err as Error).message}`)
  }
  return validateManifest(raw)
}

/** A path inside the bundle: relative, no `.`/`..`/empty parts, no NUL or backslash. */
function checkPath (path: unknown, fail: (m: string) => never): string {
  if (typeof path !== 'string' || path === '' || path.length > MAX_PATH) fail(`entry path ${JSON.stringify(path)} must be a non-empty string of at most ${MAX_PATH} characters`)
  const p = path as string
  if (p.startsWith('/') || p.includes('\\') || p.includes('\0')) fail(`entry path "${p}" must be relative, with / separators`)
  if (p.split('/').some(part => part === '' || part === '.' || part === '..')) fail(`entry path "${p}" has an empty, "." or ".." part`)
  return p
}

/**
 * Checks everything unpacking relies on, so a manifest from storage or a peer cannot write outside
 * its folder: safe paths, parents that are real directories declared earlier, symlinks that point
 * inside the bundle, chunk refs that add up and name declared blobs.
 */
export function validateManifest (raw: unknown): BundleManifest {
  const fail = (message: string): never => { throw new ManifestInvalidError(`invalid bundle manifest: ${message}`) }
  if (typeof raw !== 'object' || raw == null || Array.isArray(raw)) fail('not a JSON object')
  const m = raw as Record<string, unknown>
  if (m.format !== MANIFEST_FORMAT) fail(`format is ${JSON.stringify(m.format)}, this corral reads ${MANIFEST_FORMAT}`)
  if (typeof m.root !== 'string' || m.root === '' || m.root.length > 255 || m.root.includes('/') || m.root.includes('\\') || m.root === '.' || m.root === '..' || m.root.includes('\0')) fail('root must be a folder name (no slashes, not . or ..)')
  try {
    checkChunkingParams(m.chunking as ChunkingParams)
  } catch (err) {
    if (err instanceof ChunkingParamsError) fail(err.message)
    fail('chunking is missing or malformed')
  }
  const blobs = m.blobs
  if (typeof blobs !== 'object' || blobs == null || Array.isArray(blobs)) fail('blobs must be an object')
  let storedSize = 0
  for (const [id, info] of Object.entries(blobs as Record<string, unknown>)) {
    if (!CHUNK_ID.test(id)) fail(`blob id "${id}" is not a SHA-256 in hex`)
    const b = info as Record<string, unknown> | null
    if (typeof b !== 'object' || b == null || !isSize(b.size) || !isSize(b.stored) || (b.size as number) === 0) fail(`blob ${id} needs whole positive size and stored`)
    const loc = b as Record<string, unknown>
    if (loc.pack !== undefined && (typeof loc.pack !== 'string' || !CHUNK_ID.test(loc.pack) || !isSize(loc.offset))) fail(`blob ${id} has a malformed pack location`)
    storedSize += (b as unknown as BlobInfo).stored
  }
  if (!Array.isArray(m.entries) || m.entries.length > MAX_ENTRIES) fail(`entries must be a list of at most ${MAX_ENTRIES}`)
  const kinds = new Map<string, BundleEntry['type']>()
  const maxChunk = (m.chunking as ChunkingParams).maxSize
  let total = 0
  const used = new Set<string>()
  for (const e of m.entries as unknown[]) {
    if (typeof e !== 'object' || e == null) fail('an entry is not an object')
    const entry = e as Record<string, unknown>
    const path = checkPath(entry.path, fail)
    if (kinds.has(path)) fail(`entry "${path}" appears twice`)
    const parent = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : ''
    if (parent !== '' && kinds.get(parent) !== 'dir') fail(`entry "${path}" comes before its folder "${parent}", or that is not a folder`)
    if (entry.type === 'dir' || entry.type === 'file') {
      if (!Number.isInteger(entry.mode) || (entry.mode as number) < 0 || (entry.mode as number) > 0o7777) fail(`entry "${path}" has mode ${String(entry.mode)}; expected permission bits 0 to 0o7777`)
    }
    if (entry.type === 'file') {
      if (!isSize(entry.size)) fail(`file "${path}" needs a whole size`)
      if (!Array.isArray(entry.chunks)) fail(`file "${path}" needs a chunk list`)
      let sum = 0
      for (const ref of entry.chunks as unknown[]) {
        if (!Array.isArray(ref) || ref.length !== 2 || typeof ref[0] !== 'string' || !isSize(ref[1]) || ref[1] === 0 || ref[1] > maxChunk) fail(`file "${path}" has a malformed chunk ref ${JSON.stringify(ref)}`)
        const [id, size] = ref as ChunkRef
        if (id !== ZERO_CHUNK) {
          const blob = (blobs as Record<string, BlobInfo>)[id]
          if (blob == null) fail(`file "${path}" names chunk ${id}, which blobs does not list`)
          if (blob.size !== size) fail(`file "${path}" gives chunk ${id} ${size} bytes, blobs says ${blob.size}`)
          used.add(id)
        }
        sum += size
      }
      if (sum !== entry.size) fail(`file "${path}" is ${String(entry.size)} bytes but its chunks add up to ${sum}`)
      total += sum
    } else if (entry.type === 'symlink') {
      if (typeof entry.target !== 'string' || entry.target === '' || entry.target.length > MAX_PATH || entry.target.includes('\0')) fail(`symlink "${path}" needs a target`)
      const target = entry.target as string
      if (target.startsWith('/')) fail(`symlink "${path}" points outside the bundle (${target})`)
      // Leading ".." parts only, never climbing above the bundle, then plain names: every link then
      // resolves inside the bundle, even through other links (lexical checks alone miss chains).
      const parts = target.split('/').filter(part => part !== '' && part !== '.')
      const ups = parts.findIndex(part => part !== '..')
      const climb = ups === -1 ? parts.length : ups
      if (parts.slice(climb).includes('..')) fail(`symlink "${path}" has ".." after a name (${target}); only leading ".." parts are allowed`)
      if (climb > (parent === '' ? 0 : parent.split('/').length)) fail(`symlink "${path}" points outside the bundle (${target})`)
    } else if (entry.type !== 'dir') fail(`entry "${path}" has type ${JSON.stringify(entry.type)}; expected dir, file or symlink`)
    kinds.set(path, entry.type as BundleEntry['type'])
  }
  for (const id of Object.keys(blobs as object)) if (!used.has(id)) fail(`blob ${id} is listed but no file uses it`)
  if (m.size !== total) fail(`size is ${String(m.size)} but the files add up to ${total}`)
  if (m.storedSize !== storedSize) fail(`storedSize is ${String(m.storedSize)} but the blobs add up to ${storedSize}`)
  return raw as BundleManifest
}

function isSize (n: unknown): boolean {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0
}

/** Distinct stored chunk ids of a manifest, in the order files use them. */
export function blobIds (manifest: BundleManifest): string[] {
  const seen = new Set<string>()
  for (const entry of manifest.entries) {
    if (entry.type !== 'file') continue
    for (const [id] of entry.chunks) if (id !== ZERO_CHUNK) seen.add(id)
  }
  return [...seen]
}
