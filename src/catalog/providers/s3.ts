/**
 * The S3 provider (@aws-sdk/client-s3): AWS or any S3-compatible server (endpoint, region,
 * path-style addressing). Large objects go up as parallel multipart uploads; large downloads use
 * parallel ranged GETs (see download.ts); a pull reads ranges as streams (getRangeStream).
 * Credentials come from config, else the SDK's own chain (environment, profile, instance role);
 * they are never logged or put in messages.
 */
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand,
  HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, UploadPartCommand, type S3ClientConfig
} from '@aws-sdk/client-s3'
import { ObjectNotFoundError, ProviderError } from '../errors.ts'
import { forEachLimit } from '../pool.ts'
import { checkKey, normalisePrefix, type ObjectInfo, type StorageProvider } from './types.ts'

export interface S3ProviderInit {
  bucket: string
  prefix?: string
  /** Empty for AWS; `http://127.0.0.1:9000` for a local S3-compatible server. */
  endpoint?: string
  region: string
  forcePathStyle?: boolean
  accessKeyId?: string
  secretAccessKey?: string
  sessionToken?: string
  /** Objects larger than this go up in parts of this size (at least 5 MiB, S3's minimum). */
  partSizeBytes?: number
  /** Parts uploaded at once. */
  partConcurrency?: number
}

const MIN_PART = 5 * 1024 * 1024

