import { test, beforeEach, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, writeFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { CatalogFixture, counting, makeImage, users } from './fixture.ts'
import type { CatalogService } from '../../src/catalog/catalog-service.ts'
import { packKey, fetchBlobsOf } from './pack-helpers.ts'
import { segmentsOf } from '../../src/catalog/transfer.ts'
import {
  CatalogAccessDeniedError, CatalogVersionExistsError, ImageRevokedError, ChunkCorruptError, CatalogVersionNotFoundError, CacheFullError, PackGoneError
} from '../../src/catalog/errors.ts'
import type { StorageProvider } from '../../src/catalog/providers/types.ts'

let fx: CatalogFixture
beforeEach(async () => { fx = new CatalogFixture(); await fx.setup() })
afterEach(async () => { await fx.cleanup() })

async function pushGuest (svc: CatalogService, version: string, seed = 1, size = 300_000, extra: Record<string, unknown> = {}): Promise<string> {
  const folder = await makeImage(join(fx.root, `src-${version}-${seed}`), size, seed)
  await svc.push({ path: folder, image: 'guest', version, ...extra }, 'admin')
  return folder
}

test('push registers an image with its version and latest tag; another node pulls it byte for byte', async () => {
  const a = await fx.service('a')
  const b = await fx.service('b')
  const folder = await pushGuest(a, '1.0', 1, 300_000, { description: 'test guest', tags: ['latest', 'stable'] })
  const entry = b.show('guest')
  assert.equal(entry.description, 'test guest')
  assert.deepEqual(entry.tags, { latest: '1.0', stable: '1.0' })
  assert.equal(entry.versions.length, 1)
  assert.equal(entry.versions[0].arch, 'x86_64')
  assert.equal(entry.versions[0].guest.format, 'qemu')
  assert.equal(entry.versions[0].guest.defaultMemoryMiB, 256)

  const events: string[] = []
  b.addEventListener('progress', e => events.push((e as CustomEvent).detail.phase))
  const local = await b.pull('guest', { user: users.ci })
  assert.equal(local.name, 'guest:1.0')
  assert.ok((await readFile(join(local.path, 'base.qcow2'))).equals(await readFile(join(folder, 'base.qcow2'))))
  assert.deepEqual(b.localImages().map(i => i.name), ['guest:1.0'])
  assert.ok(events.includes('chunks') && events.at(-1) === 'done', events.join(','))
  assert.deepEqual((await b.pullable()).map(p => p.name), ['guest:1.0'])
  // Pulling again is instant: it is cached.
  assert.equal((await b.pull('guest:stable', { user: users.ci })).path, local.path)
})

test('versions are immutable, and a second version uploads and downloads only what changed', async () => {
  const a = await fx.service('a')
  const b = await fx.service('b')
  const folder = await pushGuest(a, '1.0')
  await assert.rejects(pushGuest(a, '1.0'), CatalogVersionExistsError)
  await b.pull('guest:1.0', { user: users.ci })

  const disk = await readFile(join(folder, 'base.qcow2'))
  disk.fill(9, 100_000, 104_000)
  await writeFile(join(folder, 'base.qcow2'), disk)
  const job = a.startPush({ path: folder, image: 'guest', version: '2.0' }, 'admin')
  await a.waitForJob(job.id)
  assert.equal(job.state, 'done', job.error?.message)
  assert.ok(job.progress.chunksReused > job.progress.chunksTotal - 5, `reused ${job.progress.chunksReused} of ${job.progress.chunksTotal}`)

  const pull = b.startPull('guest', users.ci)
  await b.waitForJob(pull.id)
  assert.equal(pull.state, 'done', pull.error?.message)
  assert.equal((pull.result as { name: string }).name, 'guest:2.0', 'latest moved to 2.0')
  assert.ok(pull.progress.chunksTotal - pull.progress.chunksReused <= 4, `fetched ${pull.progress.chunksTotal - pull.progress.chunksReused} chunks for a 4 kB change`)
})

test('a pull interrupted part way resumes at the next start and does not fetch again what it has', async () => {
  const a = await fx.service('a')
  await pushGuest(a, '1.0', 3, 600_000)
  const version = a.show('guest').versions[0]
  const provider = counting(fx.provider!)
  // The manifest, then a few segments (one ranged read each); then storage "goes away".
  provider.failAfter = 4
  const b = await fx.service('b', { providers: { folder: provider }, concurrency: 1 })
  await assert.rejects(b.pull('guest', { user: users.ci }))
  assert.equal(b.localImages().length, 0)
  await b.stop()
  const bytesBefore = provider.chunkBytes
  assert.ok(bytesBefore > 0 && bytesBefore < version.storedSize)
  assert.ok((await readdir(join(fx.root, 'b', 'pulls'))).length === 1, 'the pull is remembered')

  // The "restarted" node: same cache folder, storage back.
  provider.failAfter = undefined
  provider.chunkBytes = 0
  const again = await fx.service('b', { providers: { folder: provider } })
  await eventually(() => again.localImages().length === 1)
  const job = again.listJobs()[0]
  assert.ok(job.progress.chunksReused > 0, 'the chunks fetched before the restart were kept')
  assert.equal(bytesBefore + provider.chunkBytes, version.storedSize, 'every stored byte read exactly once over both runs')
  assert.deepEqual(await readdir(join(fx.root, 'b', 'pulls')), [])
})

test('a corrupt chunk from the provider is detected and fetched again; one corrupt everywhere fails the pull and leaves no image', async () => {
  const a = await fx.service('a', { cacheOnPush: false })
  const folder = await pushGuest(a, '1.0')
  const provider = counting(fx.provider!)
  const manifest = await a.manifestOf(a.show('guest').versions[0])
  const victim = manifest.blobs[Object.keys(manifest.blobs)[1]]
  provider.corruptInPack.push({ pack: victim.pack!, offset: victim.offset!, stored: victim.stored, times: 1 })
  const b = await fx.service('b', { providers: { folder: provider } })
  const job = b.startPull('guest', users.ci)
  await b.waitForJob(job.id)
  assert.equal(job.state, 'done', job.error?.message)
  assert.equal(job.progress.corruptChunks, 1)
  assert.ok((await readFile(join((job.result as { path: string }).path, 'base.qcow2'))).equals(await readFile(join(folder, 'base.qcow2'))))

  // Damaged in storage for good: the pull gives up with a clear error and nothing is unpacked.
  const c = await fx.service('c', { providers: { folder: provider } })
  provider.corruptInPack.push({ pack: victim.pack!, offset: victim.offset!, stored: victim.stored, times: 100 })
  await assert.rejects(c.pull('guest', { user: users.ci }), (err: Error) => err instanceof ChunkCorruptError && /push this version again/.test(err.message))
  assert.deepEqual(c.localImages(), [])
})

test('a provider that streams: chunks cut across pieces unpack byte for byte, a corrupt one is fetched again, and a stream cut midway keeps the chunks it completed', async () => {
  const a = await fx.service('a', { cacheOnPush: false })
  const folder = await pushGuest(a, '1.0', 5, 400_000)
  const version = a.show('guest').versions[0]
  const manifest = await a.manifestOf(version)
  const first = segmentsOf(manifest, 64 * 1024)[0]
  const provider = counting(fx.provider!)
  // Odd-sized pieces: most chunks start and end inside one.
  provider.pieceBytes = 1000
  // Its last chunk: corrupt in the read that is cut before it (no harm), and in the next one.
  const victim = manifest.blobs[first.ids.at(-1)!]
  provider.corruptInPack.push({ pack: victim.pack!, offset: victim.offset!, stored: victim.stored, times: 2 })
  provider.cutStreamAfter = 30_000
  const b = await fx.service('b', { providers: { folder: provider }, concurrency: 1 })
  const job = b.startPull('guest', users.ci)
  await b.waitForJob(job.id)
  assert.equal(job.state, 'done', job.error?.message)
  assert.ok((await readFile(join((job.result as { path: string }).path, 'base.qcow2'))).equals(await readFile(join(folder, 'base.qcow2'))))
  assert.equal(job.progress.corruptChunks, 1)
  // The first segment's read was cut after 30 000 bytes: the chunks that had fully arrived by then
  // were kept; the rest of that segment, and the corrupt chunk, were read again.
  const start = manifest.blobs[first.ids[0]].offset!
  const completed = first.ids.filter(id => manifest.blobs[id].offset! + manifest.blobs[id].stored - start <= 30_000)
  assert.ok(completed.length > 0, 'the cut falls after the first chunk')
  const kept = completed.reduce((n, id) => n + manifest.blobs[id].stored, 0)
  assert.equal(provider.chunkBytes, version.storedSize + (first.stored - kept) + victim.stored)
})

test('neighbouring segments no peer serves are read from the provider together, one ranged read per pack after a first round', async () => {
  const a = await fx.service('a', { cacheOnPush: false })
  const folder = await pushGuest(a, '1.0', 7, 600_000)
  const manifest = await a.manifestOf(a.show('guest').versions[0])
  const packs = new Set(Object.values(manifest.blobs).map(b => b.pack))
  assert.ok(segmentsOf(manifest, 64 * 1024).length > packs.size * 2, 'several segments per pack')
  const provider = counting(fx.provider!)
  const b = await fx.service('b', { providers: { folder: provider }, readBytes: 32 * 1024 * 1024, concurrency: 1 })
  const local = await b.pull('guest', { user: users.ci })
  assert.ok((await readFile(join(local.path, 'base.qcow2'))).equals(await readFile(join(folder, 'base.qcow2'))))
  // A first round (one segment per fetch slot) goes alone, in case other hosts start the same pull;
  // then one read per pack. When that first segment was all its pack held, that pack needs no more.
  const reads = provider.gets.filter(k => k.startsWith('packs/')).length
  assert.ok(reads >= packs.size && reads <= packs.size + 1, `${reads} reads of ${packs.size} packs (one per segment would be ${segmentsOf(manifest, 64 * 1024).length})`)
  assert.equal(provider.chunkBytes, manifest.storedSize)
})

test('a push whose reused pack is garbage-collected while it runs fails cleanly, and succeeds when pushed again', async () => {
  const a = await fx.service('a', { cacheOnPush: false })
  const folder = await pushGuest(a, '1.0')
  const v1 = a.show('guest').versions[0]
  const m1 = await a.manifestOf(v1)
  const victim = Object.values(m1.blobs)[0].pack!
  // While the next push uploads its new chunks, 1.0 is deleted elsewhere and a collection removes
  // its packs: the push learnt where 1.0's chunks were when it started.
  const inner = fx.provider!
  let armed = true
  const racing: StorageProvider = {
    ...inner,
    put: async (key, data, options) => {
      await inner.put(key, data, options)
      if (!armed || !key.startsWith('packs/')) return
      armed = false
      await fx.records.delete('catalog-versions', `guest:1.0:${v1.arch}`)
      await inner.delete(packKey(victim))
    }
  }
  const b = await fx.service('b', { providers: { folder: racing }, cacheOnPush: false })
  // b still sees 1.0 as the push begins (records lag between nodes).
  await fx.records.put('catalog-versions', `guest:1.0:${v1.arch}`, v1)
  const disk = await readFile(join(folder, 'base.qcow2'))
  disk.fill(1, 0, 5000)
  await writeFile(join(folder, 'base.qcow2'), disk)
  await assert.rejects(b.push({ path: folder, image: 'guest', version: '2.0' }, 'admin'), (err: Error) => err instanceof PackGoneError && /push again/.test(err.message))
  assert.equal(b.records.version('guest', '2.0', v1.arch), undefined, 'no version recorded')
  const leases: string[] = []
  for await (const o of inner.list('leases/')) leases.push(o.key)
  assert.deepEqual(leases, [], 'the lease is gone')

  const v2 = await b.push({ path: folder, image: 'guest', version: '2.0' }, 'admin')
  const c = await fx.service('c')
  const local = await c.pull('guest:2.0', { user: users.ci })
  assert.ok((await readFile(join(local.path, 'base.qcow2'))).equals(disk))
  assert.equal(v2.version, '2.0')
})

test('a peer\'s request for a segment does not wait on this host\'s own fetch of it when that fetch waits on an owner peer', async () => {
  const a = await fx.service('a', { cacheOnPush: false })
  await pushGuest(a, '1.0')
  const version = a.show('guest').versions[0]
  const manifest = await a.manifestOf(version)
  const b = await fx.service('b')
  // b takes another host for the owner of every segment, and that host never answers (it is, in
  // turn, waiting on b): b's pull hangs on its segments.
  let asked = 0
  b.setPeerRouting({
    begin: async () => {},
    end: async () => {},
    sources: (_segment, round) => round >= 2 ? [] : [{
      kind: 'peer', label: 'peer stuck (owner)', owner: true,
      fetch: async (_ids, signal) => { asked++; return await new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true })) }
    }]
  })
  const pull = b.pull('guest', { user: users.ci }).catch(() => undefined)
  await eventually(() => asked > 0)
  // Meanwhile that host asks b, as the owner in its view, for the first segment.
  const first = segmentsOf(manifest, 64 * 1024)[0]
  const served = await b.blobsForPeer(first.ids, version.manifest, true, AbortSignal.timeout(20_000))
  assert.deepEqual([...served.keys()].sort(), [...first.ids].sort(), 'served from the provider, not after the hung fetch')
  await b.stop()
  await pull
})

