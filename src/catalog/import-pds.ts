/**
 * Importing catalog packs of the Parallels DevOps Service: for each `<name>.meta` (its JSON
 * manifest) with the `.pdpack` beside it (a tar of the VM bundle's contents, optionally gzipped),
 * download the pack, extract it into a `<catalog_id>.<type>` bundle folder and push that as a
 * corral version, keeping id, version, architecture, tags, required claims and roles, and a
 * revoked or tainted flag. Versions already in the catalog are skipped, so an import can be re-run.
 */
import { mkdir } from 'node:fs/promises'
import { basename, join, posix } from 'node:path'
import type { Logger } from 'pino'
import { downloadToFile } from './providers/download.ts'
import { extractTar } from './tar-extract.ts'
import { removeTree } from './unpack.ts'
import { normaliseArch, IMAGE_ID, VERSION, TAG } from './records.ts'
import { CatalogRequestError } from './errors.ts'
import type { ProviderKind, StorageProvider } from './providers/types.ts'
import type { PushOptions } from './catalog-service.ts'
import type { CatalogVersion } from './types.ts'

/** The fields of a PDS catalog manifest (.meta) that the import keeps. */
export interface PdsMeta {
  catalog_id: string
  version?: string
  architecture: string
  name?: string
  description?: string
  type?: string
  tags?: string[] | null
  required_claims?: string[] | null
  required_roles?: string[] | null
  pack_path?: string
  pack_filename?: string
  tainted?: boolean
  revoked?: boolean
}

export interface ImportOptions {
  /** The provider the packs are in. */
  provider: ProviderKind
  /** Folder inside it ('' for all of it). */
  prefix: string
  /** Where the imported versions are pushed; default: the same provider. */
  to?: ProviderKind
  /** Only these catalog ids. */
  only?: string[]
}

export interface ImportOutcome {
  imported: Array<{ id: string, version: string, arch: string }>
  skipped: Array<{ meta: string, reason: string }>
  failed: Array<{ meta: string, error: string }>
}

export interface ImportDeps {
  logger: Logger
  source: StorageProvider
  /** Scratch space for one pack and its extracted bundle at a time. */
  tmpDir: string
  exists: (id: string, version: string, arch: string) => boolean
  push: (options: PushOptions) => Promise<CatalogVersion>
  revoke: (id: string, version: string, arch: string, reason: string) => Promise<void>
  signal: AbortSignal
  onPack?: (meta: string, phase: string) => void
}

/** PDS's NormalizeString, roughly: lower case, unsafe characters to "-". */
export function normaliseId (value: string): string {
  return value.trim().toLowerCase().replace(/[^a-z0-9._-]+/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 63)
}

/** The push a .meta describes, or why it cannot be imported. */
export function pushFromMeta (meta: PdsMeta, bundlePath: string, to: ProviderKind | undefined): PushOptions {
  const id = normaliseId(meta.catalog_id ?? '')
  if (!IMAGE_ID.test(id)) throw new CatalogRequestError(`catalog_id ${JSON.stringify(meta.catalog_id)} does not make a valid catalog id`)
  const version = (meta.version ?? 'latest').trim() === '' ? 'latest' : (meta.version ?? 'latest').trim()
  if (!VERSION.test(version)) throw new CatalogRequestError(`version ${JSON.stringify(meta.version)} is not a valid version`)
  const arch = normaliseArch(meta.architecture ?? '')
  const tags = [...new Set([...(meta.tags ?? []).filter(t => TAG.test(t)), 'latest'])]
  // Roles and claims both become required claims: corral accepts a claim or a role of that name.
  const requiredClaims = [...new Set([...(meta.required_claims ?? []), ...(meta.required_roles ?? [])].filter(c => typeof c === 'string' && c !== ''))]
  return {
    path: bundlePath, image: id, version, arch, tags, requiredClaims, description: meta.description ?? '',
    guest: { os: guessOs(meta) },
    ...(to != null ? { provider: to } : {})
  }
}

/** PDS manifests do not say the guest OS: a .macvm is macOS; a .pvm is told by its name. */
function guessOs (meta: PdsMeta): 'macos' | 'linux' | 'windows' {
  if (meta.type === 'macvm') return 'macos'
  const name = `${meta.catalog_id ?? ''} ${meta.name ?? ''} ${meta.description ?? ''}`
  if (/win(dows)?[-_ ]?\d|windows/i.test(name)) return 'windows'
  if (/ubuntu|debian|linux|fedora|centos|rhel|alma|rocky|suse|arch/i.test(name)) return 'linux'
  return 'macos'
}

export async function importPdsPacks (deps: ImportDeps, options: ImportOptions): Promise<ImportOutcome> {
  const outcome: ImportOutcome = { imported: [], skipped: [], failed: [] }
  const metas: Array<{ key: string, size: number }> = []
  const keys = new Set<string>()
  for await (const item of deps.source.list(options.prefix, { signal: deps.signal })) {
    keys.add(item.key)
    if (item.key.endsWith('.meta')) metas.push(item)
  }
  for (const { key } of metas) {
    deps.signal.throwIfAborted()
    let meta: PdsMeta
    try {
      meta = JSON.parse((await deps.source.get(key, { signal: deps.signal })).toString('utf8'))
    } catch (err) {
      outcome.failed.push({ meta: key, error: `not readable JSON: ${(err as Error).message}` })
      continue
    }
    const dir = posix.dirname(key) === '.' ? '' : `${posix.dirname(key)}/`
    const candidates = [meta.pack_filename, meta.pack_path != null ? basename(meta.pack_path) : undefined, `${basename(key, '.meta')}.pdpack`]
      .filter((n): n is string => typeof n === 'string' && n !== '').map(n => dir + n)
    const pack = candidates.find(k => keys.has(k))
    if (pack == null) {
      outcome.failed.push({ meta: key, error: `no pack beside it (looked for ${candidates.join(', ')})` })
      continue
    }
    const work = join(deps.tmpDir, basename(key, '.meta'))
    try {
      const bundleName = `${normaliseId(meta.catalog_id ?? 'image')}.${meta.type === 'pvm' ? 'pvm' : meta.type === 'macvm' ? 'macvm' : 'pvm'}`
      const push = pushFromMeta(meta, join(work, bundleName), options.to)
      if (options.only != null && !options.only.includes(push.image)) continue
      if (deps.exists(push.image, push.version, push.arch ?? '')) {
        outcome.skipped.push({ meta: key, reason: `${push.image}:${push.version} (${push.arch ?? ''}) is already in the catalog` })
        continue
      }
      await removeTree(work)
      await mkdir(work, { recursive: true })
      deps.onPack?.(key, 'downloading')
      await downloadToFile(deps.source, pack, join(work, 'pack'), { signal: deps.signal })
      deps.onPack?.(key, 'extracting')
      await extractTar(join(work, 'pack'), join(work, bundleName), deps.signal)
      await removeTree(join(work, 'pack'))
      deps.onPack?.(key, 'pushing')
      const pushed = await deps.push(push)
      if (meta.revoked === true || meta.tainted === true) {
        await deps.revoke(pushed.image, pushed.version, pushed.arch, `imported ${meta.revoked === true ? 'revoked' : 'tainted'} from the Parallels DevOps Service`)
      }
      outcome.imported.push({ id: pushed.image, version: pushed.version, arch: pushed.arch })
      deps.logger.info({ meta: key, image: pushed.image, version: pushed.version, arch: pushed.arch }, 'imported a Parallels DevOps Service catalog pack')
    } catch (err) {
      if (deps.signal.aborted) throw err
      outcome.failed.push({ meta: key, error: (err as Error).message })
      deps.logger.warn({ meta: key, err: (err as Error).message }, 'could not import a catalog pack')
    } finally {
      await removeTree(work)
    }
  }
  return outcome
}
