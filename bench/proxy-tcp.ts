/**
 * Bulk TCP through corral's proxy beside the same download taken directly, in one run on loopback:
 * a "guest" process sends N MiB per connection as fast as it is read; the client counts them.
 *   direct         client -> guest
 *   same node      client -> TCP route listener of the node running the VM -> guest
 *   other node     client -> TCP route listener of another node -> VM's node -> guest, the middle
 *                  hop over a libp2p stream (mesh) or a direct TLS tunnel
 *   port-forward   client -> websocket to the VM node's API (what `corral port-forward` does) -> guest
 * Nodes are bench/proxy-harness.ts processes. Rounds alternate the paths; medians are printed,
 * with the CPU each process used per GiB; a download cut short is counted and shown for its path
 * (the mesh-stream path is cut at load averages above ~20 here) and the run goes on. Asserts nothing.
 *
 *   node bench/proxy-tcp.ts [rounds=3] [MiB=1024]
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import WebSocket, { createWebSocketStream } from 'ws'
import { generateClusterKey } from '../src/node/index.ts'
import type { Duplex } from 'node:stream'

const rounds = Number(process.argv[2] ?? 3)
const mib = Number(process.argv[3] ?? 1024)
const bytes = mib * 1024 * 1024
const harness = fileURLToPath(new URL('./proxy-harness.ts', import.meta.url))
const VM = 'vm-be0c0000be0c'
const children: ChildProcess[] = []

async function start (env: Record<string, string>): Promise<{ child: ChildProcess, info: any }> {
  const child = spawn(process.execPath, [harness], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(child)
  const info = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString()
      const line = out.split('\n').find(l => l.startsWith('{'))
      if (line != null) resolve(JSON.parse(line))
    })
    child.once('exit', code => reject(new Error(`harness exited with ${code}`)))
  })
  return { child, info }
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

async function download (open: () => Promise<Duplex>): Promise<number> {
  const stream = await open()
  const started = performance.now()
  let received = 0
  await new Promise<void>((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => { received += chunk.length })
    stream.once('end', () => resolve())
    stream.once('close', () => resolve())
    stream.once('error', reject)
  })
  stream.destroy()
  if (received !== bytes) throw new Error(`got ${received} of ${bytes} bytes`)
  return bytes / 1048576 / ((performance.now() - started) / 1000)
}

const tcp = (host: string, port: number) => async (): Promise<Duplex> => await new Promise((resolve, reject) => {
  const s = connect({ host, port })
  s.once('connect', () => resolve(s))
  s.once('error', reject)
})

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }

try {
  const guest = await start({ BENCH_ROLE: 'upstream', BENCH_BYTES: String(bytes) })
  const key = generateClusterKey()
  const a = await start({ BENCH_ROLE: 'a', BENCH_UPSTREAM: `127.0.0.1:${guest.info.port as number}`, BENCH_KEY: key })
  const other = async (tunnel: string): Promise<{ child: ChildProcess, info: any }> => await start({ BENCH_ROLE: 'b', BENCH_TUNNEL: tunnel, BENCH_UPSTREAM: `127.0.0.1:${guest.info.port as number}`, BENCH_KEY: key, BENCH_BOOTSTRAP: a.info.multiaddrs[0], BENCH_OWNER: a.info.peerId })
  // Two "other" nodes would both listen on [::1]:<route port>: they take turns.
  let b = await other('on')
  const [aHost, aPort] = String(a.info.tcp).split(':')
  const bPort = Number(String(b.info.tcp).split(':').pop())
  const paths: Array<{ name: string, open: () => Promise<Duplex> }> = [
    { name: 'direct to the guest', open: tcp('127.0.0.1', guest.info.port) },
    { name: 'corral TCP route, same node', open: tcp(aHost, Number(aPort)) },
    { name: 'corral TCP route, other node (direct TLS)', open: tcp('::1', bPort) },
    { name: 'corral TCP route, other node (mesh stream)', open: tcp('::1', bPort) },
    {
      name: 'corral port-forward websocket',
      open: async () => await new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${a.info.api as string}/api/v1/vms/${VM}/port-forward/80`, { headers: { authorization: `Bearer ${a.info.token as string}` }, perMessageDeflate: false })
        ws.once('open', () => resolve(createWebSocketStream(ws)))
        ws.once('error', reject)
      })
    }
  ]
  const processes: Record<string, ChildProcess> = { guest: guest.child, 'node a': a.child, 'node b': b.child }
  const results = new Map(paths.map(p => [p.name, { rate: [] as number[], cpu: {} as Record<string, number[]>, failed: [] as string[] }]))
  await download(paths[1].open) // warm-up
  const meshOnly = paths.filter(p => p.name.includes('mesh stream'))
  for (const [phase, list] of [['direct tunnels', paths.filter(p => !meshOnly.includes(p))], ['mesh streams', meshOnly]] as const) {
   if (phase === 'mesh streams') {
     b.child.kill('SIGTERM')
     await new Promise(resolve => b.child.once('exit', resolve))
     b = await other('off')
     processes['node b'] = b.child
   }
   for (let round = 0; round < rounds; round++) {
    for (const path of list) {
      const before = Object.fromEntries(Object.entries(processes).map(([n, c]) => [n, cpuSeconds(c.pid as number)]))
      const clientBefore = process.cpuUsage()
      const r = results.get(path.name) as { rate: number[], cpu: Record<string, number[]>, failed: string[] }
      let rate: number
      try {
        rate = await download(path.open)
      } catch (err) {
        // Counted and shown, not the end of the run: the other paths are still measured.
        r.failed.push((err as Error).message)
        continue
      }
      r.rate.push(rate)
      for (const [n, c] of Object.entries(processes)) (r.cpu[n] ??= []).push((cpuSeconds(c.pid as number) - before[n]) / (bytes / 1024 ** 3))
      const used = process.cpuUsage(clientBefore);
      (r.cpu.client ??= []).push((used.user + used.system) / 1e6 / (bytes / 1024 ** 3))
    }
   }
  }
  const direct = median((results.get(paths[0].name) as { rate: number[] }).rate)
  console.log(`proxy-tcp: ${rounds} rounds of ${mib} MiB per path, ${cpus().length} CPUs, load average ${loadavg().map(l => l.toFixed(1)).join(' ')}`)
  console.log('path                                     MiB/s   vs direct   CPU s per GiB: client  guest  node a  node b')
  for (const path of paths) {
    const r = results.get(path.name) as { rate: number[], cpu: Record<string, number[]>, failed: string[] }
    const failed = r.failed.length > 0 ? `   ${r.failed.length} of ${rounds} cut: ${r.failed[0]}` : ''
    if (r.rate.length === 0) {
      console.log(`${path.name.padEnd(38)}       -         -${failed}`)
      continue
    }
    const rate = median(r.rate)
    const c = (n: string): string => median(r.cpu[n]).toFixed(2).padStart(6)
    console.log(`${path.name.padEnd(38)}${rate.toFixed(0).padStart(8)}   ${(100 * rate / direct).toFixed(0).padStart(6)}%                ${c('client')} ${c('guest')}  ${c('node a')}  ${c('node b')}${failed}`)
  }
} finally {
  for (const child of children) child.kill('SIGTERM')
  await new Promise(resolve => setTimeout(resolve, 500))
}
