import assert from 'node:assert/strict'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { setImmediate as nextTick } from 'node:timers/promises'
import {
  createJsonStore, StoreClosedError, StoreCorruptError, StoreKeyError, StoreValueError, StoreVersionError,
  StoreWriteError
} from '../../src/store/index.ts'
import type { Store } from '../../src/store/index.ts'
import { recordingLogger, silentLogger, tempDir } from './helpers.ts'

interface Vm { name: string, cpus: number, tags?: string[] }

let dir: string
let remove: () => Promise<void>
/** Every store a test opens, stopped afterwards so no write outlives its test. */
let opened: Store[]

async function open (logger = silentLogger()): Promise<Store> {
  const store = createJsonStore({ logger }, { dataDir: dir })
  opened.push(store)
  await store.start()
  return store
}

const fileOf = (collection: string): string => join(dir, 'state', `${collection}.json`)

function readRaw (collection: string): { schemaVersion: number, collection: string, records: Record<string, unknown> } {
  return JSON.parse(readFileSync(fileOf(collection), 'utf8'))
}

describe('json store', () => {
  beforeEach(async () => {
    ({ dir, remove } = await tempDir())
    opened = []
  })

  afterEach(async () => {
    for (const store of opened) await store.stop()
    await remove()
  })

  it('keeps puts and deletes across a restart, in the documented file layout', async () => {
    const first = await open()
    await first.put<Vm>('vms', 'b', { name: 'beta', cpus: 2 })
    await first.put<Vm>('vms', 'a', { name: 'alpha', cpus: 4, tags: ['mac'] })
    await first.put<Vm>('vms', 'c', { name: 'gamma', cpus: 1 })
    await first.put<Vm>('vms', 'a', { name: 'alpha', cpus: 8 })
    assert.equal(await first.delete('vms', 'c'), true)
    assert.equal(await first.delete('vms', 'c'), false)
    assert.equal(await first.delete('hosts', 'nope'), false)
    await first.put('hosts', 'h1', { addr: '127.0.0.1' })
    await first.stop()

    const second = await open()
    assert.deepEqual(second.get('vms', 'a'), { name: 'alpha', cpus: 8 })
    assert.equal(second.get('vms', 'c'), undefined)
    assert.equal(second.get('nothing-here', 'x'), undefined)
    // Ordered by id, whatever the insertion order was.
    assert.deepEqual(second.list('vms'), [{ name: 'alpha', cpus: 8 }, { name: 'beta', cpus: 2 }])
    assert.deepEqual(second.list('hosts'), [{ addr: '127.0.0.1' }])
    assert.deepEqual(second.list('nothing-here'), [])

    assert.deepEqual(readRaw('vms'), {
      schemaVersion: 1,
      collection: 'vms',
      records: { b: { name: 'beta', cpus: 2 }, a: { name: 'alpha', cpus: 8 } }
    })
  })

  it('stores values as JSON, so what get returns now is what a restart returns', async () => {
    const value = { when: new Date(0), gone: undefined, list: [1, undefined], nan: Number.NaN }
    const expected = { when: '1970-01-01T00:00:00.000Z', list: [1, null], nan: null }
    const first = await open()
    await first.put('events', 'e1', value)
    assert.deepEqual(first.get('events', 'e1'), expected)
    await first.stop()
    assert.deepEqual((await open()).get('events', 'e1'), expected)
  })

  it('keeps ids that mean something to JavaScript objects as plain keys', async () => {
    const first = await open()
    for (const id of ['__proto__', 'constructor', '../../etc/passwd', '10', '2', 'x'.repeat(200)]) {
      await first.put('odd', id, { id })
    }
    await first.stop()
    const second = await open()
    assert.deepEqual(second.get('odd', '__proto__'), { id: '__proto__' })
    assert.deepEqual(second.get('odd', '../../etc/passwd'), { id: '../../etc/passwd' })
    assert.equal(second.list('odd').length, 6)
    assert.deepEqual(await readdir(join(dir, 'state')), ['odd.json'])
  })

  it('returns copies, so callers cannot change stored state', async () => {
    const store = await open()
    const value: Vm = { name: 'alpha', cpus: 2, tags: ['a'] }
    await store.put('vms', 'a', value)
    value.tags?.push('changed-after-put')

    const got = store.get<Vm>('vms', 'a')
    assert.ok(got)
    got.cpus = 99
    got.tags?.push('changed-after-get')
    const listed = store.list<Vm>('vms')
    listed[0].name = 'changed-after-list'
    listed.pop()

    assert.deepEqual(store.get('vms', 'a'), { name: 'alpha', cpus: 2, tags: ['a'] })
    assert.deepEqual(store.list('vms'), [{ name: 'alpha', cpus: 2, tags: ['a'] }])
  })

  it('commits a burst of concurrent puts in one write, each durable when it resolves', async () => {
    const { logger, entries } = recordingLogger()
    const store = await open(logger)
    const count = 500
    // Each put checks the file itself the moment it resolves: resolved must mean written.
    await Promise.all(Array.from({ length: count }, async (_, i) => {
      await store.put('jobs', `j${i}`, { i })
      assert.deepEqual(readRaw('jobs').records[`j${i}`], { i })
    }))
    const commits = entries.filter(e => e.msg === 'state file committed')
    // Puts issued in the same tick all join the first write.
    assert.deepEqual(commits.map(c => c.changes), [count])
    assert.equal(Object.keys(readRaw('jobs').records).length, count)
  })

  it('coalesces puts that arrive while a write is in flight into the next single write', async () => {
    const { logger, entries } = recordingLogger()
    const store = await open(logger)
    const pending = [store.put('jobs', 'first', { n: 0 })]
    // One put per event-loop turn: each turn is shorter than a write (two fsyncs, eight fs calls).
    for (let n = 1; n <= 50; n++) {
      await nextTick()
      pending.push(store.put('jobs', `later-${n}`, { n }).then(() => {
        assert.deepEqual(readRaw('jobs').records[`later-${n}`], { n })
      }))
    }
    await Promise.all(pending)
    const commits = entries.filter(e => e.msg === 'state file committed')
    assert.equal(commits.reduce((sum, c) => sum + (c.changes as number), 0), 51)
    assert.ok(commits.length < 51, `expected coalesced writes, got ${commits.length} for 51 puts`)
    assert.equal(Object.keys(readRaw('jobs').records).length, 51)
  })

  it('rejects bad collection names and ids', async () => {
    const store = await open()
    for (const collection of ['', 'Vms', '1vms', '-vms', 'vms.json', '../vms', 'a/b', 'v_m', 'a'.repeat(64)]) {
      await assert.rejects(store.put(collection, 'id', 1), StoreKeyError, collection)
      await assert.rejects(store.delete(collection, 'id'), StoreKeyError, collection)
      assert.throws(() => store.get(collection, 'id'), StoreKeyError, collection)
      assert.throws(() => store.list(collection), StoreKeyError, collection)
    }
    for (const id of ['', 'x'.repeat(201), 42 as unknown as string]) {
      await assert.rejects(store.put('vms', id, 1), StoreKeyError)
      await assert.rejects(store.delete('vms', id), StoreKeyError)
      assert.throws(() => store.get('vms', id), StoreKeyError)
    }
    await store.put('a'.repeat(63), 'ok', 1)
    assert.deepEqual(await readdir(join(dir, 'state')), [`${'a'.repeat(63)}.json`])
  })

  it('rejects values JSON cannot hold, and keeps nothing of them', async () => {
    const store = await open()
    const cycle: Record<string, unknown> = {}
    cycle.self = cycle
    for (const value of [undefined, () => 1, Symbol('s'), 1n, cycle]) {
      await assert.rejects(store.put('vms', 'v', value), StoreValueError)
    }
    assert.equal(store.get('vms', 'v'), undefined)
  })

  it('follows the lifecycle: no use before start, stop waits for writes, is safe twice, then refuses writes', async () => {
    const store = createJsonStore({ logger: silentLogger() }, { dataDir: dir })
    assert.throws(() => store.get('vms', 'a'), StoreClosedError)
    await assert.rejects(store.put('vms', 'a', 1), StoreClosedError)
    await store.start()
    await store.start()

    const unawaited = Array.from({ length: 20 }, async (_, i) => { await store.put('vms', `v${i}`, i) })
    await Promise.all([store.stop(), store.stop()])
    // stop resolved, so every write made before it is on disk.
    assert.equal(Object.keys(readRaw('vms').records).length, 20)
    await Promise.all(unawaited)
    await store.stop()

    await assert.rejects(store.put('vms', 'late', 1), StoreClosedError)
    await assert.rejects(store.delete('vms', 'v1'), StoreClosedError)
    await assert.rejects(store.start(), StoreClosedError)
    assert.equal(store.get('vms', 'v1'), 1, 'reads still answer from memory after stop')
  })

  it('creates a missing data dir, however deep', async () => {
    const dataDir = join(dir, 'not', 'yet', 'there')
    const store = createJsonStore({ logger: silentLogger() }, { dataDir })
    opened.push(store)
    await store.start()
    await store.put('vms', 'a', 1)
    assert.deepEqual(await readdir(join(dataDir, 'state')), ['vms.json'])
  })

  it('removes temp files left by a crash and ignores files that are not collections', async () => {
    const state = join(dir, 'state')
    await mkdir(state, { recursive: true })
    const stale = 'vms.json.tmp-4242-0b1c2d3e-1111-2222-3333-444455556666'
    await writeFile(join(state, stale), '{"half a wri')
    await writeFile(join(state, 'vms.json.broken'), 'not json')
    await writeFile(join(state, 'Old-Copy.json'), 'not json either')
    await writeFile(join(state, 'vms.json'), '{"schemaVersion":1,"collection":"vms","records":{"a":1}}')

    const store = await open()
    assert.equal(store.get('vms', 'a'), 1)
    assert.deepEqual((await readdir(state)).sort(), ['Old-Copy.json', 'vms.json', 'vms.json.broken'])
  })

  it('rejects a failed write, keeps the change in memory and writes it with the next put', async () => {
    const store = await open()
    await store.put('vms', 'a', 1)
    // Take the folder away: the atomic write cannot even create its temp file.
    await rm(join(dir, 'state'), { recursive: true })
    await assert.rejects(store.put('vms', 'b', 2), (err: Error) => {
      assert.ok(err instanceof StoreWriteError)
      assert.match(err.message, /vms\.json/)
      return true
    })
    assert.equal(store.get('vms', 'b'), 2)

    await mkdir(join(dir, 'state'))
    // A no-op delete still waits for the file to catch up, so its `false` is durable too.
    assert.equal(await store.delete('vms', 'zzz'), false)
    assert.deepEqual(readRaw('vms').records, { a: 1, b: 2 })
  })
})

