import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const corralBin = fileURLToPath(new URL('../../bin/corral.js', import.meta.url))
export const ADMIN_PASSWORD = 'e2e-admin-password'

export interface NodeProcess {
  url: string
  dataDir: string
  child: ChildProcess
  /** Everything the node wrote to stderr (its log), for assertions and for failure reports. */
  log: () => string
  stop: (signal?: NodeJS.Signals) => Promise<void>
  /** Removes the data folder too. */
  destroy: () => Promise<void>
}

/**
 * Starts `corral node` as a real child process on a free loopback port and waits (bounded) for its
 * ready line. The env passed here is the only configuration it gets beyond the embedded defaults.
 */
export async function startNodeProcess (env: Record<string, string> = {}, options: { dataDir?: string, readyTimeoutMs?: number } = {}): Promise<NodeProcess> {
  const dataDir = options.dataDir ?? await mkdtemp(join(tmpdir(), 'corral-e2e-'))
  // bin/corral.js gives `corral node` its Node flags itself, so test nodes run as installed ones do.
  const child = spawn(process.execPath, [corralBin, 'node'], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? tmpdir(),
      CORRAL_DATA_DIR: dataDir,
      CORRAL_API_ADDR: '127.0.0.1:0',
      CORRAL_DRIVER: 'sim',
      CORRAL_P2P_ADDR: '/ip4/127.0.0.1/tcp/0',
      CORRAL_MDNS: 'false',
      CORRAL_CLUSTER_COLOCATION_WEIGHT: '0',
      CORRAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
      CORRAL_LOG_FORMAT: 'json',
      ...env
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stderr?.on('data', (c: Buffer) => { stderr += c.toString() })
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`corral node did not become ready within ${options.readyTimeoutMs ?? 30_000} ms; stderr:\n${stderr}`)) }, options.readyTimeoutMs ?? 30_000)
    child.stdout?.on('data', (c: Buffer) => {
      stdout += c.toString()
      const match = /corral node ready at (http:\/\/\S+)/.exec(stdout)
      if (match != null) { clearTimeout(timer); resolve(match[1]) }
    })
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`corral node exited with ${code} before it was ready; stderr:\n${stderr}`)) })
  })
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    if (child.exitCode != null || child.signalCode != null) return
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill(signal)
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }
  return {
    url, dataDir, child, log: () => stderr, stop,
    destroy: async () => { await stop(); await rm(dataDir, { recursive: true, force: true }) }
  }
}

/** fetch with a bound, JSON in and out, for tests. */
export async function call (url: string, method: string, path: string, options: { token?: string, body?: unknown } = {}): Promise<{ status: number, body: any, type: string }> {
  const res = await fetch(url + path, {
    method,
    headers: {
      ...(options.token != null ? { authorization: `Bearer ${options.token}` } : {}),
      ...(options.body !== undefined ? { 'content-type': 'application/json' } : {})
    },
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    signal: AbortSignal.timeout(60_000)
  })
  const text = await res.text()
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text), type: res.headers.get('content-type') ?? '' }
}

export interface CliRun { code: number, stdout: string, stderr: string }

/**
 * Runs the real `corral` CLI as a user would, with a bounded wait (60 s). `env` is the whole
 * environment beyond PATH (HOME, CORRAL_URL, CORRAL_CONFIG_DIR, a token...).
 */
export async function runCli (args: string[], env: Record<string, string>): Promise<CliRun> {
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [corralBin, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout?.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr?.on('data', (c: Buffer) => { stderr += c.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`corral ${args.join(' ')} did not finish in 60 s`)) }, 60_000)
    child.on('exit', code => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }) })
  })
}
