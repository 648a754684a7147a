/**
 * A private test network made of Linux network namespaces, and corral nodes running inside it.
 *
 *   corral-t<pid>-<tag>-br   holds bridge br0 (and br1, the far side of a partition) plus one veth
 *                            end per host, named h1, h2, ...
 *   corral-t<pid>-<tag>-h<i> one per host: lo and eth0 (the other veth end), 10.213.0.<10+i>/24,
 *                            multicast on and a route for 224.0.0.0/4 so mDNS works inside it.
 *
 * Nothing is created in the machine's own namespace: veth pairs are made directly inside the test's
 * namespaces (interface names are per namespace, so parallel runs cannot clash; namespace names carry
 * the pid). Each node's API listens on 127.0.0.1:8080 inside its namespace; a small relay started in
 * the same namespace forwards a Unix socket in the test's temp folder to it, so the test reaches every
 * node without any address in the root namespace and all traffic stays inside the test's namespaces.
 *
 * Teardown kills every process and deletes every namespace (deleting a namespace deletes its veths);
 * an 'exit' guard does the same if the test process ends early. If it is killed outright, its child
 * processes die with it (parent-death signal, set with util-linux setpriv) and the namespaces it
 * left (named after a pid that is gone) are swept when the next network is built.
 * Needs root, iproute2 and setpriv.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { request } from 'node:http'
import { mkdtemp, rm } from 'node:fs/promises'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { corralBin, ADMIN_PASSWORD } from './node-process.ts'

const run = promisify(execFile)
const PREFIX = 'corral-t'
/** The test network's own /24; it exists only inside the test's namespaces. */
const SUBNET = '10.213.0'
export const P2P_PORT = 7946
const API_PORT = 8080
/** Every `ip` command and every HTTP call is bounded. */
const COMMAND_TIMEOUT_MS = 10_000
const CALL_TIMEOUT_MS = 30_000

// What is alive right now, for the exit guard: it must work synchronously, with no promises.
const livePids = new Set<number>()
const liveNamespaces = new Set<string>()
const liveDirs = new Set<string>()
let guardInstalled = false

function installExitGuard (): void {
  if (guardInstalled) return
  guardInstalled = true
  process.once('exit', () => {
    for (const pid of livePids) { try { process.kill(pid, 'SIGKILL') } catch {} }
    for (const ns of liveNamespaces) { try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: COMMAND_TIMEOUT_MS }) } catch {} }
    for (const dir of liveDirs) { try { rmSync(dir, { recursive: true, force: true }) } catch {} }
  })
  // Signals skip 'exit' handlers unless we turn them into an exit.
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) process.once(signal, () => process.exit(code))
}

async function ip (...args: string[]): Promise<void> {
  try {
    await run('ip', args, { timeout: COMMAND_TIMEOUT_MS })
  } catch (err) {
    throw new Error(`ip ${args.join(' ')} failed: ${(err as { stderr?: string }).stderr?.trim() ?? String(err)}`)
  }
}

/** Deletes namespaces a killed earlier run of these tests left behind (their pid is gone). */
async function sweepStale (): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'list'], { timeout: COMMAND_TIMEOUT_MS })
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0] ?? ''
    const match = /^corral-t(\d+)-[a-z0-9]+-(br|h\d+)$/.exec(name)
    if (match == null || Number(match[1]) === process.pid) continue
    let alive = true
    try { process.kill(Number(match[1]), 0) } catch (err) { alive = (err as NodeJS.ErrnoException).code !== 'ESRCH' }
    if (!alive) await ip('netns', 'del', name).catch(() => {})
  }
}

export interface TestHost {
  /** 1-based index, as in the veth name h<i> on the bridge. */
  index: number
  ns: string
  addr: string
}

export interface TestNetwork {
  hosts: TestHost[]
  /** Moves these hosts onto a second bridge: they reach each other, not the rest (packets drop). */
  partition: (far: TestHost[]) => Promise<void>
  /** Puts every host back on the first bridge. */
  heal: () => Promise<void>
  /** Deletes every namespace of this network (and so its veths). Safe twice. */
  destroy: () => Promise<void>
}

