import { Command } from 'commander'
import type { RouteView } from '../proxy/types.ts'
import type { ApiClient } from './client.ts'
import { CliError } from './errors.ts'
import { printObject, printRows } from './output.ts'

const routeColumns = ['id', 'vm', 'port', 'protocol', 'public', 'urls', 'createdBy']

/**
 * `corral proxy route create|list|delete` over /api/v1/proxy/routes (cluster-wide records every
 * node serves: a public HTTP route, or a TCP port on every node), and `corral proxy url` for a
 * signed URL to a VM port (POST /api/v1/proxy/grants). See notes/proxy.md.
 */
export function proxyCommands (client: (cmd: Command) => Promise<ApiClient>, json: (cmd: Command) => boolean): Command {
  const proxy = new Command('proxy').description('reach ports inside VMs: routes (public HTTP, TCP node ports) and signed URLs')
  const route = proxy.command('route').description('cluster-wide proxy routes: every node serves each one')

  route.command('create')
    .description('make a route to a VM port: HTTP (--public opens it to anyone) or, with --tcp, a node port on every node')
    .argument('<vm>', 'VM id')
    .argument('<port>', 'port inside the VM', toPort)
    .option('--tcp', 'a TCP route: every node listens on a node port for it (default: HTTP)')
    .option('--public', 'open to anyone (HTTP: no credential needed; TCP: any source address)')
    .option('--listen-port <port>', 'TCP: the node port (default: the first free one of proxy.tcpPortRange)', toPort)
    .option('--allow-from <cidr...>', 'TCP, private: source addresses or CIDR ranges accepted besides loopback')
    .option('--description <text>', 'what the route is for')
    .action(async (vm: string, port: number, opts: { tcp?: boolean, public?: boolean, listenPort?: number, allowFrom?: string[], description?: string }, cmd: Command) => {
      const tcp = opts.tcp === true
      if (!tcp && (opts.listenPort != null || opts.allowFrom != null)) throw new CliError('--listen-port and --allow-from are for TCP routes: add --tcp', 2)
      const body = { vm, port, protocol: tcp ? 'tcp' : 'http', public: opts.public === true, listenPort: opts.listenPort, allowFrom: opts.allowFrom, description: opts.description }
      const created = await (await client(cmd)).request<RouteView>('POST', '/api/v1/proxy/routes', body)
      if (json(cmd)) {
        printObject(created as unknown as Record<string, unknown>, true)
        return
      }
      printObject(summary(created), false)
      if (!tcp && !created.public) process.stdout.write('HTTP routes are private unless --public: callers still need a token, an API key or a signed URL (corral proxy url).\n')
    })

  route.command('list')
    .description('every route of the cluster, with where this node serves it')
    .action(async (_o, cmd: Command) => {
      const res = await (await client(cmd)).request<{ items: RouteView[] }>('GET', '/api/v1/proxy/routes')
      printRows(res.items.map(summary), routeColumns, json(cmd), res.items)
    })

  route.command('delete')
    .description('delete routes (every node stops serving them)')
    .argument('<id...>', 'route ids (corral proxy route list)')
    .action(async (ids: string[], _o, cmd: Command) => {
      const api = await client(cmd)
      for (const id of ids) {
        await api.request('DELETE', `/api/v1/proxy/routes/${encodeURIComponent(id)}`)
        process.stdout.write(json(cmd) ? JSON.stringify({ deleted: id }) + '\n' : `deleted ${id}\n`)
      }
    })

  proxy.command('url')
    .description('a signed URL to a VM port, usable without a credential until it expires')
    .argument('<vm>', 'VM id')
    .argument('<port>', 'port inside the VM', toPort)
    .option('--ttl <seconds>', 'how long it is valid (default 900; at most the node\'s proxy.signedUrlMaxSeconds)', toPositive)
    .action(async (vm: string, port: number, opts: { ttl?: number }, cmd: Command) => {
      const grant = await (await client(cmd)).request<{ url: string, path: string, expiresAt: string }>('POST', '/api/v1/proxy/grants', { vm, port, ttlSeconds: opts.ttl })
      process.stdout.write(json(cmd) ? JSON.stringify(grant, null, 2) + '\n' : `${grant.url}\n(valid until ${grant.expiresAt})\n`)
    })

  return proxy
}

/** A route as one table row: where it is reached says more than its record. */
function summary (route: RouteView): Record<string, unknown> {
  const listening = route.listening?.error != null ? [`not listening here: ${route.listening.error}`] : []
  return { ...route, urls: [...route.urls, ...listening], description: route.description ?? '' }
}

function toPort (value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new CliError(`"${value}" is not a TCP port (1-65535)`, 2)
  return n
}

function toPositive (value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new CliError(`"${value}" is not a positive whole number`, 2)
  return n
}
