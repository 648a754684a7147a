import { test, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { CatalogFixture, pseudoRandom, users } from './fixture.ts'
import type { CatalogService } from '../../src/catalog/catalog-service.ts'
import type { ImportOutcome } from '../../src/catalog/import-pds.ts'

// Catalog packs as the Parallels DevOps Service writes them: a tar of the VM bundle's files (names
// with a leading "/", no folder entries, PAX records for long names), maybe gzipped, named
// <id>-<arch>-<version>.pdpack, with its JSON manifest as <same>.meta beside it.

/** A minimal tar writer (ustar, PAX path records), as Go's archive/tar writes them. */
function tar (files: Array<{ name: string, data: Buffer, mode?: number }>): Buffer {
  const blocks: Buffer[] = []
  const header = (name: string, size: number, type: string, mode: number): Buffer => {
    const h = Buffer.alloc(512)
    h.write(name.slice(0, 99), 0, 'utf8')
    h.write(mode.toString(8).padStart(7, '0') + '\0', 100)
    h.write('0000000\0', 108)
    h.write('0000000\0', 116)
    h.write(size.toString(8).padStart(11, '0') + '\0', 124)
    h.write('00000000000\0', 136)
    h.write('        ', 148)
    h.write(type, 156)
    h.write('ustar\0', 257)
    h.write('00', 263)
    let sum = 0
    for (const b of h) sum += b
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148)
    return h
  }
  const pad = (n: number): Buffer => Buffer.alloc((512 - (n % 512)) % 512)
  for (const f of files) {
    if (Buffer.byteLength(f.name) > 99) {
      const body = ` path=${f.name}\n`
      let len = body.length + 2
      while (String(len).length + body.length !== len) len = String(len).length + body.length
      const record = Buffer.from(`${len}${body}`)
      blocks.push(header('PaxHeaders/long', record.length, 'x', 0o644), record, pad(record.length))
    }
    blocks.push(header(f.name, f.data.length, '0', f.mode ?? 0o644), f.data, pad(f.data.length))
  }
  blocks.push(Buffer.alloc(1024))
  return Buffer.concat(blocks)
}

function meta (fields: Record<string, unknown>): Buffer {
  return Buffer.from(JSON.stringify({ id: 'x1', name: 'n', path: '/tmp/x', type: 'macvm', provider: { type: 'local' }, size: 1, created_at: '2024-01-01T00:00:00Z', ...fields }))
}

let fx: CatalogFixture
let svc: CatalogService
beforeEach(async () => {
  fx = new CatalogFixture()
  await fx.setup()
  svc = await fx.service('a')
})
afterEach(async () => { await fx.cleanup() })

const disk = pseudoRandom(200_000, 5)
const longName = `/Snapshots/${'deep-folder-name/'.repeat(8)}snapshot.sav`

async function seedPacks (): Promise<void> {
  const p = fx.provider!
  const mac = tar([{ name: '/config.pvs', data: Buffer.from('<ParallelsVirtualMachine/>') }, { name: '/harddisk.hdd/disk.hds', data: disk, mode: 0o600 }, { name: longName, data: Buffer.from('state') }])
  await p.put('pds/macos-15-xcode-16/macos-15-xcode-16-arm64-1.0.0.pdpack', mac)
  await p.put('pds/macos-15-xcode-16/macos-15-xcode-16-arm64-1.0.0.meta', meta({
    catalog_id: 'macos-15-xcode-16', version: '1.0.0', architecture: 'arm64', type: 'macvm', description: 'Xcode 16 on Sequoia',
    tags: ['stable', 'xcode-16'], required_claims: ['macos-builders'], required_roles: ['release'], pack_path: '/tmp/macos-15-xcode-16-arm64-1.0.0.pdpack'
  }))
  const linux = gzipSync(tar([{ name: '/config.pvs', data: Buffer.from('<vm/>') }, { name: '/disk.hdd', data: Buffer.alloc(100_000, 1) }]))
  await p.put('pds/ubuntu-amd64-2.0.pdpack', linux)
  await p.put('pds/ubuntu-amd64-2.0.meta', meta({ catalog_id: 'Ubuntu 24.04', version: '2.0', architecture: 'amd64', type: 'pvm', tainted: true }))
  await p.put('pds/orphan-x86_64-1.meta', meta({ catalog_id: 'orphan', version: '1', architecture: 'x86_64' }))
  await p.put('pds/evil-x86_64-1.pdpack', tar([{ name: '/../../escape', data: Buffer.from('owned') }]))
  await p.put('pds/evil-x86_64-1.meta', meta({ catalog_id: 'evil', version: '1', architecture: 'x86_64' }))
}