/** Builds the bridge namespace and `count` host namespaces; tag keeps two networks of one run apart. */
export async function createTestNetwork (tag: string, count: number): Promise<TestNetwork> {
  if (!/^[a-z0-9]{1,6}$/.test(tag)) throw new Error('tag: 1 to 6 lowercase letters or digits')
  if (count < 1 || count > 200) throw new Error('count: 1 to 200 hosts')
  installExitGuard()
  await sweepStale()
  const base = `${PREFIX}${process.pid}-${tag}`
  const bridgeNs = `${base}-br`
  const hosts: TestHost[] = Array.from({ length: count }, (_, i) => ({ index: i + 1, ns: `${base}-h${i + 1}`, addr: `${SUBNET}.${11 + i}` }))
  const made: string[] = []
  const destroy = async (): Promise<void> => {
    for (const ns of made.splice(0)) {
      await ip('netns', 'del', ns).catch(() => {})
      liveNamespaces.delete(ns)
    }
  }
  try {
    for (const ns of [bridgeNs, ...hosts.map(h => h.ns)]) {
      await ip('netns', 'add', ns)
      made.push(ns)
      liveNamespaces.add(ns)
      await ip('-n', ns, 'link', 'set', 'lo', 'up')
    }
    for (const bridge of ['br0', 'br1']) {
      // No multicast snooping: mDNS (224.0.0.251) must reach every port.
      await ip('-n', bridgeNs, 'link', 'add', bridge, 'type', 'bridge', 'mcast_snooping', '0')
      await ip('-n', bridgeNs, 'link', 'set', bridge, 'up')
    }
    for (const host of hosts) {
      const port = `h${host.index}`
      await ip('link', 'add', 'eth0', 'netns', host.ns, 'type', 'veth', 'peer', 'name', port, 'netns', bridgeNs)
      await ip('-n', bridgeNs, 'link', 'set', port, 'master', 'br0')
      await ip('-n', bridgeNs, 'link', 'set', port, 'up')
      await ip('-n', host.ns, 'addr', 'add', `${host.addr}/24`, 'dev', 'eth0')
      await ip('-n', host.ns, 'link', 'set', 'eth0', 'multicast', 'on')
      await ip('-n', host.ns, 'link', 'set', 'eth0', 'up')
      await ip('-n', host.ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0')
    }
  } catch (err) {
    await destroy()
    throw err
  }
  const moveTo = async (list: TestHost[], bridge: string): Promise<void> => {
    for (const host of list) await ip('-n', bridgeNs, 'link', 'set', `h${host.index}`, 'master', bridge)
  }
  return {
    hosts,
    partition: async far => { await moveTo(far, 'br1') },
    heal: async () => { await moveTo(hosts, 'br0') },
    destroy
  }
}

/** Relays a Unix socket to 127.0.0.1:<port> inside the namespace; exits when its stdin closes. */
const RELAY_SOURCE = `
const net = require('node:net')
const fs = require('node:fs')
const [socketPath, port] = process.argv.slice(1)
try { fs.unlinkSync(socketPath) } catch {}
net.createServer(client => {
  const upstream = net.connect(Number(port), '127.0.0.1')
  const close = () => { client.destroy(); upstream.destroy() }
  client.on('error', close); upstream.on('error', close)
  client.pipe(upstream).pipe(client)
}).listen(socketPath, () => process.stdout.write('relay ready\\n'))
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()
`

export interface NetnsNode {
  name: string
  host: TestHost
  dataDir: string
  /** The Unix socket that reaches the node's API. */
  socketPath: string
  /** Everything the node wrote to stderr (its JSON log). */
  log: () => string
  stop: (signal?: NodeJS.Signals) => Promise<void>
  /** Stops the node and its relay and removes its data folder. Safe twice. */
  destroy: () => Promise<void>
}

function track (child: ChildProcess): void {
  if (child.pid !== undefined) livePids.add(child.pid)
  child.once('exit', () => { if (child.pid !== undefined) livePids.delete(child.pid) })
}

async function stopChild (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode != null || child.signalCode != null) return
  const exited = new Promise(resolve => child.once('exit', resolve))
  child.kill(signal)
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

/** Waits (bounded) for a line on stdout matching re; rejects with the stderr so far if the child dies. */
async function waitForLine (child: ChildProcess, re: RegExp, what: string, stderr: () => string, timeoutMs: number): Promise<RegExpExecArray> {
  let stdout = ''
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${what} not ready within ${timeoutMs} ms; stderr:\n${stderr()}`)) }, timeoutMs)
    child.stdout?.on('data', (c: Buffer) => {
      stdout += c.toString()
      const match = re.exec(stdout)
      if (match != null) { clearTimeout(timer); resolve(match) }
    })
    child.once('exit', code => { clearTimeout(timer); reject(new Error(`${what} exited with ${code} before it was ready; stderr:\n${stderr()}`)) })
  })
}

/**
 * Starts `corral node` inside the host's namespace (sim driver, JSON log, mesh on <addr>:7946, API on
 * 127.0.0.1:8080 there) and its API relay, and waits (bounded) for both to be ready.
 */
export async function startNetnsNode (host: TestHost, name: string, env: Record<string, string> = {}, readyTimeoutMs = 45_000): Promise<NetnsNode> {
  installExitGuard()
  const dataDir = await mkdtemp(join(tmpdir(), `corral-netns-${name}-`))
  liveDirs.add(dataDir)
  const socketPath = join(dataDir, 'api.sock')
  const exec = (args: string[]): ChildProcess => {
    // setpriv --pdeathsig: the child dies with the test process even if that is SIGKILLed.
    const child = spawn('ip', ['netns', 'exec', host.ns, 'setpriv', '--pdeathsig', 'KILL', process.execPath, ...args], {
      env: {
        PATH: process.env.PATH ?? '',
        HOME: process.env.HOME ?? tmpdir(),
        CORRAL_DATA_DIR: dataDir,
        CORRAL_NODE_NAME: name,
        CORRAL_API_ADDR: `127.0.0.1:${API_PORT}`,
        CORRAL_DRIVER: 'sim',
        CORRAL_P2P_ADDR: `/ip4/${host.addr}/tcp/${P2P_PORT}`,
        CORRAL_MDNS: 'false',
        CORRAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
        CORRAL_LOG_FORMAT: 'json',
        ...env
      },
      stdio: ['pipe', 'pipe', 'pipe']
    })
    track(child)
    return child
  }
  const relay = exec(['-e', RELAY_SOURCE, socketPath, String(API_PORT)])
  let relayErr = ''
  relay.stderr?.on('data', (c: Buffer) => { relayErr += c.toString() })
  const child = exec([corralBin, 'node'])
  child.stdin?.end()
  let stderr = ''
  child.stderr?.on('data', (c: Buffer) => { stderr += c.toString() })
  const destroy = async (): Promise<void> => {
    await stopChild(child)
    relay.stdin?.end()
    await stopChild(relay)
    await rm(dataDir, { recursive: true, force: true })
    liveDirs.delete(dataDir)
  }
  try {
    await Promise.all([
      waitForLine(relay, /relay ready/, `the API relay in ${host.ns}`, () => relayErr, readyTimeoutMs),
      waitForLine(child, /corral node ready at http:\/\/\S+/, `corral node ${name} in ${host.ns}`, () => stderr, readyTimeoutMs)
    ])
  } catch (err) {
    await destroy()
    throw err
  }
  const node: NetnsNode = {
    name, host, dataDir, socketPath, log: () => stderr,
    stop: async signal => { await stopChild(child, signal) },
    destroy
  }
  return node
}

/** One HTTP call to a node's API through its relay socket; bounded, JSON in and out. */
export async function call (node: NetnsNode, method: string, path: string, options: { token?: string, body?: unknown } = {}): Promise<{ status: number, body: any }> {
  const payload = options.body !== undefined ? JSON.stringify(options.body) : undefined
  return await new Promise((resolve, reject) => {
    const req = request({
      socketPath: node.socketPath,
      path,
      method,
      headers: {
        host: `127.0.0.1:${API_PORT}`,
        ...(options.token != null ? { authorization: `Bearer ${options.token}` } : {}),
        ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {})
      },
      signal: AbortSignal.timeout(CALL_TIMEOUT_MS)
    }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: text === '' ? undefined : JSON.parse(text) })
        } catch (err) { reject(new Error(`${node.name} ${method} ${path}: not JSON (${res.statusCode}): ${text.slice(0, 200)}`, { cause: err })) }
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(payload)
  })
}
