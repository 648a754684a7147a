/**
 * Real storage servers for tests and benches, started on loopback in child processes and removed
 * afterwards: s3rver (S3), Azurite (Azure Blob) and nginx with WebDAV PUT (Artifactory's generic
 * repository protocol is plain PUT/GET). Each start waits, bounded, for the server to listen.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface RunningServer {
  /** Base URL, e.g. http://127.0.0.1:43123 */
  endpoint: string
  dir: string
  child: ChildProcess
  stop: () => Promise<void>
}

const s3rverMain = fileURLToPath(new URL('./s3rver-main.ts', import.meta.url))

async function waitForLine (child: ChildProcess, pattern: RegExp, what: string, timeoutMs: number): Promise<RegExpExecArray> {
  let out = ''
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${what} did not start within ${timeoutMs} ms; output:\n${out}`)) }, timeoutMs)
    const onData = (c: Buffer): void => {
      out += c.toString()
      const m = pattern.exec(out)
      if (m != null) { clearTimeout(timer); resolve(m) }
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`${what} exited with ${String(code)} before it listened; output:\n${out}`)) })
  })
}

function stopper (child: ChildProcess, dir: string): () => Promise<void> {
  return async () => {
    if (child.exitCode == null && child.signalCode == null) {
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
    await rm(dir, { recursive: true, force: true })
  }
}

/** s3rver with the given buckets; credentials are S3RVER/S3RVER. */
export async function startS3Server (buckets: string[] = ['corral']): Promise<RunningServer> {
  const dir = await mkdtemp(join(tmpdir(), 'corral-s3rver-'))
  const child = spawn(process.execPath, [s3rverMain, dir, ...buckets], { stdio: ['ignore', 'pipe', 'pipe'] })
  const m = await waitForLine(child, /\{"port":(\d+)\}/, 's3rver', 30_000)
  return { endpoint: `http://127.0.0.1:${m[1]}`, dir, child, stop: stopper(child, dir) }
}

export const S3_TEST_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }
