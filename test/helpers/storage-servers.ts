/**
 * Real storage servers for tests and benches, started on loopback in child processes and removed
 * afterwards: s3rver (S3), Azurite (Azure Blob) and nginx with WebDAV PUT (Artifactory's generic
 * repository protocol is plain PUT/GET). Each start waits, bounded, for the server to listen.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
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

const azuriteMain = fileURLToPath(new URL('../../node_modules/azurite/dist/src/blob/main.js', import.meta.url))

/** Azurite's well-known development account (public, documented by Microsoft; not a secret). */
export const AZURITE_ACCOUNT = {
  name: 'devstoreaccount1',
  key: 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
}

/** Azurite (Azure Blob) with telemetry off, so it talks to nothing but the test. */
export async function startAzurite (): Promise<RunningServer & { connectionString: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'corral-azurite-'))
  const child = spawn(process.execPath, [azuriteMain, '--blobHost', '127.0.0.1', '--blobPort', '0', '--location', dir, '--silent', '--skipApiVersionCheck', '--loose', '--disableTelemetry'], { stdio: ['ignore', 'pipe', 'pipe'] })
  const m = await waitForLine(child, /listens on (http:\/\/127\.0\.0\.1:\d+)/, 'azurite', 30_000)
  const endpoint = m[1]
  const connectionString = `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT.name};AccountKey=${AZURITE_ACCOUNT.key};BlobEndpoint=${endpoint}/${AZURITE_ACCOUNT.name};`
  return { endpoint, dir, child, stop: stopper(child, dir), connectionString }
}

/** A free loopback port: nginx cannot listen on port 0 and tell us which it got. */
async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

async function waitForPort (port: number, child: ChildProcess, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode != null) throw new Error(`${what} exited with ${child.exitCode} before it listened`)
    const ok = await new Promise<boolean>(resolve => {
      const sock = connect(port, '127.0.0.1', () => { sock.destroy(); resolve(true) })
      sock.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  child.kill('SIGKILL')
  throw new Error(`${what} did not listen on ${port} within ${timeoutMs} ms`)
}

export const WEBDAV_API_KEY = 'corral-test-api-key'

/**
 * nginx (Debian's, with its WebDAV module) as a stand-in for an Artifactory generic repository:
 * PUT/GET/HEAD/DELETE under /artifactory/<repo>/, JSON folder indexes, and requests without the
 * X-JFrog-Art-Api key refused with 401 as Artifactory does.
 */
export async function startWebdav (): Promise<RunningServer & { repoUrl: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'corral-nginx-'))
  const port = await freePort()
  await mkdir(join(dir, 'root', 'artifactory', 'corral-generic'), { recursive: true })
  for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(join(dir, 'tmp', t), { recursive: true })
  const conf = `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      if ($http_x_jfrog_art_api != "${WEBDAV_API_KEY}") { return 401; }
      root ${dir}/root;
      dav_methods PUT DELETE MKCOL;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      autoindex on;
      autoindex_format json;
    }
  }
}
`
  await writeFile(join(dir, 'nginx.conf'), conf)
  const child = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'pipe', 'pipe'] })
  await waitForPort(port, child, 'nginx', 15_000)
  const endpoint = `http://127.0.0.1:${port}`
  return { endpoint, dir, child, stop: stopper(child, dir), repoUrl: `${endpoint}/artifactory/corral-generic` }
}