test('a chunk that goes bad in the local cache before unpacking is fetched again', async () => {
  const a = await fx.service('a', { cacheOnPush: false })
  const folder = await pushGuest(a, '1.0')
  const b = await fx.service('b')
  const manifest = await a.manifestOf(a.show('guest').versions[0])
  // Put a corrupt copy where b's store keeps that chunk, as a failing disk would.
  const victim = Object.keys(manifest.blobs)[0]
  const stored = (await fetchBlobsOf(fx.provider!, manifest, [victim])).get(victim)!
  await b.store.put(victim, stored)
  await writeFile(join(fx.root, 'b', 'chunks', victim.slice(0, 2), victim), Buffer.from([1, 2, 3]))
  const local = await b.pull('guest', { user: users.ci })
  assert.ok((await readFile(join(local.path, 'base.qcow2'))).equals(await readFile(join(folder, 'base.qcow2'))))
})

test('claims and revocation: who may pull what', async () => {
  const a = await fx.service('a')
  await pushGuest(a, '1.0', 1, 100_000, { requiredClaims: ['macos-builders'] })
  await assert.rejects(a.pull('guest', { user: users.ci }), (err: Error) => err instanceof CatalogAccessDeniedError && /macos-builders/.test(err.message))
  assert.throws(() => a.startPull('guest', users.ci), CatalogAccessDeniedError)
  await a.pull('guest', { user: users.builder })
  await a.pull('guest', { user: users.admin })

  await a.setRevoked('guest', { version: '1.0' }, 'CVE-2024-0001', 'admin')
  await assert.rejects(a.pull('guest:1.0', { user: users.admin }), ImageRevokedError)
  assert.deepEqual(await a.pullable(), [])
  await a.setRevoked('guest', { version: '1.0' }, null, 'admin')
  await a.setRevoked('guest', {}, 'retired', 'admin')
  await assert.rejects(a.pull('guest', { user: users.builder }), /retired/)
  await assert.rejects(a.pull('guest:9.9', { user: users.admin }), CatalogVersionNotFoundError)
})

test('the cache evicts least recently used images and chunks, never one a VM uses', async () => {
  const inUse = new Set<string>()
  const a = await fx.service('a', { cacheOnPush: false })
  for (const v of ['1', '2', '3']) await pushGuest(a, v, Number(v) * 2 + 1, 200_000)
  // Each image is ~200 kB unpacked (pulls keep no second copy of the chunks): room for two.
  const b = await fx.service('b', { cacheMaxBytes: 450_000 }, () => inUse)
  await b.pull('guest:1', { user: users.ci })
  inUse.add('guest:1')
  await b.pull('guest:2', { user: users.ci })
  await b.pull('guest:3', { user: users.ci })
  const names = b.localImages().map(i => i.name)
  assert.ok(names.includes('guest:1'), 'in use: kept')
  assert.ok(names.includes('guest:3'), 'just pulled')
  assert.ok(!names.includes('guest:2'), `least recently used goes: ${names.join(', ')}`)
  assert.ok(b.cache.usedBytes() <= 450_000)
  const tiny = await fx.service('tiny', { cacheMaxBytes: 100_000 })
  await assert.rejects(tiny.pull('guest:1', { user: users.ci }), CacheFullError)
})

async function eventually (check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}
