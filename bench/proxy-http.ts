/**
 * HTTP through corral's proxy beside the same upstream reached directly and through nginx, in one
 * run on loopback: requests per second (32 keep-alive connections) and median / p99 latency of one
 * connection (wrk). Upstream: nginx answering a small page, one worker. nginx as reverse proxy:
 * one worker, keep-alive to the upstream. corral: bench/proxy-harness.ts processes, the API server
 * with the proxy as a node mounts it; "same node" runs the VM, "other node" reaches it through a
 * direct tunnel. Access logs are off on both (nginx access_log off, corral at level warn), as the
 * main comparison; two more rows have them on, written to a file, on both. "Node's HTTP path" is
 * the proxy with its own HTTP/1.1 path turned off (proxy.fastHttp false: every request through
 * Node's HTTP server and client, as before it existed). Also the CPU the proxying processes spent
 * per request (robust to a busy machine). Rounds alternate the targets; medians are printed,
 * and "vs nginx" is the median of each round's ratio. Asserts nothing.
 *
 *   node bench/proxy-http.ts [rounds=3] [seconds=5]
 *
 * Needs nginx and wrk (Debian: apt-get install nginx-light wrk; the bench installs them as root).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { openSync, readFileSync } from 'node:fs'
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir, cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateClusterKey } from '../src/node/index.ts'

const rounds = Number(process.argv[2] ?? 3)
const seconds = Number(process.argv[3] ?? 5)
const harness = fileURLToPath(new URL('./proxy-harness.ts', import.meta.url))
const VM = 'vm-be0c0000be0c'
const children: ChildProcess[] = []
let work = ''

function need (tool: string, pkg: string): void {
  try {
    execFileSync('which', [tool], { stdio: 'ignore' })
  } catch {
    if (process.getuid?.() !== 0) throw new Error(`${tool} is missing: apt-get install ${pkg}`)
    execFileSync('apt-get', ['install', '-y', '-q', pkg], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  }
}

async function freePort (): Promise<number> {
  return await new Promise(resolve => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => { const port = (s.address() as { port: number }).port; s.close(() => resolve(port)) })
  })
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** The worker of an nginx master started with worker_processes 1. */
function workerOf (master: number): number {
  return Number(readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(' ')[0])
}

async function nginx (name: string, body: string, accessLog = false): Promise<number> {
  const dir = join(work, name)
  await mkdir(dir, { recursive: true })
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(t => `${t}_temp_path ${dir}/${t};`).join(' ')
  const log = accessLog ? `access_log ${dir}/access.log;` : 'access_log off;'
  await writeFile(join(dir, 'nginx.conf'), `worker_processes 1;\ndaemon off;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 4096; }\nhttp {\n  ${log}\n  ${temp}\n  keepalive_requests 1000000;\n${body}\n}\n`)
  const child = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', dir], { stdio: 'ignore' })
  children.push(child)
  await new Promise(resolve => setTimeout(resolve, 300))
  return workerOf(child.pid as number)
}

/** A node process; `logTo`: its stderr (where a node logs) goes to this file. */
async function startHarness (env: Record<string, string>, logTo?: string): Promise<{ api: string, tcp: string, peerId: string, multiaddrs: string[], token: string, pid: number }> {
  const child = spawn(process.execPath, [harness], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', logTo != null ? openSync(logTo, 'a') : 'inherit'] })
  children.push(child)
  return await new Promise((resolve, reject) => {
    let out = ''
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString()
      const line = out.split('\n').find(l => l.startsWith('{'))
      if (line != null) resolve({ ...JSON.parse(line), pid: child.pid })
    })
    child.once('exit', code => reject(new Error(`harness exited with ${code}`)))
  })
}

interface WrkResult { rps: number, p50: number, p99: number, requests: number }

function wrk (url: string, connections: number, headers: string[] = []): WrkResult {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', ...headers.flatMap(h => ['-H', h]), url]
  const out = execFileSync('wrk', args, { encoding: 'utf8' })
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN)
  const errors = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(out)
  if (errors != null) throw new Error(`wrk ${url}: ${errors[0]}`)
  return { rps, p50: latency(out, '50%'), p99: latency(out, '99%'), requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN) }
}

function latency (out: string, pct: string): number {
  const m = new RegExp(`${pct}\\s+([\\d.]+)(us|ms|s)`).exec(out)
  if (m == null) return NaN
  const v = Number(m[1])
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : v * 1000
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }

try {
  need('nginx', 'nginx-light')
  need('wrk', 'wrk')
  work = await mkdtemp(join(tmpdir(), 'corral-bench-proxy-http-'))
  const upstream = await freePort()
  const nginxProxy = await freePort()
  const upstreamWorker = await nginx('upstream', `  server { listen 127.0.0.1:${upstream}; location / { return 200 "hello from the upstream\\n"; } }`)
  const proxyConf = (port: number): string => `  upstream vm { server 127.0.0.1:${upstream}; keepalive 64; }\n  server { listen 127.0.0.1:${port}; location / { proxy_pass http://vm; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; } }`
  const proxyWorker = await nginx('proxy', proxyConf(nginxProxy))
  const nginxLogging = await freePort()
  const loggingWorker = await nginx('proxy-logging', proxyConf(nginxLogging), true)

  const key = generateClusterKey()
  const a = await startHarness({ BENCH_ROLE: 'a', BENCH_UPSTREAM: `127.0.0.1:${upstream}`, BENCH_KEY: key })
  const b = await startHarness({ BENCH_ROLE: 'b', BENCH_UPSTREAM: `127.0.0.1:${upstream}`, BENCH_KEY: key, BENCH_BOOTSTRAP: a.multiaddrs[0], BENCH_OWNER: a.peerId })
  // Node's HTTP path only, and access log on: other node processes for the same VM (each its own cluster).
  const full = await startHarness({ BENCH_ROLE: 'a', BENCH_UPSTREAM: `127.0.0.1:${upstream}`, BENCH_FAST_HTTP: 'off', BENCH_TCP_FROM: '42100' })
  const logging = await startHarness({ BENCH_ROLE: 'a', BENCH_UPSTREAM: `127.0.0.1:${upstream}`, BENCH_LOG: 'info', BENCH_TCP_FROM: '42200' }, join(work, 'corral-access.log'))

  // `proxies`: the processes doing the proxying for that path, whose CPU per request is reported;
  // `versus`: the nginx row its requests per second are compared with (round by round).
  const targets: Array<{ name: string, url: string, headers?: string[], proxies: number[], versus?: string }> = [
    { name: 'direct to the upstream', url: `http://127.0.0.1:${upstream}/`, proxies: [] },
    { name: 'nginx reverse proxy', url: `http://127.0.0.1:${nginxProxy}/`, proxies: [proxyWorker] },
    { name: 'corral, same node, public route', url: `http://${a.api}/proxy/vms/${VM}/80/`, proxies: [a.pid] },
    { name: 'corral, same node, private (token)', url: `http://${a.api}/proxy/vms/${VM}/81/`, headers: [`Authorization: Bearer ${a.token}`], proxies: [a.pid] },
    { name: 'corral, other node (direct tunnel)', url: `http://${b.api}/proxy/vms/${VM}/80/`, proxies: [b.pid, a.pid] },
    { name: 'corral, same node, Node\'s HTTP path', url: `http://${full.api}/proxy/vms/${VM}/80/`, proxies: [full.pid] },
    { name: 'nginx, access log on', url: `http://127.0.0.1:${nginxLogging}/`, proxies: [loggingWorker] },
    { name: 'corral, same node, access log on', url: `http://${logging.api}/proxy/vms/${VM}/80/`, proxies: [logging.pid], versus: 'nginx, access log on' }
  ]
  // Warm-up: pools, JIT, the tunnel.
  for (const t of targets) wrk(t.url, 8, t.headers)
  type Result = { rps: number[], p50: number[], p99: number[], cpu: number[] }
  const results = new Map<string, Result>(targets.map(t => [t.name, { rps: [], p50: [], p99: [], cpu: [] }]))
  for (let round = 0; round < rounds; round++) {
    for (const t of targets) {
      const r = results.get(t.name) as Result
      const before = t.proxies.map(cpuSeconds)
      const loaded = wrk(t.url, 32, t.headers)
      r.rps.push(loaded.rps)
      r.cpu.push(t.proxies.reduce((sum, pid, i) => sum + cpuSeconds(pid) - before[i], 0) / loaded.requests * 1e6)
      const one = wrk(t.url, 1, t.headers)
      r.p50.push(one.p50)
      r.p99.push(one.p99)
    }
  }
  const direct = results.get(targets[0].name) as { rps: number[], p50: number[] }
  console.log(`proxy-http: ${rounds} rounds of ${seconds} s per target, ${cpus().length} CPUs, load average ${loadavg().map(l => l.toFixed(1)).join(' ')}`)
  console.log('target                               req/s (32 conns)  vs nginx   proxy CPU/req   p50 (1 conn)  added p50   p99 (1 conn)   vs nginx by round')
  for (const t of targets) {
    const r = results.get(t.name) as Result
    const rps = median(r.rps)
    const p50 = median(r.p50)
    const cpu = t.proxies.length === 0 ? '-' : `${median(r.cpu).toFixed(1)} us`
    // Each round's ratio to its nginx row measured moments before, then the median of those.
    const versus = (results.get(t.versus ?? targets[1].name) as Result).rps
    const ratio = median(r.rps.map((x, i) => x / versus[i]))
    console.log(`${t.name.padEnd(37)}${rps.toFixed(0).padStart(10)}       ${(100 * ratio).toFixed(0).padStart(4)}%   ${cpu.padStart(11)}   ${p50.toFixed(3).padStart(8)} ms  ${(p50 - median(direct.p50)).toFixed(3).padStart(8)} ms  ${median(r.p99).toFixed(3).padStart(8)} ms   ${r.rps.map((x, i) => `${(100 * x / versus[i]).toFixed(0)}%`).join(' ')}`)
  }
  console.log('vs nginx: median of the rounds\' ratios to the nginx row (access log on: to nginx with its access log on)')
  void upstreamWorker
} finally {
  for (const child of children) child.kill('SIGTERM')
  await new Promise(resolve => setTimeout(resolve, 500))
  if (work !== '') await rm(work, { recursive: true, force: true })
}
