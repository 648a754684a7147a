import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startNodeProcess, runCli, ADMIN_PASSWORD, type NodeProcess, type CliRun } from '../helpers/node-process.ts'

// `corral proxy route create|list|delete` and `corral proxy url` through the real CLI against a
// node process (sim VM: HTTP on any port, an echo for other bytes).
let node: NodeProcess | undefined
let configDir: string | undefined
after(async () => {
  await node?.destroy()
  if (configDir != null) await rm(configDir, { recursive: true, force: true })
})

async function corral (args: string[]): Promise<CliRun> {
  return await runCli(args, { HOME: process.env.HOME ?? tmpdir(), CORRAL_URL: node?.url ?? '', CORRAL_CONFIG_DIR: configDir ?? '' })
}

/** A port of the default proxy.tcpPortRange (30000-30999) nothing listens on now. */
async function freeRoutePort (): Promise<number> {
  for (let port = 30000 + Math.floor(Math.random() * 900); port < 31000; port++) {
    const free = await new Promise<boolean>(resolve => {
      const server = createServer()
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
    })
    if (free) return port
  }
  throw new Error('no free port in 30000-30999')
}

/** Sends bytes to a TCP address and reads the same number back (the sim guest echoes). */
async function echo (address: string, text: string): Promise<string> {
  const colon = address.lastIndexOf(':')
  return await new Promise((resolve, reject) => {
    const socket = connect(Number(address.slice(colon + 1)), address.slice(0, colon).replace(/^\[|\]$/g, ''))
    let got = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no echo from ${address} within 10 s`)) }, 10_000)
    socket.on('connect', () => socket.write(text))
    socket.on('data', (c: Buffer) => {
      got += c.toString()
      if (got.length >= text.length) { clearTimeout(timer); socket.destroy(); resolve(got) }
    })
    socket.on('error', err => { clearTimeout(timer); reject(err) })
  })
}

test('corral proxy: a public HTTP route and a TCP route made, listed, used and deleted; a signed URL opens a private port', async () => {
  node = await startNodeProcess()
  configDir = await mkdtemp(join(tmpdir(), 'corral-proxy-cli-'))
  assert.equal((await corral(['login', '--password', ADMIN_PASSWORD])).code, 0)
  const created = await corral(['--json', 'vm', 'create', 'sim-ubuntu-24.04', '--name', 'proxied-cli', '--cpus', '1'])
  assert.equal(created.code, 0, created.stderr)
  const vm = (JSON.parse(created.stdout) as { id: string }).id

  const page = `${node.url}/proxy/vms/${vm}/8080/`
  assert.equal((await fetch(page)).status, 401, 'private before any route')
  const http = await corral(['--json', 'proxy', 'route', 'create', vm, '8080', '--public', '--description', 'docs preview'])
  assert.equal(http.code, 0, http.stderr)
  const httpRoute = JSON.parse(http.stdout) as { id: string, protocol: string, public: boolean, urls: string[] }
  assert.equal(httpRoute.protocol, 'http')
  assert.equal(httpRoute.public, true)
  assert.ok(httpRoute.urls.includes(page), httpRoute.urls.join(' '))
  const open = await fetch(page)
  assert.equal(open.status, 200)
  assert.match(await open.text(), /corral simulated VM proxied-cli, port 8080/)

  const listenPort = await freeRoutePort()
  const tcp = await corral(['--json', 'proxy', 'route', 'create', vm, '22', '--tcp', '--listen-port', String(listenPort)])
  assert.equal(tcp.code, 0, tcp.stderr)
  const tcpRoute = JSON.parse(tcp.stdout) as { id: string, listenPort: number }
  assert.equal(tcpRoute.listenPort, listenPort)
  assert.equal(await echo(`127.0.0.1:${listenPort}`, 'ssh-like bytes'), 'ssh-like bytes')

  const table = await corral(['proxy', 'route', 'list'])
  assert.equal(table.code, 0, table.stderr)
  assert.match(table.stdout, new RegExp(httpRoute.id))
  assert.match(table.stdout, new RegExp(`tcp://127\\.0\\.0\\.1:${listenPort}`))
  const listed = JSON.parse((await corral(['--json', 'proxy', 'route', 'list'])).stdout) as Array<{ id: string }>
  assert.deepEqual(listed.map(r => r.id).sort(), [httpRoute.id, tcpRoute.id].sort())

  const removed = await corral(['proxy', 'route', 'delete', httpRoute.id, tcpRoute.id])
  assert.equal(removed.code, 0, removed.stderr)
  assert.match(removed.stdout, new RegExp(`deleted ${httpRoute.id}\\ndeleted ${tcpRoute.id}`))
  assert.match((await corral(['proxy', 'route', 'list'])).stdout, /\(none\)/)
  assert.equal((await fetch(page)).status, 401, 'private again')
  const gone = await corral(['proxy', 'route', 'delete', httpRoute.id])
  assert.equal(gone.code, 1)
  assert.match(gone.stderr, /404 ProxyRouteNotFoundError/)

  const signed = await corral(['--json', 'proxy', 'url', vm, '8080', '--ttl', '60'])
  assert.equal(signed.code, 0, signed.stderr)
  const grant = JSON.parse(signed.stdout) as { url: string, expiresAt: string }
  assert.ok(grant.url.startsWith(page), grant.url)
  assert.equal((await fetch(grant.url)).status, 200, 'the signed URL opens the port without a credential')

  const badPort = await corral(['proxy', 'route', 'create', vm, '70000'])
  assert.equal(badPort.code, 2)
  assert.match(badPort.stderr, /not a TCP port/)
  const notTcp = await corral(['proxy', 'route', 'create', vm, '22', '--listen-port', '40001'])
  assert.equal(notTcp.code, 2)
  assert.match(notTcp.stderr, /add --tcp/)
})
