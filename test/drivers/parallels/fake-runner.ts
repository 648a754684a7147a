import { readFileSync } from 'node:fs'
import type { OutputStream } from '../../../src/drivers/types.ts'
import type { Runner, RunOptions, RunResult } from '../../../src/drivers/parallels/runner.ts'

export const fixture = (name: string): string =>
  readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8')

export interface ErrorFixture {
  argv: string[]
  exitCode: number
  stdout: string
  stderr: string
  expect: string
  provenance: string
}

export const errorFixture = (name: string): ErrorFixture => JSON.parse(fixture(`errors/${name}.json`)) as ErrorFixture

export interface Reply {
  exitCode?: number
  stdout?: string
  stderr?: string
  timedOut?: boolean
  /** Streamed through onOutput before the reply resolves (and added to stdout/stderr). */
  chunks?: Array<[OutputStream, string]>
  /** Never finish on its own: settle only when the caller's signal aborts. */
  hang?: boolean
}

export const ok = (stdout = ''): Reply => ({ exitCode: 0, stdout })
export const fromFixture = (file: string): Reply => ok(fixture(file))
export const failure = (name: string): Reply => {
  const f = errorFixture(name)
  return { exitCode: f.exitCode, stdout: f.stdout, stderr: f.stderr }
}

export interface Call {
  argv: string[]
  options: RunOptions
}

/**
 * Replays recorded output for exact argv and records every call. An argv nobody taught it is a test
 * bug, so it throws instead of inventing an answer that could make a failure path look green.
 * Several replies for one argv are used in order; the last one repeats.
 */
export class FakeRunner {
  readonly calls: Call[] = []
  private readonly rules = new Map<string, Reply[]>()

  on (argv: string[], ...replies: Reply[]): this {
    this.rules.set(JSON.stringify(argv), replies)
    return this
  }

  argvs (): string[][] {
    return this.calls.map(c => c.argv)
  }

  readonly run: Runner = async (argv, options) => {
    this.calls.push({ argv, options })
    const replies = this.rules.get(JSON.stringify(argv))
    if (replies == null || replies.length === 0) throw new Error(`FakeRunner was not taught ${JSON.stringify(argv)}`)
    const reply = replies.length > 1 ? replies.shift() as Reply : replies[0]
    let stdout = reply.stdout ?? ''
    let stderr = reply.stderr ?? ''
    for (const [stream, text] of reply.chunks ?? []) {
      options.onOutput?.(stream, Buffer.from(text))
      if (stream === 'stdout') stdout += text
      else stderr += text
    }
    if (reply.hang === true) {
      await new Promise<never>((_resolve, reject) => {
        const signal = options.signal
        if (signal == null) reject(new Error('FakeRunner: a hanging reply needs a signal to end it'))
        else if (signal.aborted) reject(signal.reason)
        else signal.addEventListener('abort', () => reject(signal.reason), { once: true })
      })
    }
    const result: RunResult = { exitCode: reply.exitCode ?? 0, stdout, stderr }
    if (reply.timedOut === true) result.timedOut = true
    return result
  }
}
