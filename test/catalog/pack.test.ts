import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmod, lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, stat, symlink, truncate, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { packFolder, type BlobSink } from '../../src/catalog/pack.ts'
import { unpackBundle, removeTree, BundleWriter } from '../../src/catalog/unpack.ts'
import { ChunkStore } from '../../src/catalog/chunk-store.ts'
import { CHUNKER_ALGORITHM, type ChunkingParams } from '../../src/catalog/chunker.ts'
import { decodeManifest, encodeManifest, manifestDigest, ZERO_CHUNK } from '../../src/catalog/manifest.ts'
import { BundleInvalidError } from '../../src/catalog/errors.ts'

const SMALL: ChunkingParams = { algorithm: CHUNKER_ALGORITHM, minSize: 4096, avgSize: 16384, maxSize: 65536 }
const logger = pino({ level: 'silent' })

function bytes (n: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(n)
  let x = seed | 1
  for (let i = 0; i < n; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; out[i] = x & 0xff }
  return out
}

async function withDir (fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'corral-pack-'))
  try { await fn(dir) } finally { await removeTree(dir) }
}

/** A sink backed by a chunk store, counting what it was sent. */
function storeSink (store: ChunkStore): BlobSink & { sent: number } {
  const sink = {
    sent: 0,
    has: async (id: string) => store.storedSize(id),
    put: async (id: string, stored: Buffer) => { sink.sent++; await store.put(id, stored) }
  }
  return sink
}

async function makeBundle (dir: string): Promise<string> {
  const root = join(dir, 'guest.pvm')
  await mkdir(join(root, 'Snapshots', 'deep'), { recursive: true })
  await writeFile(join(root, 'config.pvs'), '<xml>config</xml>\n')
  await writeFile(join(root, 'disk.hdd'), bytes(300_000, 1))
  await writeFile(join(root, 'Snapshots', 'deep', 'empty'), '')
  // A mostly sparse file: 1 MiB with data only at the start and in the middle.
  await writeFile(join(root, 'sparse.img'), 'head')
  await truncate(join(root, 'sparse.img'), 1024 * 1024)
  const h = await open(join(root, 'sparse.img'), 'r+')
  await h.write(Buffer.from('middle'), 0, 6, 512 * 1024)
  await h.close()
  await symlink('config.pvs', join(root, 'link-to-config'))
  await symlink('../config.pvs', join(root, 'Snapshots', 'up-link'))
  await chmod(join(root, 'disk.hdd'), 0o444)
  await chmod(join(root, 'config.pvs'), 0o640)
  await chmod(join(root, 'Snapshots', 'deep'), 0o555)
  return root
}

test('pack then unpack gives back the same tree: bytes, modes, symlinks, empty files, holes', async () => {
  await withDir(async dir => {
    const root = await makeBundle(dir)
    const store = new ChunkStore({ logger }, { dir: join(dir, 'store') })
    await store.open()
    const manifest = await packFolder(root, storeSink(store), { chunking: SMALL })
    assert.equal(manifest.root, 'guest.pvm')
    const bytesOut = encodeManifest(manifest)
    const again = decodeManifest(bytesOut, manifestDigest(bytesOut))
    assert.deepEqual(again, manifest)
    const sparse = manifest.entries.find(e => e.path === 'sparse.img')
    assert.ok(sparse?.type === 'file' && sparse.chunks.some(([id]) => id === ZERO_CHUNK), 'zero runs are not stored')

    await mkdir(join(dir, 'out'))
    const out = await unpackBundle(manifest, join(dir, 'out'), { readChunk: async (id, size) => await store.readPlain(id, size) })
    assert.equal(out, join(dir, 'out', 'guest.pvm'))
    for (const file of ['config.pvs', 'disk.hdd', 'sparse.img', 'Snapshots/deep/empty']) {
      assert.ok((await readFile(join(out, file))).equals(await readFile(join(root, file))), file)
      assert.equal((await stat(join(out, file))).mode & 0o7777, (await stat(join(root, file))).mode & 0o7777, `${file} mode`)
    }
    assert.equal((await stat(join(out, 'Snapshots', 'deep'))).mode & 0o7777, 0o555)
    assert.equal(await readlink(join(out, 'link-to-config')), 'config.pvs')
    assert.equal(await readlink(join(out, 'Snapshots', 'up-link')), '../config.pvs')
    const holes = await stat(join(out, 'sparse.img'))
    assert.ok(holes.blocks * 512 < holes.size, `sparse.img keeps its holes (${holes.blocks * 512} bytes allocated of ${holes.size})`)
  })
})

