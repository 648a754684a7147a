import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { createArtifactoryProvider } from '../../../src/catalog/providers/artifactory.ts'
import type { StorageProvider } from '../../../src/catalog/providers/types.ts'
import { ProviderError } from '../../../src/catalog/errors.ts'
import { startWebdav, WEBDAV_API_KEY, type RunningServer } from '../../helpers/storage-servers.ts'
import { providerCompliance } from './compliance.ts'
import { garbageCollection } from './garbage.ts'

// Artifactory's generic repository protocol is plain HTTP PUT/GET/HEAD/DELETE with an API key
// header: tested against a real HTTP server that takes PUT (nginx with WebDAV methods).
let server: (RunningServer & { repoUrl: string }) | undefined
let provider: StorageProvider | undefined
before(async () => {
  server = await startWebdav()
  provider = createArtifactoryProvider({ url: server.repoUrl, prefix: 'team-a/images', apiKey: WEBDAV_API_KEY })
})
after(async () => { await server?.stop() })

providerCompliance('artifactory (nginx WebDAV)', () => provider as StorageProvider)
garbageCollection('artifactory (nginx WebDAV)', prefix => createArtifactoryProvider({ url: server!.repoUrl, prefix, apiKey: WEBDAV_API_KEY }))

test('artifactory: a wrong API key is a ProviderError that says to check it, and never shows it', async () => {
  const wrong = createArtifactoryProvider({ url: server!.repoUrl, apiKey: 'not-the-key' })
  await assert.rejects(wrong.put('x', Buffer.from('x')), (err: Error) => err instanceof ProviderError && /HTTP 401/.test(err.message) && /apiKey/.test(err.message) && !err.message.includes('not-the-key'))
})
