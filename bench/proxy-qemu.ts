/**
 * A real VM's download through corral's proxy beside the same download taken straight from the
 * VM's port forward: the qemu test guest serves /cgi-bin/zeros?MIB on port 80; curl fetches it
 *   direct        from the port forward on the VM host's loopback (what the proxy itself dials)
 *   same node     through the VM host's API (/proxy/vms/{id}/80/...)
 *   other node    through another node's API (direct TLS tunnel to the VM host)
 * Two `corral node` processes (qemu and sim) on loopback. Rounds alternate; medians printed.
 *
 *   node bench/proxy-qemu.ts [rounds=3] [MiB=256]
 */
import { execFileSync } from 'node:child_process'
import { cpus, loadavg } from 'node:os'
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../test/helpers/node-process.ts'
import { buildTestGuest, killProcessesMentioning } from '../test/drivers/qemu/helpers.ts'

const rounds = Number(process.argv[2] ?? 3)
const mib = Number(process.argv[3] ?? 256)
const nodes: NodeProcess[] = []

function curl (url: string, token?: string): number {
  const args = ['-s', '-o', '/dev/null', '-w', '%{size_download} %{speed_download} %{http_code}', ...(token != null ? ['-H', `Authorization: Bearer ${token}`] : []), url]
  const [size, speed, code] = execFileSync('curl', args, { encoding: 'utf8', timeout: 600_000 }).split(' ')
  if (code !== '200' || Number(size) !== mib * 1048576) throw new Error(`${url}: HTTP ${code}, ${size} bytes`)
  return Number(speed) / 1048576
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }

try {
  const guestDir = await buildTestGuest()
  const a = await startNodeProcess({ CORRAL_NODE_NAME: 'vm-host', CORRAL_NODE_LABELS: 'node=vm-host', CORRAL_DRIVER: 'qemu', CORRAL_QEMU_IMAGE_DIRS: guestDir, CORRAL_LOG_LEVEL: 'warn' })
  nodes.push(a)
  const token = (await call(a.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token as string
  const join = (await call(a.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token as string
  const b = await startNodeProcess({ CORRAL_NODE_NAME: 'gateway', CORRAL_JOIN_TOKEN: join, CORRAL_ADMIN_PASSWORD: '', CORRAL_PROXY_TCP_LISTEN_HOST: 'off', CORRAL_LOG_LEVEL: 'warn' })
  nodes.push(b)
  for (let i = 0; i < 150; i++) {
    const hosts = await call(b.url, 'GET', '/api/v1/hosts', { token }).catch(() => undefined)
    if (hosts?.body?.items?.filter((h: { state: string }) => h.state === 'alive').length === 2) break
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  const vm = await call(a.url, 'POST', '/api/v1/vms?wait=true', { token, body: { image: 'corral-test-guest', name: 'bench', hostLabels: { node: 'vm-host' } } })
  if (vm.body.state !== 'running') throw new Error(`the VM did not start: ${JSON.stringify(vm.body)}`)
  const forward = (vm.body.ports as Array<{ guestPort: number, hostPort: number }>).find(p => p.guestPort === 80)
  if (forward == null) throw new Error('port 80 is not forwarded')
  const path = `/cgi-bin/zeros?${mib}`
  const paths = [
    { name: 'direct to the port forward', run: () => curl(`http://127.0.0.1:${forward.hostPort}${path}`) },
    { name: 'corral, same node', run: () => curl(`${a.url}/proxy/vms/${vm.body.id as string}/80${path}`, token) },
    { name: 'corral, other node (direct TLS)', run: () => curl(`${b.url}/proxy/vms/${vm.body.id as string}/80${path}`, token) }
  ]
  // The guest's web server starts a moment after its agent answers.
  for (let i = 0; i < 100; i++) {
    const page = await fetch(`http://127.0.0.1:${forward.hostPort}/`).catch(() => undefined)
    if (page?.status === 200) break
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  const results = new Map(paths.map(p => [p.name, [] as number[]]))
  for (let round = 0; round < rounds; round++) for (const p of paths) results.get(p.name)?.push(p.run())
  const direct = median(results.get(paths[0].name) as number[])
  console.log(`proxy-qemu: ${rounds} rounds of ${mib} MiB, accelerator ${String(vm.body.info?.accelerator)}, ${cpus().length} CPUs, load average ${loadavg().map(l => l.toFixed(1)).join(' ')}`)
  for (const p of paths) {
    const rate = median(results.get(p.name) as number[])
    console.log(`${p.name.padEnd(34)}${rate.toFixed(0).padStart(6)} MiB/s  ${(100 * rate / direct).toFixed(0).padStart(4)}%`)
  }
} finally {
  for (const node of nodes.reverse()) {
    await node.stop()
    await killProcessesMentioning(node.dataDir)
    await node.destroy()
  }
}
