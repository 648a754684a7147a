/**
 * The Azure Blob provider (@azure/storage-blob): block blobs in one container. Large blobs go up
 * as parallel blocks and come down as parallel ranged reads (the SDK's uploadData and
 * downloadToBuffer). Credentials (connection string, account key or SAS) are never logged.
 */
import { BlobServiceClient, StorageSharedKeyCredential, type ContainerClient } from '@azure/storage-blob'
import { ObjectNotFoundError, ProviderConfigError, ProviderError } from '../errors.ts'
import { checkKey, normalisePrefix, type ObjectInfo, type StorageProvider } from './types.ts'

export interface AzureProviderInit {
  container: string
  prefix?: string
  connectionString?: string
  /** e.g. https://myaccount.blob.core.windows.net */
  accountUrl?: string
  accountName?: string
  accountKey?: string
  sasToken?: string
  /** Block size for large uploads and ranged downloads. */
  blockSizeBytes?: number
  concurrency?: number
}

export function createAzureProvider (init: AzureProviderInit): StorageProvider {
  const prefix = normalisePrefix(init.prefix ?? '')
  let service: BlobServiceClient
  let account: string
  if (init.connectionString != null && init.connectionString !== '') {
    service = BlobServiceClient.fromConnectionString(init.connectionString)
    account = service.url.replace(/\?.*$/, '')
  } else if (init.accountUrl != null && init.accountUrl !== '') {
    account = init.accountUrl.replace(/\?.*$/, '').replace(/\/+$/, '')
    if (init.sasToken != null && init.sasToken !== '') service = new BlobServiceClient(`${account}?${init.sasToken.replace(/^\?/, '')}`)
    else if (init.accountName != null && init.accountName !== '' && init.accountKey != null && init.accountKey !== '') service = new BlobServiceClient(account, new StorageSharedKeyCredential(init.accountName, init.accountKey))
    else throw new ProviderConfigError('catalog.azure needs credentials: a connectionString, or accountUrl with sasToken, or accountUrl with accountName and accountKey')
  } else throw new ProviderConfigError('catalog.azure needs connectionString or accountUrl')
  const container: ContainerClient = service.getContainerClient(init.container)
  const where = `azure container ${init.container}${prefix !== '' ? `/${prefix}` : ''} at ${account}`
  const blockSize = init.blockSizeBytes ?? 8 * 1024 * 1024
  const concurrency = init.concurrency ?? 4
  const blob = (key: string) => container.getBlockBlobClient(prefix + checkKey(key))

  const fail = (op: string, key: string, err: unknown): Error => {
    const e = err as { statusCode?: number, code?: string, message?: string, name?: string }
    if (err instanceof TypeError || e.name === 'AbortError') return err as Error
    if (e.statusCode === 404 && e.code !== 'ContainerNotFound') return new ObjectNotFoundError(`no object ${key} in ${where}`, { provider: 'azure', key })
    const hint = e.statusCode === 403 ? ' (access denied: check the key or SAS token and its permissions)' : e.code === 'ContainerNotFound' ? ' (no such container: create it or fix catalog.azure.container)' : ''
    // The SDK's messages can carry request URLs with SAS tokens: keep only the first line, without query strings.
    const message = String(e.message ?? '').split('\n')[0].replace(/\?[^\s"]*/g, '?…')
    return new ProviderError(`${where}: ${op} ${key} failed: ${e.code ?? e.name ?? 'Error'}${e.statusCode != null ? ` (HTTP ${e.statusCode})` : ''}: ${message}${hint}`, { provider: 'azure', key, status: e.statusCode })
  }

  return {
    name: 'azure',
    describe: () => where,
    async head (key, options) {
      try {
        return (await blob(key).getProperties({ abortSignal: options?.signal })).contentLength ?? 0
      } catch (err) {
        const e = fail('head', key, err)
        if (e instanceof ObjectNotFoundError) return undefined
        throw e
      }
    },
    async get (key, options) {
      try {
        const client = blob(key)
        const size = (await client.getProperties({ abortSignal: options?.signal })).contentLength ?? 0
        if (size === 0) return Buffer.alloc(0)
        return await client.downloadToBuffer(0, size, { abortSignal: options?.signal, blockSize, concurrency })
      } catch (err) {
        throw fail('get', key, err)
      }
    },
    async getRange (key, start, end, options) {
      if (end <= start) return Buffer.alloc(0)
      try {
        return await blob(key).downloadToBuffer(start, end - start, { abortSignal: options?.signal, blockSize, concurrency })
      } catch (err) {
        throw fail('get', key, err)
      }
    },
    async put (key, data, options) {
      try {
        await blob(key).uploadData(data, { abortSignal: options?.signal, blockSize, concurrency, maxSingleShotSize: blockSize })
      } catch (err) {
        throw fail('put', key, err)
      }
    },
    async * list (listPrefix, options): AsyncIterable<ObjectInfo> {
      const full = prefix + normalisePrefix(listPrefix)
      try {
        for await (const item of container.listBlobsFlat({ prefix: full, abortSignal: options?.signal })) {
          yield { key: item.name.slice(prefix.length), size: item.properties.contentLength ?? 0, ...(item.properties.lastModified != null ? { modifiedAt: item.properties.lastModified.getTime() } : {}) }
        }
      } catch (err) {
        throw fail('list', listPrefix, err)
      }
    },
    async delete (key, options) {
      try {
        await blob(key).deleteIfExists({ abortSignal: options?.signal })
      } catch (err) {
        throw fail('delete', key, err)
      }
    }
  }
}
