import { test } from 'node:test'
import { randomBytes } from 'node:crypto'
import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { ChunkStore } from '../../src/catalog/chunk-store.ts'
import { decodeBlob, encodeBlob, sha256Hex, CODEC_RAW, CODEC_ZSTD } from '../../src/catalog/blob.ts'
import { ChunkCorruptError, ChunkNotFoundError } from '../../src/catalog/errors.ts'

const logger = pino({ level: 'silent' })

async function withStore (fn: (store: ChunkStore, dir: string, clock: { now: number }) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'corral-store-'))
  const clock = { now: 1_000_000 }
  try {
    const store = new ChunkStore({ logger, clock: () => clock.now }, { dir })
    await store.open()
    await fn(store, dir, clock)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

test('blobs compress what compresses, keep the rest raw, and decode only to their id', async () => {
  const text = Buffer.from('corral '.repeat(10_000))
  const packed = await encodeBlob(text)
  assert.equal(packed[0], CODEC_ZSTD)
  assert.ok(packed.length < text.length / 10)
  assert.ok((await decodeBlob(sha256Hex(text), packed, text.length)).equals(text))
  const noise = randomBytes(5000)
  const raw = await encodeBlob(noise)
  assert.equal(raw[0], CODEC_RAW)
  await assert.rejects(decodeBlob(sha256Hex(text), raw), ChunkCorruptError)
  await assert.rejects(decodeBlob(sha256Hex(text), packed, text.length - 1), /bytes, expected/)
  const flipped = Buffer.from(packed)
  flipped[flipped.length - 3] ^= 0xff
  await assert.rejects(decodeBlob(sha256Hex(text), flipped), ChunkCorruptError)
  await assert.rejects(decodeBlob(sha256Hex(text), Buffer.from([9, 1, 2])), /unknown codec/)
})

test('put refuses bytes that are not the id, and keeps nothing of them', async () => {
  await withStore(async (store, dir) => {
    const data = Buffer.from('hello chunk')
    const id = sha256Hex(data)
    await assert.rejects(store.put(id, await encodeBlob(Buffer.from('other'))), ChunkCorruptError)
    assert.equal(store.has(id), false)
    await store.put(id, await encodeBlob(data))
    assert.ok((await store.readPlain(id)).equals(data))
    assert.deepEqual(await readdir(join(dir, 'tmp')), [])
  })
})

test('a chunk corrupted on disk is detected, removed and reported', async () => {
  await withStore(async (store, dir) => {
    const data = Buffer.alloc(10_000, 3)
    const id = sha256Hex(data)
    await store.put(id, await encodeBlob(data))
    await writeFile(join(dir, id.slice(0, 2), id), Buffer.from([1, 0, 0, 0]))
    await assert.rejects(store.readPlain(id), ChunkCorruptError)
    assert.equal(store.has(id), false)
    await assert.rejects(store.readPlain(id), ChunkNotFoundError)
  })
})

test('reopening indexes what is there; least recently used comes first; sizes add up', async () => {
  await withStore(async (store, dir, clock) => {
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const data = Buffer.alloc(1000 + i, i + 1)
      ids.push(sha256Hex(data))
      clock.now += 1000
      await store.put(ids[i], await encodeBlob(data))
    }
    clock.now += 1000
    await store.readStored(ids[0])
    assert.deepEqual(store.leastRecentlyUsed().map(e => e.id), [ids[1], ids[2], ids[0]])
    const total = store.totalBytes()
    await new Promise(resolve => setTimeout(resolve, 50)) // touch() writes the mtime in the background
    const again = new ChunkStore({ logger }, { dir })
    await again.open()
    assert.equal(again.count(), 3)
    assert.equal(again.totalBytes(), total)
    assert.deepEqual(again.leastRecentlyUsed().map(e => e.id), [ids[1], ids[2], ids[0]])
    await again.remove(ids[1])
    assert.equal(again.count(), 2)
  })
})
