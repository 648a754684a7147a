import { spawn } from 'node:child_process'
import { constants as osConstants } from 'node:os'
import type { OutputStream } from '../types.ts'
import { KILL_GRACE_MS, MAX_EXEC_OUTPUT_BYTES } from './constants.ts'

export interface RunOptions {
  /** The child is sent SIGTERM when this runs out, SIGKILL a grace period later; the result says timedOut. */
  timeoutMs: number
  /** Aborting kills the child the same way and rejects with the signal's reason. */
  signal?: AbortSignal
  /** Output as it arrives (exec streams it to websockets). */
  onOutput?: (stream: OutputStream, chunk: Uint8Array) => void
}

export interface RunResult {
  /** The process's exit code; 128 + signal number if a signal ended it. */
  exitCode: number
  stdout: string
  stderr: string
  /** True when the timeout, not the process, ended the run. */
  timedOut?: boolean
}

/**
 * Runs one command given as an argv array (argv[0] is the program). The driver talks to prlctl only
 * through this, so tests can replay recorded output and check the argv without Parallels installed.
 */
export type Runner = (argv: string[], options: RunOptions) => Promise<RunResult>

export interface ProcessRunnerInit {
  /** Per stream; output beyond it still reaches onOutput but is not kept. */
  maxBufferBytes?: number
  killGraceMs?: number
}

/**
 * The real runner: node:child_process spawn with an argv array and no shell, so nothing in a VM name
 * or command is ever interpreted on the host. stdin is /dev/null: prlctl never waits for input.
 */
export function createProcessRunner (init: ProcessRunnerInit = {}): Runner {
  const maxBuffer = init.maxBufferBytes ?? MAX_EXEC_OUTPUT_BYTES
  const killGraceMs = init.killGraceMs ?? KILL_GRACE_MS

  return async (argv, options) => {
    if (argv.length === 0) throw new TypeError('runner: argv is empty')
    options.signal?.throwIfAborted()
    const [program, ...args] = argv

    return await new Promise<RunResult>((resolve, reject) => {
      const child = spawn(program, args, { shell: false, stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true })
      const kept: Record<OutputStream, { chunks: Buffer[], bytes: number }> = {
        stdout: { chunks: [], bytes: 0 },
        stderr: { chunks: [], bytes: 0 }
      }
      let timedOut = false
      let aborted = false
      let killTimer: NodeJS.Timeout | undefined

      const collect = (stream: OutputStream) => (chunk: Buffer) => {
        options.onOutput?.(stream, chunk)
        const buffer = kept[stream]
        if (buffer.bytes >= maxBuffer) return
        const part = chunk.subarray(0, maxBuffer - buffer.bytes)
        buffer.chunks.push(part)
        buffer.bytes += part.length
      }
      child.stdout.on('data', collect('stdout'))
      child.stderr.on('data', collect('stderr'))

      const terminate = (): void => {
        if (child.exitCode != null || child.signalCode != null) return
        child.kill('SIGTERM')
        killTimer ??= setTimeout(() => child.kill('SIGKILL'), killGraceMs)
      }
      const timeout = setTimeout(() => { timedOut = true; terminate() }, Math.max(0, options.timeoutMs))
      const onAbort = (): void => { aborted = true; terminate() }
      options.signal?.addEventListener('abort', onAbort, { once: true })

      const finish = (): void => {
        clearTimeout(timeout)
        if (killTimer != null) clearTimeout(killTimer)
        options.signal?.removeEventListener('abort', onAbort)
      }

      child.once('error', (err) => {
        finish()
        reject(err)
      })
      child.once('close', (code, signal) => {
        finish()
        if (aborted) {
          reject(options.signal?.reason ?? new Error('aborted'))
          return
        }
        const exitCode = code ?? 128 + (signal != null ? osConstants.signals[signal] : 0)
        resolve({
          exitCode,
          stdout: Buffer.concat(kept.stdout.chunks).toString('utf8'),
          stderr: Buffer.concat(kept.stderr.chunks).toString('utf8'),
          ...(timedOut ? { timedOut } : {})
        })
      })
    })
  }
}
