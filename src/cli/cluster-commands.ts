import { Command } from 'commander'
import { writeFile } from 'node:fs/promises'
import { CliError } from './errors.ts'
import { encodeJoinToken, generateClusterKey } from '../node/index.ts'
import type { ApiClient } from './client.ts'
import { printObject, printRows } from './output.ts'

interface Member { nodeName: string, peerId: string, status: string, apiAddress?: string, lastSeen: string, self: boolean }

/** `corral cluster ...` and `corral host list`: creating a cluster and looking at it. */
export function clusterCommands (client: (cmd: Command) => Promise<ApiClient>, json: (cmd: Command) => boolean): Command[] {
  const cluster = new Command('cluster').description('create a cluster, join nodes to it, look at its members')
  cluster.command('init')
    .description('create a cluster key and a join token (start the first node with the key, the others with --join)')
    .option('--advertise <multiaddr...>', 'where the first node will listen, e.g. /ip4/10.0.0.5/tcp/7946 (goes into the token)')
    .option('--key-file <file>', 'where to write the new cluster key (0600; never overwritten)', 'cluster.key')
    .action(async (opts: { advertise?: string[], keyFile: string }, cmd: Command) => {
      const key = generateClusterKey()
      const token = encodeJoinToken({ clusterKey: key, bootstrap: opts.advertise ?? [] })
      await writeFile(opts.keyFile, key + '\n', { mode: 0o600, flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
        throw new CliError(err.code === 'EEXIST' ? `${opts.keyFile} exists already; corral never overwrites a cluster key (choose another --key-file)` : `cannot write ${opts.keyFile}: ${err.message}`)
      })
      if (json(cmd)) {
        process.stdout.write(JSON.stringify({ keyFile: opts.keyFile, joinToken: token }, null, 2) + '\n')
        return
      }
      process.stdout.write([
        `A new cluster key is in ${opts.keyFile} (a secret: whoever holds it can join).`,
        '',
        'Start the first node with it (it creates the admin user):',
        `  CORRAL_CLUSTER_KEY="$(cat ${opts.keyFile})" corral node --cluster-listen ${opts.advertise?.[0] ?? '/ip4/0.0.0.0/tcp/7946'}`,
        '',
        'Join token for the other nodes' + (opts.advertise == null ? ' (no --advertise given: add --bootstrap or use --cluster-mdns true)' : '') + ':',
        `  corral node --join ${token}`,
        '',
        'A running node also gives a token with its real addresses: corral cluster token',
        ''
      ].join('\n'))
    })
  cluster.command('token').description('a join token from a running node (needs the cluster:write claim)').action(async (_o, cmd: Command) => {
    const res = await (await client(cmd)).request<{ token: string }>('GET', '/api/v1/cluster/join-token')
    process.stdout.write((json(cmd) ? JSON.stringify(res) : res.token) + '\n')
  })
  cluster.command('show').description('this node, the members and their state').action(async (_o, cmd: Command) => {
    const res = await (await client(cmd)).request<{ self: { peerId: string, nodeName: string, multiaddrs: string[] }, members: Member[], leader: unknown }>('GET', '/api/v1/cluster')
    if (json(cmd)) {
      process.stdout.write(JSON.stringify(res, null, 2) + '\n')
      return
    }
    printObject({ node: res.self.nodeName, peerId: res.self.peerId, multiaddrs: res.self.multiaddrs, leader: res.leader ?? '(none yet)' }, false)
    printRows(res.members.map(m => ({ ...m, self: m.self ? '*' : '' })), ['nodeName', 'status', 'apiAddress', 'lastSeen', 'self'], false)
  })

  const host = new Command('host').description('hosts of the cluster')
  host.command('list').description('every host with its state, capacity and VMs').action(async (_o, cmd: Command) => {
    const res = await (await client(cmd)).request<{ items: Array<Record<string, any>> }>('GET', '/api/v1/hosts')
    const rows = res.items.map(h => ({
      name: h.name, state: h.state, driver: h.capacity?.driver, arch: h.capacity?.arch,
      cpus: `${h.free?.cpus as number}/${h.capacity?.cpus as number} free`, memoryMiB: `${h.free?.memoryMiB as number}/${h.capacity?.memoryMiB as number} free`,
      vms: h.vms?.running, simulated: h.capacity?.simulated
    }))
    printRows(rows, ['name', 'state', 'driver', 'arch', 'cpus', 'memoryMiB', 'vms', 'simulated'], json(cmd), res.items)
  })
  return [cluster, host]
}