describe('json store refuses damaged files and leaves them byte-identical', () => {
  const damaged: Array<[string, string | Uint8Array, typeof StoreCorruptError | typeof StoreVersionError]> = [
    ['truncated JSON', '{"schemaVersion":1,"collection":"vms","records":{"a":{"name":"al', StoreCorruptError],
    ['an empty file', '', StoreCorruptError],
    ['invalid UTF-8', Uint8Array.from([...Buffer.from('{"schemaVersion":1,"collection":"vms","records":{"a":"'), 0xff, 0xfe, ...Buffer.from('"}}')]), StoreCorruptError],
    ['an array', '[1,2]', StoreCorruptError],
    ['no schemaVersion', '{"collection":"vms","records":{}}', StoreCorruptError],
    ['another collection', '{"schemaVersion":1,"collection":"hosts","records":{}}', StoreCorruptError],
    ['records not an object', '{"schemaVersion":1,"collection":"vms","records":[]}', StoreCorruptError],
    ['an empty id', '{"schemaVersion":1,"collection":"vms","records":{"":1}}', StoreCorruptError],
    ['a newer schema version', '{"schemaVersion":2,"collection":"vms","records":{},"extra":true}', StoreVersionError],
    ['schema version 0', '{"schemaVersion":0,"collection":"vms","records":{}}', StoreVersionError]
  ]

  for (const [what, contents, errorClass] of damaged) {
    it(`${what} -> ${errorClass.name}`, async () => {
      const { dir, remove } = await tempDir()
      try {
        const state = join(dir, 'state')
        await mkdir(state, { recursive: true })
        const file = join(state, 'vms.json')
        await writeFile(file, contents)
        await writeFile(join(state, 'good.json'), '{"schemaVersion":1,"collection":"good","records":{}}')
        const before = await readFile(file)

        const store = createJsonStore({ logger: silentLogger() }, { dataDir: dir })
        await assert.rejects(store.start(), (err: Error) => {
          assert.ok(err instanceof errorClass, `${err.name}: ${err.message}`)
          assert.equal(err.name, errorClass.name)
          assert.ok(err.message.includes(file), 'the message names the file')
          assert.match(err.message, /backup/, 'the message says how to recover')
          assert.match(err.message, /not changed|has not been changed/)
          return true
        })
        // Nothing may be written through a store that refused to start.
        await assert.rejects(store.put('vms', 'a', 1), StoreClosedError)
        await assert.rejects(store.put('good', 'a', 1), StoreClosedError)
        await store.stop()
        assert.deepEqual(await readFile(file), before)
        assert.deepEqual((await readdir(state)).sort(), ['good.json', 'vms.json'])
      } finally {
        await remove()
      }
    })
  }

  it('says to move a corrupt file aside, and starts once it is', async () => {
    const { dir, remove } = await tempDir()
    try {
      const state = join(dir, 'state')
      await mkdir(state, { recursive: true })
      await writeFile(join(state, 'vms.json'), '{oops')
      const store = createJsonStore({ logger: silentLogger() }, { dataDir: dir })
      await assert.rejects(store.start(), /move it aside \(e\.g\. rename it to vms\.json\.broken\)/)
      await rm(join(state, 'vms.json'))
      // A failed start may be retried once the operator has fixed things.
      await store.start()
      assert.deepEqual(store.list('vms'), [])
      await store.stop()
    } finally {
      await remove()
    }
  })
})