test('packing twice is deterministic, and a second version sends only changed chunks', async () => {
  await withDir(async dir => {
    const root = join(dir, 'img')
    await mkdir(root)
    const disk = bytes(1_000_000, 5)
    await writeFile(join(root, 'disk'), disk)
    const store = new ChunkStore({ logger }, { dir: join(dir, 'store') })
    await store.open()
    const first = storeSink(store)
    const v1 = await packFolder(root, first, { chunking: SMALL })
    const again = storeSink(store)
    const v1b = await packFolder(root, again, { chunking: SMALL })
    assert.equal(again.sent, 0, 'nothing new to send')
    assert.equal(manifestDigest(encodeManifest(v1)), manifestDigest(encodeManifest(v1b)))

    disk.fill(7, 400_000, 410_000)
    await writeFile(join(root, 'disk'), disk)
    const second = storeSink(store)
    const v2 = await packFolder(root, second, { chunking: SMALL })
    const total = Object.keys(v2.blobs).length
    assert.ok(second.sent > 0 && second.sent <= 4, `${second.sent} of ${total} chunks sent for a 10 kB change`)
  })
})

test('a special file refuses to pack, and so does a missing folder', async () => {
  await withDir(async dir => {
    await assert.rejects(packFolder(join(dir, 'nope'), { has: async () => undefined, put: async () => {} }), BundleInvalidError)
    const root = join(dir, 'img')
    await mkdir(root)
    const server = createServer()
    await new Promise<void>(resolve => server.listen(join(root, 'sock'), resolve))
    try {
      await assert.rejects(packFolder(root, { has: async () => undefined, put: async () => {} }), /neither a file, a folder nor a symlink/)
    } finally {
      server.close()
    }
  })
})

test('a failed unpack leaves nothing under the final name', async () => {
  await withDir(async dir => {
    const root = await makeBundle(dir)
    const store = new ChunkStore({ logger }, { dir: join(dir, 'store') })
    await store.open()
    const manifest = await packFolder(root, storeSink(store), { chunking: SMALL })
    await mkdir(join(dir, 'out'))
    let reads = 0
    await assert.rejects(unpackBundle(manifest, join(dir, 'out'), {
      readChunk: async (id, size) => { if (++reads === 3) throw new Error('disk gone'); return await store.readPlain(id, size) }
    }), /disk gone/)
    assert.deepEqual(await readdir(join(dir, 'out')), [])
    await assert.rejects(lstat(join(dir, 'out', 'guest.pvm')))
  })
})

test('a resumable writer reads back what it placed, and after a crash keeps only chunks that still hash right', async () => {
  await withDir(async dir => {
    const root = await makeBundle(dir)
    const store = new ChunkStore({ logger }, { dir: join(dir, 'store') })
    await store.open()
    const manifest = await packFolder(root, storeSink(store), { chunking: SMALL })
    await mkdir(join(dir, 'out'))
    const ids = Object.keys(manifest.blobs)
    const first = await BundleWriter.resumable(manifest, join(dir, 'out'))
    for (const id of ids.slice(0, 3)) await first.place(id, await store.readPlain(id))
    assert.ok((await first.readPlaced(ids[0]))?.equals(await store.readPlain(ids[0])), 'placed chunks are served back')
    assert.equal(await first.readPlaced(ids[4]), undefined)
    await first.suspend()
    // A write the journal recorded but the disk lost: zeroes where chunk 2 was.
    const disk = manifest.entries.find(e => e.type === 'file' && e.chunks.some(([id]) => id === ids[2]))
    assert.ok(disk?.type === 'file')
    let offset = 0
    for (const [id, size] of disk.chunks) { if (id === ids[2]) break; offset += size }
    const staged = join(dir, 'out', `.unpacking-${manifest.root}`, ...disk.path.split('/'))
    const h = await open(staged, 'r+')
    await h.write(Buffer.alloc(16), 0, 16, offset)
    await h.close()

    const again = await BundleWriter.resumable(manifest, join(dir, 'out'))
    assert.ok(again.has(ids[0]) && again.has(ids[1]))
    assert.equal(again.has(ids[2]), false, 'a chunk that no longer hashes right is placed again')
    for (const id of again.missing()) await again.place(id, await store.readPlain(id))
    const out = await again.finish()
    for (const file of ['config.pvs', 'disk.hdd', 'sparse.img']) assert.ok((await readFile(join(out, file))).equals(await readFile(join(root, file))), file)
  })
})