export function createS3Provider (init: S3ProviderInit): StorageProvider {
  const prefix = normalisePrefix(init.prefix ?? '')
  const partSize = Math.max(MIN_PART, init.partSizeBytes ?? 16 * 1024 * 1024)
  const config: S3ClientConfig = {
    region: init.region,
    forcePathStyle: init.forcePathStyle === true,
    // Chunks are checked by SHA-256 on arrival; the SDK's extra CRC work would only cost CPU.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 4
  }
  if (init.endpoint != null && init.endpoint !== '') config.endpoint = init.endpoint
  if (init.accessKeyId != null && init.accessKeyId !== '' && init.secretAccessKey != null && init.secretAccessKey !== '') {
    config.credentials = { accessKeyId: init.accessKeyId, secretAccessKey: init.secretAccessKey, ...(init.sessionToken != null && init.sessionToken !== '' ? { sessionToken: init.sessionToken } : {}) }
  }
  const client = new S3Client(config)
  const Bucket = init.bucket
  const where = `s3 bucket ${Bucket}${prefix !== '' ? `/${prefix}` : ''}${config.endpoint != null ? ` at ${String(config.endpoint)}` : ` in ${init.region}`}`
  const keyOf = (key: string): string => prefix + checkKey(key)

  const fail = (op: string, key: string, err: unknown): Error => {
    const e = err as { name?: string, message?: string, $metadata?: { httpStatusCode?: number } }
    const status = e.$metadata?.httpStatusCode
    if (err instanceof TypeError) return err
    if (e.name === 'NoSuchKey' || e.name === 'NotFound' || (status === 404 && e.name !== 'NoSuchBucket')) {
      return new ObjectNotFoundError(`no object ${key} in ${where}`, { provider: 's3', key })
    }
    if (e.name === 'AbortError') return err as Error
    const hint = status === 403 ? ' (access denied: check the credentials and the bucket policy)' : e.name === 'NoSuchBucket' ? ' (no such bucket: create it or fix catalog.s3.bucket)' : ''
    return new ProviderError(`${where}: ${op} ${key} failed: ${e.name ?? 'Error'}${status != null ? ` (HTTP ${status})` : ''}: ${e.message ?? ''}${hint}`, { provider: 's3', key, status })
  }

  /** The body into one buffer of its announced length: no list of pieces concatenated at the end. */
  const bytesOf = async (body: unknown, length: number | undefined): Promise<Buffer> => {
    if (length == null || typeof (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] !== 'function') {
      const array = await (body as { transformToByteArray: () => Promise<Uint8Array> }).transformToByteArray()
      return Buffer.from(array.buffer, array.byteOffset, array.byteLength)
    }
    const out = Buffer.allocUnsafe(length)
    let at = 0
    for await (const piece of body as AsyncIterable<Uint8Array>) {
      if (at + piece.length > length) throw new Error(`the server sent more than the ${length} bytes it announced`)
      out.set(piece, at)
      at += piece.length
    }
    if (at !== length) throw new Error(`the server sent ${at} of the ${length} bytes it announced`)
    return out
  }

  async function putMultipart (key: string, data: Buffer, signal?: AbortSignal): Promise<void> {
    const Key = keyOf(key)
    const created = await client.send(new CreateMultipartUploadCommand({ Bucket, Key }), { abortSignal: signal })
    const UploadId = created.UploadId
    const parts: Array<{ PartNumber: number, ETag?: string }> = []
    try {
      const numbers = Array.from({ length: Math.ceil(data.length / partSize) }, (_, i) => i + 1)
      await forEachLimit(numbers, init.partConcurrency ?? 4, async PartNumber => {
        const body = data.subarray((PartNumber - 1) * partSize, PartNumber * partSize)
        const res = await client.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber, Body: body }), { abortSignal: signal })
        parts.push({ PartNumber, ETag: res.ETag })
      })
      parts.sort((a, b) => a.PartNumber - b.PartNumber)
      await client.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: parts } }), { abortSignal: signal })
    } catch (err) {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId })).catch(() => {})
      throw err
    }
  }

  return {
    name: 's3',
    describe: () => where,
    async head (key, options) {
      try {
        const res = await client.send(new HeadObjectCommand({ Bucket, Key: keyOf(key) }), { abortSignal: options?.signal })
        return res.ContentLength ?? 0
      } catch (err) {
        const e = fail('head', key, err)
        if (e instanceof ObjectNotFoundError) return undefined
        throw e
      }
    },
    async get (key, options) {
      try {
        const res = await client.send(new GetObjectCommand({ Bucket, Key: keyOf(key) }), { abortSignal: options?.signal })
        return await bytesOf(res.Body, res.ContentLength)
      } catch (err) {
        throw fail('get', key, err)
      }
    },
    async getRange (key, start, end, options) {
      if (end <= start) return Buffer.alloc(0)
      try {
        const res = await client.send(new GetObjectCommand({ Bucket, Key: keyOf(key), Range: `bytes=${start}-${end - 1}` }), { abortSignal: options?.signal })
        return await bytesOf(res.Body, res.ContentLength)
      } catch (err) {
        throw fail('get', key, err)
      }
    },
    async * getRangeStream (key, start, end, options) {
      if (end <= start) return
      let body: AsyncIterable<Uint8Array>
      try {
        const res = await client.send(new GetObjectCommand({ Bucket, Key: keyOf(key), Range: `bytes=${start}-${end - 1}` }), { abortSignal: options?.signal })
        body = res.Body as AsyncIterable<Uint8Array>
      } catch (err) {
        throw fail('get', key, err)
      }
      let at = 0
      try {
        for await (const piece of body) {
          at += piece.length
          if (at > end - start) throw new Error(`the server sent more than the ${end - start} bytes asked for`)
          yield Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength)
        }
      } catch (err) {
        throw fail('get', key, err)
      }
      if (at !== end - start) throw fail('get', key, new Error(`the server sent ${at} of the ${end - start} bytes asked for`))
    },
    async put (key, data, options) {
      try {
        if (data.length > partSize) await putMultipart(key, data, options?.signal)
        else await client.send(new PutObjectCommand({ Bucket, Key: keyOf(key), Body: data, ContentLength: data.length }), { abortSignal: options?.signal })
      } catch (err) {
        throw fail('put', key, err)
      }
    },
    async * list (listPrefix, options): AsyncIterable<ObjectInfo> {
      let ContinuationToken: string | undefined
      const full = prefix + normalisePrefix(listPrefix)
      for (let page = 0; page < 1_000_000; page++) {
        let res
        try {
          res = await client.send(new ListObjectsV2Command({ Bucket, Prefix: full, ContinuationToken }), { abortSignal: options?.signal })
        } catch (err) {
          throw fail('list', listPrefix, err)
        }
        for (const item of res.Contents ?? []) {
          if (item.Key != null) yield { key: item.Key.slice(prefix.length), size: item.Size ?? 0, ...(item.LastModified != null ? { modifiedAt: item.LastModified.getTime() } : {}) }
        }
        if (res.IsTruncated !== true || res.NextContinuationToken == null) return
        ContinuationToken = res.NextContinuationToken
      }
    },
    async delete (key, options) {
      try {
        await client.send(new DeleteObjectCommand({ Bucket, Key: keyOf(key) }), { abortSignal: options?.signal })
      } catch (err) {
        const e = fail('delete', key, err)
        if (!(e instanceof ObjectNotFoundError)) throw e
      }
    }
  }
}
