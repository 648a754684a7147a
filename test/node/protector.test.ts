import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import fc from 'fast-check'
import { XSalsa20Stream } from '../../src/node/protector.ts'

// The reference: the xsalsa20 module @libp2p/pnet uses. Fine for small inputs (its WASM memory
// problems start past ~600 KB in one process, which this test stays far below).
// It comes with @libp2p/pnet; should that package go, the comparison is skipped.
type Reference = (nonce: Uint8Array, key: Uint8Array) => { update: (input: Uint8Array) => Uint8Array, finalize: () => void }
let reference: Reference | undefined
try {
  reference = createRequire(import.meta.url)('xsalsa20') as Reference
} catch {}

test('the streaming cipher matches @libp2p/pnet\'s xsalsa20 for any split of the input', { skip: reference === undefined && 'xsalsa20 is not installed' }, () => {
  const xsalsa20 = reference!
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 12 }), sizes => {
    const key = randomBytes(32)
    const nonce = randomBytes(24)
    const ours = new XSalsa20Stream(key, nonce)
    const theirs = xsalsa20(nonce, key)
    for (const size of sizes) {
      const input = randomBytes(size)
      assert.deepEqual(Buffer.from(ours.update(input)), Buffer.from(theirs.update(input)))
    }
    theirs.finalize()
  }), { numRuns: 100 })
})

test('decrypting with the same key and nonce returns the input; another key does not', () => {
  const key = randomBytes(32)
  const nonce = randomBytes(24)
  const plain = randomBytes(5000)
  const cipher = new XSalsa20Stream(key, nonce).update(plain)
  const decoder = new XSalsa20Stream(key, nonce)
  const back = Buffer.concat([decoder.update(cipher.subarray(0, 17)), decoder.update(cipher.subarray(17, 4000)), decoder.update(cipher.subarray(4000))])
  assert.deepEqual(back, plain)
  assert.notDeepEqual(Buffer.from(new XSalsa20Stream(randomBytes(32), nonce).update(cipher)), plain)
})

test('a large message (2 MiB) goes through in one piece', () => {
  const key = randomBytes(32)
  const nonce = randomBytes(24)
  const plain = randomBytes(2 * 1024 * 1024)
  const cipher = new XSalsa20Stream(key, nonce).update(plain)
  assert.deepEqual(Buffer.from(new XSalsa20Stream(key, nonce).update(cipher)), plain)
})
