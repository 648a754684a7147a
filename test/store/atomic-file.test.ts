import assert from 'node:assert/strict'
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, it } from 'node:test'
import { isTempFileName, removeTempFiles, writeFileAtomic } from '../../src/store/atomic-file.ts'
import { tempDir } from './helpers.ts'

describe('writeFileAtomic', () => {
  let dir: string
  let remove: () => Promise<void>
  beforeEach(async () => { ({ dir, remove } = await tempDir()) })
  afterEach(async () => { await remove() })

  it('creates and then replaces a file, leaving no temp file behind', async () => {
    const file = join(dir, 'x.json')
    await writeFileAtomic(file, 'one')
    assert.equal(await readFile(file, 'utf8'), 'one')
    await writeFileAtomic(file, new TextEncoder().encode('two, longer than one'))
    assert.equal(await readFile(file, 'utf8'), 'two, longer than one')
    await writeFileAtomic(file, '3')
    assert.equal(await readFile(file, 'utf8'), '3')
    assert.deepEqual(await readdir(dir), ['x.json'])
  })

  it('makes the file readable by its owner only, since state may hold secrets', { skip: process.platform === 'win32' }, async () => {
    const file = join(dir, 'x.json')
    await writeFileAtomic(file, '{}')
    assert.equal((await stat(file)).mode & 0o777, 0o600)
  })

  it('fails without touching the target or leaving a temp file when the rename cannot happen', async () => {
    // A folder where the file should be: the temp file is written, the rename fails.
    const target = join(dir, 'taken')
    await writeFile(`${target}-sibling`, 'x')
    await mkdir(target)
    await assert.rejects(writeFileAtomic(target, 'data'), { code: 'EISDIR' })
    assert.deepEqual((await readdir(dir)).sort(), ['taken', 'taken-sibling'])
  })

  it('fails when the folder is missing', async () => {
    await assert.rejects(writeFileAtomic(join(dir, 'missing', 'x.json'), 'x'), { code: 'ENOENT' })
  })
})

describe('removeTempFiles', () => {
  it('removes only names writeFileAtomic could have made', async () => {
    const { dir, remove } = await tempDir()
    try {
      const temps = ['a.json.tmp-1-0b1c2d3e-1111-2222-3333-444455556666', 'b.json.tmp-99999-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee']
      const kept = ['a.json', 'a.json.broken', 'a.json.tmp-backup', 'notes.tmp-1-2']
      for (const name of [...temps, ...kept]) await writeFile(join(dir, name), 'x')
      assert.ok(temps.every(isTempFileName))
      assert.deepEqual((await removeTempFiles(dir)).sort(), temps.sort())
      assert.deepEqual((await readdir(dir)).sort(), kept.sort())
    } finally {
      await remove()
    }
  })
})