test('import keeps ids, versions, arches, tags, claims and roles, and taints; a re-run skips what is there', async () => {
  await seedPacks()
  const job = svc.startImport({ provider: 'folder', prefix: 'pds' }, 'admin')
  await svc.waitForJob(job.id)
  assert.equal(job.state, 'done', job.error?.message)
  const outcome = job.result as ImportOutcome
  assert.deepEqual(outcome.imported.map(i => `${i.id}:${i.version}:${i.arch}`).sort(), ['macos-15-xcode-16:1.0.0:arm64', 'ubuntu-24.04:2.0:x86_64'])
  assert.deepEqual(outcome.failed.map(f => f.meta).sort(), ['pds/evil-x86_64-1.meta', 'pds/orphan-x86_64-1.meta'])
  assert.match(outcome.failed.find(f => f.meta.includes('orphan'))!.error, /no pack beside it/)
  assert.match(outcome.failed.find(f => f.meta.includes('evil'))!.error, /outside its folder/)

  const mac = svc.show('macos-15-xcode-16')
  assert.equal(mac.description, 'Xcode 16 on Sequoia')
  assert.deepEqual(mac.tags, { stable: '1.0.0', 'xcode-16': '1.0.0', latest: '1.0.0' })
  assert.deepEqual(mac.requiredClaims, ['macos-builders', 'release'])
  assert.equal(mac.versions[0].guest.format, 'parallels')
  assert.equal(mac.versions[0].guest.os, 'macos')
  const ubuntu = svc.show('ubuntu-24.04')
  assert.equal(ubuntu.versions[0].arch, 'x86_64')
  assert.equal(ubuntu.versions[0].guest.os, 'linux')
  assert.ok(ubuntu.versions[0].revoked != null, 'a tainted pack stays unusable')

  // The bundle comes back as the VM's files, under <id>.<type>, long names included.
  const local = await svc.pull('macos-15-xcode-16', { user: users.admin, arch: 'arm64' })
  assert.ok(local.path.endsWith('macos-15-xcode-16.macvm'))
  assert.ok((await readFile(join(local.path, 'harddisk.hdd', 'disk.hds'))).equals(disk))
  assert.equal((await readFile(join(local.path, ...longName.split('/').filter(Boolean)))).toString(), 'state')
  assert.deepEqual((await readdir(local.path)).sort(), ['Snapshots', 'config.pvs', 'harddisk.hdd'])

  const again = svc.startImport({ provider: 'folder', prefix: 'pds' }, 'admin')
  await svc.waitForJob(again.id)
  assert.equal((again.result as ImportOutcome).imported.length, 0)
  assert.equal((again.result as ImportOutcome).skipped.length, 2)
  // Nothing escaped the scratch folder.
  await assert.rejects(readFile(join(fx.root, 'escape')))
})

test('import --only picks ids, and can push into another provider', async () => {
  await seedPacks()
  const job = svc.startImport({ provider: 'folder', prefix: 'pds', only: ['ubuntu-24.04'] }, 'admin')
  await svc.waitForJob(job.id)
  assert.deepEqual((job.result as ImportOutcome).imported.map(i => i.id), ['ubuntu-24.04'])
  assert.throws(() => svc.startImport({ provider: 'folder', prefix: 'pds', to: 's3' }, 'admin'), /no "s3" storage provider/)
})
