import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { decodeJoinToken, encodeJoinToken, generateClusterKey, normalizeClusterKey } from '../../src/node/index.ts'
import { loadOrCreatePeerKey, peerKeyPath } from '../../src/node/peer-key.ts'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'

test('a generated cluster key is in pnet text form and unique', () => {
  const key = generateClusterKey()
  assert.match(key, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}$/)
  assert.notEqual(key, generateClusterKey())
  assert.equal(normalizeClusterKey(`  ${key.replaceAll('\n', '\r\n').toUpperCase().replace('/KEY/SWARM/PSK/1.0.0/', '/key/swarm/psk/1.0.0/').replace('/BASE16/', '/base16/')}\n`), key)
})

test('bad cluster keys are refused with a hint', () => {
  for (const bad of ['', 'hello', '/key/swarm/psk/1.0.0/\n/base16/\nabc', '/key/swarm/psk/1.0.0/\n/base64/\n' + 'a'.repeat(64)]) {
    assert.throws(() => normalizeClusterKey(bad), { name: 'ClusterKeyInvalidError', message: /corral cluster init/ })
  }
})

test('a join token carries the key and bootstrap addresses', () => {
  const clusterKey = generateClusterKey()
  const bootstrap = ['/ip4/10.0.0.5/tcp/7946/p2p/12D3KooWGuvCnfcR6LyGr35ascZJaPd526gSa21uhLNzVXsNapGA', '/dns4/corral-1.lan/tcp/7946']
  const token = encodeJoinToken({ clusterKey, bootstrap })
  assert.match(token, /^[A-Za-z0-9_-]+$/)
  assert.deepEqual(decodeJoinToken(` ${token}\n`), { clusterKey, bootstrap })
  const inside = JSON.parse(Buffer.from(token, 'base64url').toString()) as { key: string }
  assert.equal(inside.key.length, 64)
})

test('broken join tokens are refused with JoinTokenInvalidError', () => {
  const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
  for (const bad of ['', 'not base64!', b64('x'), b64({ key: 'abc', bootstrap: [] }), b64({ key: 'a'.repeat(64), bootstrap: 'x' }),
    b64({ key: 'a'.repeat(64), bootstrap: ['not-a-multiaddr'] }), Buffer.from('{{{').toString('base64url')]) {
    assert.throws(() => decodeJoinToken(bad), { name: 'JoinTokenInvalidError' })
  }
  assert.throws(() => encodeJoinToken({ clusterKey: generateClusterKey(), bootstrap: ['nope'] }), { name: 'JoinTokenInvalidError' })
})

test('the peer identity key is created once with mode 0600 and reused', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'corral-peer-key-'))
  try {
    const log = pino({ level: 'silent' })
    const first = await loadOrCreatePeerKey(dir, log)
    const mode = (await stat(peerKeyPath(dir))).mode & 0o777
    assert.equal(mode, 0o600)
    const again = await loadOrCreatePeerKey(dir, log)
    assert.equal(peerIdFromPrivateKey(again).toString(), peerIdFromPrivateKey(first).toString())
    assert.ok((await readFile(peerKeyPath(dir))).byteLength > 32)
    await writeFile(peerKeyPath(dir), 'garbage')
    await assert.rejects(loadOrCreatePeerKey(dir, log), { name: 'PeerKeyInvalidError' })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
