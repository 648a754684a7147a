/**
 * The Artifactory provider: a generic repository through its REST API, which for objects is plain
 * HTTP: PUT to deploy, GET (with Range) to read, HEAD for the size, DELETE. Listing uses the storage
 * API (`/api/storage/<repo>/<path>?list&deep=1`); servers without it that serve JSON folder indexes
 * (nginx `autoindex_format json`) are listed by walking those. The API key (X-JFrog-Art-Api) or
 * access token (Bearer) is never logged.
 */
import { ObjectNotFoundError, ProviderConfigError, ProviderError } from '../errors.ts'
import { checkKey, normalisePrefix, type ObjectInfo, type ProviderCallOptions, type StorageProvider } from './types.ts'

export interface ArtifactoryProviderInit {
  /** The repository's URL, e.g. https://art.example.com/artifactory/corral-images */
  url: string
  prefix?: string
  apiKey?: string
  accessToken?: string
  /** Per request. */
  timeoutMs?: number
}

export function createArtifactoryProvider (init: ArtifactoryProviderInit): StorageProvider {
  let base: URL
  try {
    base = new URL(init.url.replace(/\/+$/, '') + '/')
  } catch {
    throw new ProviderConfigError(`catalog.artifactory.url "${init.url}" is not a URL; give the repository URL, e.g. https://artifactory.example.com/artifactory/corral-images`)
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new ProviderConfigError('catalog.artifactory.url must be http:// or https://')
  const prefix = normalisePrefix(init.prefix ?? '')
  const where = `artifactory ${base.origin}${base.pathname}${prefix}`
  const headers: Record<string, string> = {}
  if (init.apiKey != null && init.apiKey !== '') headers['x-jfrog-art-api'] = init.apiKey
  else if (init.accessToken != null && init.accessToken !== '') headers.authorization = `Bearer ${init.accessToken}`
  const timeoutMs = init.timeoutMs ?? 300_000
  const urlOf = (key: string): URL => new URL((prefix + checkKey(key)).split('/').map(encodeURIComponent).join('/'), base)

  async function send (method: string, url: URL, options: ProviderCallOptions & { body?: Buffer, range?: [number, number] } = {}): Promise<Response> {
    const signals = [AbortSignal.timeout(timeoutMs), ...(options.signal != null ? [options.signal] : [])]
    const h: Record<string, string> = { ...headers }
    if (options.range != null) h.range = `bytes=${options.range[0]}-${options.range[1] - 1}`
    if (options.body != null) h['content-type'] = 'application/octet-stream'
    try {
      return await fetch(url, { method, headers: h, body: options.body, signal: AbortSignal.any(signals), redirect: 'follow' })
    } catch (err) {
      if (options.signal?.aborted === true) throw err
      throw new ProviderError(`${where}: ${method} ${url.pathname} failed: ${(err as { cause?: Error }).cause?.message ?? (err as Error).message}`, { provider: 'artifactory' })
    }
  }

  const refuse = async (res: Response, op: string, key: string): Promise<Error> => {
    const text = (await res.text().catch(() => '')).slice(0, 300).replace(/\s+/g, ' ')
    if (res.status === 404) return new ObjectNotFoundError(`no object ${key} in ${where}`, { provider: 'artifactory', key })
    const hint = res.status === 401 || res.status === 403 ? ' (check catalog.artifactory.apiKey or accessToken and the repository permissions)' : ''
    return new ProviderError(`${where}: ${op} ${key} failed: HTTP ${res.status}${text !== '' ? `: ${text}` : ''}${hint}`, { provider: 'artifactory', key, status: res.status })
  }

  const bytes = async (res: Response): Promise<Buffer> => Buffer.from(await res.arrayBuffer())
  /** A listing's date (ISO 8601 from the storage API, an HTTP date from nginx), if it parses. */
  const modified = (date: string | undefined): { modifiedAt?: number } => {
    const at = date != null ? Date.parse(date) : NaN
    return Number.isFinite(at) ? { modifiedAt: at } : {}
  }

  /** Artifactory's storage API: one call lists a whole subtree. */
  async function * listStorageApi (full: string, options?: ProviderCallOptions): AsyncGenerator<ObjectInfo> {
    const parts = base.pathname.replace(/\/+$/, '').split('/')
    const repo = parts.pop() ?? ''
    const api = new URL(`${parts.join('/')}/api/storage/${repo}/${full.split('/').map(encodeURIComponent).join('/')}`, base.origin)
    api.search = 'list&deep=1&listFolders=0'
    const res = await send('GET', api, options)
    if (res.status === 404 || !(res.headers.get('content-type') ?? '').includes('json')) {
      await res.body?.cancel()
      throw new NoStorageApi()
    }
    if (!res.ok) throw await refuse(res, 'list', full)
    const body = await res.json() as { files?: Array<{ uri: string, size: number, folder?: boolean, lastModified?: string }> }
    for (const f of body.files ?? []) {
      if (f.folder === true) continue
      yield { key: (full + f.uri.replace(/^\//, '')).slice(prefix.length), size: f.size, ...modified(f.lastModified) }
    }
  }

  /** JSON folder indexes (nginx autoindex_format json), walked folder by folder. */
  async function * listIndexes (full: string, options?: ProviderCallOptions, depth = 0): AsyncGenerator<ObjectInfo> {
    if (depth > 32) return
    const url = new URL(full.split('/').map(encodeURIComponent).join('/'), base)
    const res = await send('GET', url, options)
    if (res.status === 404) { await res.body?.cancel(); return }
    if (!res.ok) throw await refuse(res, 'list', full)
    const entries = await res.json().catch(() => undefined) as Array<{ name: string, type: string, size?: number, mtime?: string }> | undefined
    if (!Array.isArray(entries)) throw new ProviderError(`${where} has neither Artifactory's storage API nor JSON folder indexes, so it cannot be listed`, { provider: 'artifactory' })
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.type === 'directory') yield * listIndexes(`${full}${e.name}/`, options, depth + 1)
      else if (e.type === 'file') yield { key: (full + e.name).slice(prefix.length), size: e.size ?? 0, ...modified(e.mtime) }
    }
  }

  return {
    name: 'artifactory',
    describe: () => where,
    async head (key, options) {
      const res = await send('HEAD', urlOf(key), options)
      if (res.status === 404) return undefined
      if (!res.ok) throw await refuse(res, 'head', key)
      return Number(res.headers.get('content-length') ?? '0')
    },
    async get (key, options) {
      const res = await send('GET', urlOf(key), options)
      if (!res.ok) throw await refuse(res, 'get', key)
      return await bytes(res)
    },
    async getRange (key, start, end, options) {
      if (end <= start) return Buffer.alloc(0)
      const res = await send('GET', urlOf(key), { ...options, range: [start, end] })
      if (!res.ok) throw await refuse(res, 'get', key)
      const data = await bytes(res)
      // A server that ignores Range answers 200 with everything.
      return res.status === 206 ? data : data.subarray(start, end)
    },
    async put (key, data, options) {
      const res = await send('PUT', urlOf(key), { ...options, body: data })
      if (!res.ok) throw await refuse(res, 'put', key)
      await res.body?.cancel()
    },
    async * list (listPrefix, options): AsyncIterable<ObjectInfo> {
      const full = prefix + normalisePrefix(listPrefix)
      try {
        yield * listStorageApi(full, options)
      } catch (err) {
        if (!(err instanceof NoStorageApi)) throw err
        yield * listIndexes(full, options)
      }
    },
    async delete (key, options) {
      const res = await send('DELETE', urlOf(key), options)
      if (!res.ok && res.status !== 404) throw await refuse(res, 'delete', key)
      await res.body?.cancel()
    }
  }
}

class NoStorageApi extends Error {}
