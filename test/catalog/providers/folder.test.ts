import { after, before } from 'node:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createFolderProvider } from '../../../src/catalog/providers/folder.ts'
import type { StorageProvider } from '../../../src/catalog/providers/types.ts'
import { providerCompliance } from './compliance.ts'
import { garbageCollection } from './garbage.ts'

let dir = ''
let provider: StorageProvider | undefined
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'corral-folder-provider-'))
  provider = createFolderProvider({ path: join(dir, 'store') })
})
after(async () => { await rm(dir, { recursive: true, force: true }) })

providerCompliance('folder', () => provider as StorageProvider)
garbageCollection('folder', prefix => createFolderProvider({ path: join(dir, 'gc', prefix) }))
