/**
 * Catalog garbage collection against a real provider (each provider's test file runs it with a
 * fresh prefix): what versions use stays, what deleted versions left goes once older than the
 * grace period, a push under way keeps every pack, and the kept version still pulls byte for byte.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CatalogService } from '../../../src/catalog/catalog-service.ts'
import type { BundleManifest } from '../../../src/catalog/manifest.ts'
import type { GarbageReport } from '../../../src/catalog/garbage.ts'
import type { StorageProvider } from '../../../src/catalog/providers/types.ts'
import { removeTree } from '../../../src/catalog/unpack.ts'
import { logger, makeImage, MemoryRecords, users } from '../fixture.ts'

const MINUTE = 60_000

export function garbageCollection (label: string, makeProvider: (prefix: string) => StorageProvider): void {
  test(`${label}: garbage collection removes what deleted versions left once it is old enough, keeps what live versions and pushes under way need`, { timeout: 120_000 }, async () => {
    const root = await mkdtemp(join(tmpdir(), 'corral-gc-'))
    const services: CatalogService[] = []
    try {
      const provider = makeProvider(`gc-${Math.random().toString(36).slice(2, 10)}`)
      const records = new MemoryRecords()
      const service = async (name: string, clock: () => number): Promise<CatalogService> => {
        const s = new CatalogService({ logger: logger.child({ node: name }), records, clock, hostArch: async () => 'x86_64' }, {
          cacheDir: join(root, name), cacheMaxBytes: 1 << 30, providers: { [provider.name]: provider }, concurrency: 4, cacheOnPush: false,
          chunking: { algorithm: 'fastcdc-gear32-v1', minSize: 4096, avgSize: 16384, maxSize: 65536 }, segmentBytes: 64 * 1024, packBytes: 128 * 1024
        })
        await s.start()
        services.push(s)
        return s
      }
      const keys = async (prefix: string): Promise<string[]> => {
        const out: string[] = []
        for await (const o of provider.list(prefix)) out.push(o.key)
        return out.sort()
      }
      const packKeys = (m: BundleManifest): Set<string> => new Set(Object.values(m.blobs).map(b => `packs/${(b.pack as string).slice(0, 2)}/${b.pack as string}`))

      const pusher = await service('pusher', Date.now)
      const folder = await makeImage(join(root, 'src'), 300_000, 1)
      await pusher.push({ path: folder, image: 'guest', version: '1.0' }, 'admin')
      const disk = await readFile(join(folder, 'base.qcow2'))
      const original = Buffer.from(disk)
      disk.fill(7, 200_000, 260_000)
      await writeFile(join(folder, 'base.qcow2'), disk)
      await pusher.push({ path: folder, image: 'guest', version: '2.0' }, 'admin')
      await writeFile(join(folder, 'base.qcow2'), original)
      await pusher.push({ path: await makeImage(join(root, 'other'), 200_000, 3), image: 'other', version: '1.0' }, 'admin')
      const [v1, v2, v3] = [pusher.records.version('guest', '1.0', 'x86_64'), pusher.records.version('guest', '2.0', 'x86_64'), pusher.records.version('other', '1.0', 'x86_64')]
      const [m1, m2, m3] = await Promise.all([v1, v2, v3].map(async v => await pusher.manifestOf(v!)))
      // 2.0 shares most of 1.0's packs and added its own; "other" shares nothing.
      const onlyV2 = [...packKeys(m2)].filter(k => !packKeys(m1).has(k))
      assert.ok(onlyV2.length > 0 && onlyV2.length < packKeys(m2).size, `2.0 added packs of its own (${onlyV2.length} of ${packKeys(m2).size})`)
      assert.deepEqual(await keys('leases/'), [], 'pushes remove their leases')

      // The collector's clock runs 10 minutes ahead: what the test wrote is 10 minutes old.
      const collector = await service('collector', () => Date.now() + 10 * MINUTE)
      const gc = async (options: { dryRun: boolean, graceMs?: number, forgetOrphans?: boolean }): Promise<GarbageReport> => {
        const [report] = await collector.collectGarbage({ provider: provider.name, ...options })
        return report
      }
      const byAction = (r: GarbageReport, action: string): string[] => r.items.filter(i => i.action === action).map(i => i.key).sort()
      const everything = async (): Promise<string[]> => [...await keys('packs/'), ...await keys('manifests/'), ...await keys('images/')]

      const clean = await gc({ dryRun: false, graceMs: 5 * MINUTE })
      assert.deepEqual(clean.items, [], 'nothing is garbage while every version lives')
      assert.equal(clean.live.versions, 3)
      assert.equal(clean.live.packs, new Set([...packKeys(m1), ...packKeys(m2), ...packKeys(m3)]).size)

      // 2.0 deleted as usual (its document goes too); "other" deleted by a node without this
      // provider (its document stays behind).
      await pusher.remove('guest', '2.0')
      await records.delete('catalog-versions', 'other:1.0:x86_64')
      const before = await everything()

      const young = await gc({ dryRun: true })
      // Within the default grace (a day) nothing goes: the manifest may be a push's about to be
      // named by its version, so the packs it names stay with it.
      assert.deepEqual(byAction(young, 'kept-young'), [`manifests/${v2!.manifest}.json`])
      assert.equal(young.items.filter(i => i.kind === 'pack').length, 0)
      assert.deepEqual(byAction(young, 'kept-orphan'), ['images/other/1.0/x86_64.json'])

      const listed = await gc({ dryRun: true, graceMs: 5 * MINUTE })
      assert.deepEqual(byAction(listed, 'would-remove'), [`manifests/${v2!.manifest}.json`, ...onlyV2].sort())
      assert.equal(listed.bytes, listed.items.filter(i => i.action === 'would-remove').reduce((n, i) => n + i.bytes, 0))
      assert.deepEqual(await everything(), before, 'a dry run removes nothing')

      // A push under way (a fresh lease): manifests go, packs stay.
      await provider.put('leases/someone-pushing.json', Buffer.from(JSON.stringify({ image: 'big', version: '9', by: 'ci', refreshedAt: new Date(Date.now() + 10 * MINUTE).toISOString() })))
      const busy = await gc({ dryRun: false, graceMs: 5 * MINUTE })
      assert.equal(busy.pushes.length, 1)
      assert.deepEqual(byAction(busy, 'removed'), [`manifests/${v2!.manifest}.json`])
      assert.deepEqual(byAction(busy, 'kept-push'), onlyV2.sort())
      for (const k of onlyV2) assert.ok(await provider.head(k) != null, `${k} is still there`)

      // The push is over; orphans are forgotten on request.
      await provider.delete('leases/someone-pushing.json')
      const done = await gc({ dryRun: false, graceMs: 5 * MINUTE, forgetOrphans: true })
      // "other" shares one chunk with 1.0 (the same image.json), so one of the packs it names is 1.0's.
      const onlyV3 = [...packKeys(m3)].filter(k => !packKeys(m1).has(k))
      assert.deepEqual(byAction(done, 'removed'), [...onlyV2, ...onlyV3, `manifests/${v3!.manifest}.json`, 'images/other/1.0/x86_64.json'].sort())
      assert.deepEqual(await keys('packs/'), [...packKeys(m1)].sort(), 'only 1.0\'s packs are left')
      assert.deepEqual(await keys('manifests/'), [`manifests/${v1!.manifest}.json`])
      assert.deepEqual((await gc({ dryRun: false, graceMs: 5 * MINUTE, forgetOrphans: true })).items, [], 'a second run finds nothing')

      const puller = await service('puller', Date.now)
      const local = await puller.pull('guest:1.0', { user: users.ci })
      assert.ok((await readFile(join(local.path, 'base.qcow2'))).equals(original), '1.0 pulls byte for byte')
    } finally {
      for (const s of services) await s.stop()
      await removeTree(root)
    }
  })
}
