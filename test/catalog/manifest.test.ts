import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DEFAULT_CHUNKING } from '../../src/catalog/chunker.ts'
import { decodeManifest, encodeManifest, validateManifest, MANIFEST_FORMAT, type BundleManifest } from '../../src/catalog/manifest.ts'
import { ManifestInvalidError } from '../../src/catalog/errors.ts'

const A = 'a'.repeat(64)
const B = 'b'.repeat(64)

function good (): BundleManifest {
  return {
    format: MANIFEST_FORMAT,
    root: 'img',
    chunking: DEFAULT_CHUNKING,
    entries: [
      { path: 'sub', type: 'dir', mode: 0o755 },
      { path: 'sub/disk', type: 'file', mode: 0o644, size: 30, chunks: [[A, 10], ['zero', 5], [B, 5], [A, 10]] },
      { path: 'link', type: 'symlink', target: 'sub/disk' },
      { path: 'sub/up', type: 'symlink', target: '../link' }
    ],
    blobs: { [A]: { size: 10, stored: 8 }, [B]: { size: 5, stored: 6 } },
    size: 30,
    storedSize: 14
  }
}

function refused (mutate: (m: any) => void, why: RegExp): void {
  const m = structuredClone(good()) as any
  mutate(m)
  assert.throws(() => validateManifest(m), (err: Error) => err instanceof ManifestInvalidError && why.test(err.message), `expected ${String(why)}`)
}

test('a well-formed manifest passes and round-trips through its digest', () => {
  assert.deepEqual(validateManifest(good()), good())
  const bytes = encodeManifest(good())
  assert.deepEqual(decodeManifest(bytes), good())
  assert.throws(() => decodeManifest(bytes, 'f'.repeat(64)), /does not match its digest/)
  assert.throws(() => decodeManifest(Buffer.from('{nope')), /not JSON/)
})

test('paths that could write outside the bundle are refused', () => {
  refused(m => { m.entries[1].path = '../disk' }, /"\.\." part/)
  refused(m => { m.entries[1].path = '/etc/passwd' }, /relative/)
  refused(m => { m.entries[1].path = 'sub\\disk' }, /relative/)
  refused(m => { m.entries[1].path = 'other/disk' }, /before its folder/)
  refused(m => { m.entries[2].target = '/etc' }, /outside the bundle/)
  refused(m => { m.entries[3].target = '../../x' }, /outside the bundle/)
  refused(m => { m.entries[3].target = 'a/../../x' }, /only leading/)
  refused(m => { m.root = '..' }, /root/)
  refused(m => { m.root = 'a/b' }, /root/)
  // A file inside a folder that is really a symlink would be written through the link.
  refused(m => { m.entries.push({ path: 'link/evil', type: 'file', mode: 0o644, size: 0, chunks: [] }) }, /not a folder/)
  refused(m => { m.entries.push({ ...m.entries[1] }) }, /twice/)
})

test('sizes and chunk references must add up', () => {
  refused(m => { m.entries[1].size = 31 }, /add up/)
  refused(m => { m.size = 29 }, /files add up/)
  refused(m => { m.storedSize = 1 }, /blobs add up/)
  refused(m => { m.entries[1].chunks[0] = ['c'.repeat(64), 10] }, /does not list/)
  refused(m => { m.entries[1].chunks[2] = [B, 6]; m.entries[1].size = 31; m.size = 31 }, /blobs says 5/)
  refused(m => { m.blobs['c'.repeat(64)] = { size: 1, stored: 1 }; m.storedSize = 15 }, /no file uses it/)
  refused(m => { m.blobs.xyz = { size: 1, stored: 1 } }, /not a SHA-256/)
  refused(m => { m.entries[1].mode = 0o10000 }, /mode/)
  refused(m => { m.entries[1].chunks[0] = [A, 10 * 1024 * 1024] }, /malformed chunk ref/)
  refused(m => { m.format = 'other/1' }, /format/)
  refused(m => { m.chunking = { ...m.chunking, avgSize: 1000 } }, /power of two/)
  refused(m => { m.entries[0].type = 'fifo' }, /type/)
})
