import { test } from 'node:test'
import assert from 'node:assert/strict'
import type { IncomingMessage } from 'node:http'
import { createServer, connect, type Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import { httpTargetOf } from '../../src/proxy/targets.ts'
import { signGrant, verifyGrant } from '../../src/proxy/grants.ts'
import { grantKeyFromClusterKey, tunnelKeyFromClusterKey } from '../../src/proxy/keys.ts'
import { readJsonLine, jsonLine } from '../../src/proxy/framing.ts'
import { splice } from '../../src/proxy/splice.ts'
import { allowListOf } from '../../src/proxy/route-table.ts'
import { generateClusterKey } from '../../src/node/index.ts'

const req = (url: string, host = 'node.example:8080'): IncomingMessage => ({ url, headers: { host } }) as unknown as IncomingMessage

test('targets: path routes, host-name routes, and everything else left alone', () => {
  assert.deepEqual(httpTargetOf(req('/proxy/vms/vm-abc123/8080/a/b?c=d'), ''), { kind: 'path', vm: 'vm-abc123', port: 8080, prefix: '/proxy/vms/vm-abc123/8080', upstreamPath: '/a/b?c=d' })
  assert.equal(httpTargetOf(req('/proxy/vms/vm-abc123/8080'), '')?.upstreamPath, '')
  assert.equal(httpTargetOf(req('/proxy/vms/vm-abc123/8080?x=1'), '')?.upstreamPath, '')
  for (const bad of ['/proxy/vms/vm-abc123/0/', '/proxy/vms/vm-abc123/65536/', '/proxy/vms/VM-ABC/80/', '/proxy/vms/../80/', '/proxy/vms/vm-abc/http/', '/proxy/vms/', '/api/v1/vms']) {
    assert.equal(httpTargetOf(req(bad), ''), undefined, bad)
  }
  assert.deepEqual(httpTargetOf(req('/x?y', 'vm-abc123-3000.vms.example.com:8080'), 'vms.example.com'), { kind: 'host', vm: 'vm-abc123', port: 3000, prefix: '', upstreamPath: '/x?y' })
  assert.equal(httpTargetOf(req('/', 'VM-ABC123-3000.VMS.example.com.'), 'vms.example.com')?.port, 3000, 'host names are case-insensitive, a final dot is fine')
  assert.equal(httpTargetOf(req('/', 'vm-abc123-3000.vms.example.com'), ''), undefined, 'no domain configured: no host routes')
  assert.equal(httpTargetOf(req('/', 'a.vm-abc123-3000.vms.example.com'), 'vms.example.com'), undefined)
  assert.equal(httpTargetOf(req('/', 'vms.example.com'), 'vms.example.com'), undefined)
})

test('grants: genuine ones verify for their VM port until they expire; anything altered does not', () => {
  const key = grantKeyFromClusterKey(generateClusterKey())
  const now = 1_800_000_000_000
  const grant = signGrant(key, { vm: 'vm-abc', port: 80 }, 'pipeline-7', now + 60_000)
  assert.deepEqual(verifyGrant(key, grant, { vm: 'vm-abc', port: 80 }, now), { vm: 'vm-abc', port: 80, subject: 'pipeline-7', expiresAt: now + 60_000 })
  assert.throws(() => verifyGrant(key, grant, { vm: 'vm-abc', port: 81 }, now), /not port 81/)
  assert.throws(() => verifyGrant(key, grant, { vm: 'vm-abc', port: 80 }, now + 61_000), /expired/)
  assert.throws(() => verifyGrant(grantKeyFromClusterKey(generateClusterKey()), grant, { vm: 'vm-abc', port: 80 }, now), /not genuine/)
  const parts = grant.split('.')
  const longer = [parts[0], parts[1], String(Number(parts[2]) + 3600), parts[3], parts[4]].join('.')
  assert.throws(() => verifyGrant(key, longer, { vm: 'vm-abc', port: 80 }, now), /not genuine/, 'the expiry is signed')
  const other = [parts[0], parts[1], parts[2], Buffer.from('admin').toString('base64url'), parts[4]].join('.')
  assert.throws(() => verifyGrant(key, other, { vm: 'vm-abc', port: 80 }, now), /not genuine/, 'so is the subject')
  assert.throws(() => verifyGrant(key, 'garbage', { vm: 'vm-abc', port: 80 }, now), /malformed/)
  assert.notDeepEqual(grantKeyFromClusterKey('k'), tunnelKeyFromClusterKey('k'), 'one key per purpose')
})

test('framing: the header line is read without taking the bytes behind it; oversized or unfinished headers fail', async () => {
  const stream = new PassThrough()
  stream.write(Buffer.concat([jsonLine({ ok: true }), Buffer.from('raw bytes after')]))
  assert.deepEqual(await readJsonLine(stream, 4096, 1000), { ok: true })
  assert.equal((stream.read() as Buffer).toString(), 'raw bytes after')
  const long = new PassThrough()
  long.write('x'.repeat(5000))
  await assert.rejects(readJsonLine(long, 4096, 1000), /longer than 4096/)
  const ended = new PassThrough()
  ended.end('{"ok":')
  await assert.rejects(readJsonLine(ended, 4096, 1000), /closed before its header/)
  await assert.rejects(readJsonLine(new PassThrough(), 4096, 50), /within 50 ms/)
})

test('splice: a half-close passes on, the answer still flows back, and the counts are right', async () => {
  // A server that reads everything, then answers, then closes: needs the client's end to travel alone.
  const server = createServer({ allowHalfOpen: true }, (socket: Socket) => {
    let got = 0
    socket.on('data', (d: Buffer) => { got += d.length })
    socket.on('end', () => socket.end(`read ${got}`))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', () => resolve()))
  const port = (server.address() as { port: number }).port
  const front = createServer({ allowHalfOpen: true }, (client: Socket) => {
    const upstream = connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    splice(client, upstream, result => { counts.push(result) })
  })
  const counts: Array<{ aToB: number, bToA: number }> = []
  await new Promise<void>(resolve => front.listen(0, '127.0.0.1', () => resolve()))
  const client = connect({ port: (front.address() as { port: number }).port, host: '127.0.0.1', allowHalfOpen: true })
  client.end(Buffer.alloc(100_000))
  const answer = await new Promise<string>(resolve => { let text = ''; client.on('data', (d: Buffer) => { text += d.toString() }); client.on('end', () => resolve(text)) })
  assert.equal(answer, 'read 100000')
  for (let i = 0; i < 100 && counts.length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
  assert.deepEqual(counts, [{ aToB: 100_000, bToA: 'read 100000'.length }])
  server.close()
  front.close()
})

test('a private TCP route lets loopback in, plus its allowFrom ranges', () => {
  const list = allowListOf({ id: 'rt', vm: 'vm-a', port: 22, protocol: 'tcp', public: false, allowFrom: ['10.1.0.0/16', '2001:db8::/32'], createdBy: 'x', createdAt: '' })
  assert.ok(list.check('127.0.0.1', 'ipv4'))
  assert.ok(list.check('::1', 'ipv6'))
  assert.ok(list.check('10.1.200.3', 'ipv4'))
  assert.ok(list.check('2001:db8::5', 'ipv6'))
  assert.ok(!list.check('10.2.0.1', 'ipv4'))
  assert.ok(!list.check('192.168.1.1', 'ipv4'))
})
