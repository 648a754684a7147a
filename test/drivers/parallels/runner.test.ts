import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createProcessRunner } from '../../../src/drivers/parallels/runner.ts'
import type { OutputStream } from '../../../src/drivers/types.ts'

const node = process.execPath
const script = (code: string, ...args: string[]): string[] => [node, '-e', code, ...args]

describe('parallels process runner', () => {
  const run = createProcessRunner({ killGraceMs: 200 })

  it('passes argv straight to the program, without a shell', async () => {
    const result = await run(script('process.stdout.write(JSON.stringify(process.argv.slice(1)))', 'a b', '$HOME', ';echo x', '`id`'), { timeoutMs: 30_000 })
    assert.equal(result.exitCode, 0)
    assert.deepEqual(JSON.parse(result.stdout), ['a b', '$HOME', ';echo x', '`id`'])
    assert.equal(result.timedOut, undefined)
  })

  it('returns the exit code and both streams, and streams output as it comes', async () => {
    const seen: Array<[OutputStream, string]> = []
    const result = await run(script('process.stdout.write("out1\\n"); process.stderr.write("err1\\n"); process.exitCode = 3'), {
      timeoutMs: 30_000,
      onOutput: (stream, chunk) => seen.push([stream, Buffer.from(chunk).toString('utf8')])
    })
    assert.equal(result.exitCode, 3)
    assert.equal(result.stdout, 'out1\n')
    assert.equal(result.stderr, 'err1\n')
    assert.deepEqual(seen.filter(([s]) => s === 'stdout').map(([, t]) => t).join(''), 'out1\n')
    assert.deepEqual(seen.filter(([s]) => s === 'stderr').map(([, t]) => t).join(''), 'err1\n')
  })

  it('kills a child that runs past its timeout and says so', async () => {
    const result = await run(script('process.stdout.write("started\\n"); setInterval(() => {}, 1000)'), { timeoutMs: 300 })
    assert.equal(result.timedOut, true)
    assert.equal(result.exitCode, 128 + 15)
  })

  it('an abort kills the child, with SIGKILL if it ignores SIGTERM, and rejects with the reason', async () => {
    const controller = new AbortController()
    const pending = run(script('process.on("SIGTERM", () => {}); process.stdout.write("ready\\n"); setInterval(() => {}, 1000)'), {
      timeoutMs: 60_000,
      signal: controller.signal,
      onOutput: (_stream, chunk) => { if (Buffer.from(chunk).toString().includes('ready')) controller.abort(new Error('job cancelled')) }
    })
    await assert.rejects(pending, { message: 'job cancelled' })
  })

  it('refuses to start when the signal is already aborted', async () => {
    const controller = new AbortController()
    controller.abort(new Error('too late'))
    await assert.rejects(run(script('1'), { timeoutMs: 1000, signal: controller.signal }), { message: 'too late' })
  })

  it('reports a missing program as ENOENT', async () => {
    await assert.rejects(run(['/nonexistent/corral-test/prlctl', '--version'], { timeoutMs: 1000 }), { code: 'ENOENT' })
  })

  it('keeps at most maxBufferBytes of each stream but streams all of it', async () => {
    const small = createProcessRunner({ maxBufferBytes: 100 })
    let streamed = 0
    const result = await small(script('process.stdout.write("x".repeat(1000))'), { timeoutMs: 30_000, onOutput: (_s, c) => { streamed += c.length } })
    assert.equal(result.stdout.length, 100)
    assert.equal(streamed, 1000)
  })
})
