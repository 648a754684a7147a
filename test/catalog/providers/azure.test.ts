import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { BlobServiceClient } from '@azure/storage-blob'
import { createAzureProvider } from '../../../src/catalog/providers/azure.ts'
import type { StorageProvider } from '../../../src/catalog/providers/types.ts'
import { ProviderError } from '../../../src/catalog/errors.ts'
import { startAzurite, AZURITE_ACCOUNT, type RunningServer } from '../../helpers/storage-servers.ts'
import { providerCompliance } from './compliance.ts'
import { garbageCollection } from './garbage.ts'

let server: (RunningServer & { connectionString: string }) | undefined
let provider: StorageProvider | undefined
before(async () => {
  server = await startAzurite()
  await BlobServiceClient.fromConnectionString(server.connectionString).getContainerClient('corral').create()
  provider = createAzureProvider({ container: 'corral', prefix: 'team-a', connectionString: server.connectionString, blockSizeBytes: 4 * 1024 * 1024 })
})
after(async () => { await server?.stop() })

providerCompliance('azure (Azurite)', () => provider as StorageProvider)
garbageCollection('azure (Azurite)', prefix => createAzureProvider({ container: 'corral', prefix, connectionString: server!.connectionString }))

test('azure: account URL with a shared key works too; a missing container says so without the key', async () => {
  const byKey = createAzureProvider({ container: 'corral', accountUrl: `${server!.endpoint}/${AZURITE_ACCOUNT.name}`, accountName: AZURITE_ACCOUNT.name, accountKey: AZURITE_ACCOUNT.key })
  await byKey.put('by-key', Buffer.from('k'))
  assert.equal((await byKey.get('by-key')).toString(), 'k')
  const missing = createAzureProvider({ container: 'no-such-container', connectionString: server!.connectionString })
  await assert.rejects(missing.put('x', Buffer.from('x')), (err: Error) => err instanceof ProviderError && /no such container/.test(err.message) && !err.message.includes(AZURITE_ACCOUNT.key))
})
