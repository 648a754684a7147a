import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createS3Provider } from '../../../src/catalog/providers/s3.ts'
import type { StorageProvider } from '../../../src/catalog/providers/types.ts'
import { ProviderError } from '../../../src/catalog/errors.ts'
import { startS3Server, S3_TEST_CREDENTIALS, type RunningServer } from '../../helpers/storage-servers.ts'
import { providerCompliance } from './compliance.ts'
import { garbageCollection } from './garbage.ts'

let server: RunningServer | undefined
let provider: StorageProvider | undefined
before(async () => {
  server = await startS3Server(['corral'])
  provider = createS3Provider({ bucket: 'corral', prefix: 'team-a/images', endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, ...S3_TEST_CREDENTIALS, partSizeBytes: 5 * 1024 * 1024 })
})
after(async () => { await server?.stop() })

providerCompliance('s3 (s3rver)', () => provider as StorageProvider)
garbageCollection('s3 (s3rver)', prefix => createS3Provider({ bucket: 'corral', prefix, endpoint: server?.endpoint, region: 'us-east-1', forcePathStyle: true, ...S3_TEST_CREDENTIALS }))

test('s3: a missing bucket is a ProviderError that says so, without the credentials', async () => {
  const p = createS3Provider({ bucket: 'no-such-bucket', endpoint: server?.endpoint, region: 'us-east-1', forcePathStyle: true, ...S3_TEST_CREDENTIALS })
  await assert.rejects(p.put('x', Buffer.from('x')), (err: Error) => err instanceof ProviderError && /no-such-bucket/.test(err.message) && !err.message.includes('S3RVER'))
})
