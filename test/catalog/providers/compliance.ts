/**
 * The suite every storage provider passes, run against a real server (or folder) by each
 * provider's test file: round trips, ranges, listing, deletes, large objects, bad keys.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import type { ObjectInfo, StorageProvider } from '../../../src/catalog/providers/types.ts'
import { ObjectNotFoundError } from '../../../src/catalog/errors.ts'

export function providerCompliance (label: string, provider: () => StorageProvider, options: { largeBytes?: number } = {}): void {
  test(`${label}: a missing object has no size and cannot be read`, async () => {
    const p = provider()
    assert.equal(await p.head('nothing/here'), undefined)
    await assert.rejects(p.get('nothing/here'), ObjectNotFoundError)
    await p.delete('nothing/here')
  })

  test(`${label}: put, head, get and ranged get return the same bytes; put replaces`, async () => {
    const p = provider()
    const data = randomBytes(100_000)
    await p.put('chunks/ab/object', data)
    assert.equal(await p.head('chunks/ab/object'), data.length)
    assert.ok((await p.get('chunks/ab/object')).equals(data))
    assert.ok((await p.getRange('chunks/ab/object', 1000, 5000)).equals(data.subarray(1000, 5000)))
    assert.ok((await p.getRange('chunks/ab/object', 99_000, 100_000)).equals(data.subarray(99_000)))
    await p.put('chunks/ab/object', Buffer.from('short'))
    assert.equal((await p.get('chunks/ab/object')).toString(), 'short')
    await p.put('empty', Buffer.alloc(0))
    assert.equal(await p.head('empty'), 0)
    assert.equal((await p.get('empty')).length, 0)
  })

  test(`${label}: a streamed range (where the provider streams) gives the same bytes as a ranged get`, async () => {
    const p = provider()
    if (p.getRangeStream == null) return
    const data = randomBytes(300_000)
    await p.put('packs/st/object', data)
    const read = async (start: number, end: number): Promise<Buffer> => {
      const pieces: Buffer[] = []
      for await (const piece of p.getRangeStream!('packs/st/object', start, end)) pieces.push(piece)
      return Buffer.concat(pieces)
    }
    assert.ok((await read(0, data.length)).equals(data))
    assert.ok((await read(12_345, 234_567)).equals(data.subarray(12_345, 234_567)))
    assert.equal((await read(5, 5)).length, 0)
    await assert.rejects(async () => { for await (const piece of p.getRangeStream!('nothing/here', 0, 10)) assert.fail(`got ${piece.length} bytes`) }, ObjectNotFoundError)
    // Past the end of the object: an error, never fewer bytes passed off as the range.
    await assert.rejects(read(290_000, 310_000))
  })

  test(`${label}: list gives every key under a prefix with its size, and nothing else`, async () => {
    const p = provider()
    await Promise.all(Array.from({ length: 25 }, async (_, i) => await p.put(`list-test/a/${String(i).padStart(2, '0')}`, Buffer.alloc(i + 1))))
    await p.put('list-test/b/x', Buffer.alloc(3))
    await p.put('list-test-other', Buffer.alloc(3))
    const seen: ObjectInfo[] = []
    for await (const item of p.list('list-test/a/')) seen.push(item)
    assert.equal(seen.length, 25)
    assert.deepEqual(seen.map(s => s.key).sort(), Array.from({ length: 25 }, (_, i) => `list-test/a/${String(i).padStart(2, '0')}`))
    assert.ok(seen.every(s => s.size === Number(s.key.slice(-2)) + 1))
    // When each was written, which garbage collection needs (to keep what a push just wrote).
    assert.ok(seen.every(s => typeof s.modifiedAt === 'number' && Math.abs(s.modifiedAt - Date.now()) < 24 * 3600_000), JSON.stringify(seen[0]))
    const all: string[] = []
    for await (const item of p.list('list-test')) all.push(item.key)
    assert.equal(all.length, 26, 'a prefix is a folder: list-test-other is not under list-test/')
  })

  test(`${label}: delete removes, and is idempotent`, async () => {
    const p = provider()
    await p.put('del/x', Buffer.from('x'))
    await p.delete('del/x')
    await p.delete('del/x')
    assert.equal(await p.head('del/x'), undefined)
  })

  test(`${label}: a large object round-trips (multipart where the provider has it)`, async () => {
    const p = provider()
    const data = randomBytes(options.largeBytes ?? 12 * 1024 * 1024)
    await p.put('large/blob', data)
    assert.equal(await p.head('large/blob'), data.length)
    assert.ok((await p.get('large/blob')).equals(data))
  })

  test(`${label}: keys that could escape their prefix are refused`, async () => {
    const p = provider()
    for (const key of ['../x', '/abs', 'a//b', 'a/./b', '']) await assert.rejects(async () => { await p.put(key, Buffer.from('x')) }, TypeError)
  })
}
