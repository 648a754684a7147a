import { Command, Option } from 'commander'
import { ApiClient } from './client.ts'
import { CliError } from './errors.ts'
import { loadSession, saveSession, sessionFile } from './session.ts'
import { printObject, printRows } from './output.ts'
import { clusterCommands } from './cluster-commands.ts'
import { portForwardCommand } from './port-forward.ts'
import { catalogCommands } from './catalog-commands.ts'
import { proxyCommands } from './proxy-commands.ts'

interface GlobalOptions {
  server?: string
  token?: string
  apiKey?: string
  json?: boolean
}

interface Vm {
  id: string
  name: string
  state: string
  stateReason?: string
  [k: string]: unknown
}

const DEFAULT_SERVER = 'http://127.0.0.1:8080'
const vmColumns = ['id', 'name', 'image', 'state', 'host', 'cpus', 'memoryMiB', 'simulated']

/** login, vm and image commands: everything that talks to a node over its API. */
export function clientCommands (env: Record<string, string | undefined>): Command[] {
  const file = sessionFile(env)

  async function client (cmd: Command): Promise<ApiClient> {
    const g = cmd.optsWithGlobals<GlobalOptions>()
    const session = await loadSession(file)
    const server = g.server ?? session?.server ?? DEFAULT_SERVER
    const credential = g.token ?? g.apiKey ?? (session != null && session.server === server ? session.token : undefined)
    return new ApiClient({ server, credential })
  }
  const json = (cmd: Command): boolean => cmd.optsWithGlobals<GlobalOptions>().json === true

  const login = new Command('login')
    .description('get a token from a node and remember it for later commands')
    .option('-u, --username <name>', 'user to log in as', 'admin')
    .addOption(new Option('-p, --password <password>', 'password (or set CORRAL_PASSWORD, or use --password-stdin)').env('CORRAL_PASSWORD'))
    .option('--password-stdin', 'read the password from standard input')
    .action(async (opts: { username: string, password?: string, passwordStdin?: boolean }, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>()
      const server = g.server ?? DEFAULT_SERVER
      const api = new ApiClient({ server })
      let body: Record<string, string>
      if (g.apiKey != null) body = { apiKey: g.apiKey }
      else {
        const password = opts.passwordStdin === true ? (await readStdin()).replace(/\r?\n$/, '') : opts.password
        if (password == null || password === '') throw new CliError('give a password with --password, CORRAL_PASSWORD or --password-stdin (or log in with --api-key)', 2)
        body = { username: opts.username, password }
      }
      const grant = await api.request<{ token: string, expiresAt: string }>('POST', '/api/v1/auth/token', body)
      await saveSession(file, { server, token: grant.token, expiresAt: grant.expiresAt })
      if (json(cmd)) process.stdout.write(JSON.stringify({ server, expiresAt: grant.expiresAt }) + '\n')
      else process.stdout.write(`logged in to ${server}; token valid until ${grant.expiresAt}\n`)
    })

  const vm = new Command('vm').description('create, use and remove VMs')
  vm.command('list').description('list VMs').action(async (_o, cmd: Command) => {
    const res = await (await client(cmd)).request<{ items: Vm[] }>('GET', '/api/v1/vms')
    printRows(res.items, vmColumns, json(cmd), res.items)
  })
  vm.command('get <id>').description('show one VM').action(async (id: string, _o, cmd: Command) => {
    printObject(await (await client(cmd)).request<Vm>('GET', `/api/v1/vms/${encodeURIComponent(id)}`), json(cmd))
  })
  vm.command('create <image>').description('create a VM from an image and boot it')
    .option('--name <name>', 'VM name (default: image name and a suffix)')
    .option('--cpus <n>', 'CPUs', toInt)
    .option('--memory <MiB>', 'memory in MiB', toInt)
    .option('--label <key=value...>', 'labels, repeatable')
    .option('--no-start', 'create it stopped')
    .option('--arch <arch>', 'host architecture it needs (x86_64 or arm64)')
    .option('--os <os>', 'guest OS the image must have (linux, macos, windows)')
    .option('--host-label <key=value...>', 'host labels it needs, repeatable')
    .option('--avoid-host-label <key=value...>', 'host labels it must avoid, repeatable')
    .option('--priority <n>', 'queue priority, higher first (default 50)', toWhole)
    .option('--queue-timeout <seconds>', 'how long it may wait for capacity', toInt)
    .option('--dry-run', 'show where it would go and why, without creating it')
    .option('--timeout <seconds>', 'how long to wait for it to boot (queue time included)', toInt, 3600)
    .action(async (image: string, opts: { name?: string, cpus?: number, memory?: number, label?: string[], start: boolean, arch?: string, os?: string, hostLabel?: string[], avoidHostLabel?: string[], priority?: number, queueTimeout?: number, dryRun?: boolean, timeout: number }, cmd: Command) => {
      const api = await client(cmd)
      const body = {
        image,
        name: opts.name,
        cpus: opts.cpus,
        memoryMiB: opts.memory,
        labels: pairs(opts.label),
        start: opts.start,
        arch: opts.arch,
        os: opts.os,
        hostLabels: pairs(opts.hostLabel),
        hostLabelsNot: pairs(opts.avoidHostLabel),
        priority: opts.priority,
        queueTimeoutSeconds: opts.queueTimeout
      }
      if (opts.dryRun === true) {
        const plan = await api.request<{ placed: boolean, host?: { name: string, score: number }, reason?: string, ranked: Array<{ name: string, score: number, cachedImage: boolean }>, rejected: Array<{ host: string, reasons: string[] }> }>('POST', '/api/v1/vms', { ...body, dryRun: true })
        if (json(cmd)) {
          process.stdout.write(JSON.stringify(plan, null, 2) + '\n')
          return
        }
        process.stdout.write(plan.placed ? `would run on ${plan.host?.name ?? ''}\n` : `would not run now: ${plan.reason ?? ''}\n`)
        printRows([
          ...plan.ranked.map(c => ({ host: c.name, verdict: `candidate, score ${c.score.toFixed(3)}${c.cachedImage ? ', image cached' : ''}` })),
          ...plan.rejected.map(r => ({ host: r.host, verdict: r.reasons.join('; ') }))
        ], ['host', 'verdict'], false)
        return
      }
      const created = await api.request<Vm>('POST', '/api/v1/vms', body)
      const final = await waitForVm(api, created, opts.start ? 'running' : 'stopped', opts.timeout, json(cmd))
      if (json(cmd)) process.stdout.write(JSON.stringify(final, null, 2) + '\n')
      else process.stdout.write(`${final.id} ${final.name} ${final.state}${final.simulated === true ? ' (simulated)' : ''}\n`)
      if (final.state === 'failed') throw new CliError(`VM ${final.id} failed: ${final.stateReason ?? 'no reason given'}`)
    })
  for (const action of ['start', 'stop', 'suspend', 'resume', 'restart'] as const) {
    vm.command(`${action} <id>`).description(`${action} a VM`).action(async (id: string, _o, cmd: Command) => {
      const res = await (await client(cmd)).request<Vm>('POST', `/api/v1/vms/${encodeURIComponent(id)}/${action}`)
      if (json(cmd)) process.stdout.write(JSON.stringify(res, null, 2) + '\n')
      else process.stdout.write(`${res.id} ${res.state}\n`)
    })
  }
  vm.command('delete <id>').description('delete a VM').action(async (id: string, _o, cmd: Command) => {
    await (await client(cmd)).request('DELETE', `/api/v1/vms/${encodeURIComponent(id)}`)
    if (json(cmd)) process.stdout.write(JSON.stringify({ id, deleted: true }) + '\n')
    else process.stdout.write(`${id} deleted\n`)
  })
  vm.command('exec <id> <command...>').description('run a command in a VM, streaming its output; exits with its exit code (put -- before the command)')
    .option('-e, --env <KEY=VALUE...>', 'environment variables')
    .option('--timeout <seconds>', 'kill the command after this long', toInt)
    .action(async (id: string, command: string[], opts: { env?: string[], timeout?: number }, cmd: Command) => {
      const env = opts.env != null ? Object.fromEntries(opts.env.map(p => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)])) : undefined
      const request = { command, env, timeoutSeconds: opts.timeout }
      const api = await client(cmd)
      if (json(cmd)) {
        process.stdout.write(JSON.stringify(await api.request('POST', `/api/v1/vms/${encodeURIComponent(id)}/exec`, request), null, 2) + '\n')
        return
      }
      const code = await api.execStream(id, request, (stream, data) => (stream === 'stdout' ? process.stdout : process.stderr).write(data))
      process.exitCode = code
    })

  const image = new Command('image').description('images VMs are created from')
  image.command('list').description('list images').action(async (_o, cmd: Command) => {
    const res = await (await client(cmd)).request<{ items: Array<Record<string, unknown>> }>('GET', '/api/v1/images')
    printRows(res.items, ['name', 'os', 'arch', 'source', 'defaultCpus', 'defaultMemoryMiB', 'simulated'], json(cmd), res.items)
  })
  image.command('add <name> <path>').description('register a local image by path').action(async (name: string, path: string, _o, cmd: Command) => {
    const res = await (await client(cmd)).request<Record<string, unknown>>('POST', '/api/v1/images', { name, path })
    printObject(res, json(cmd))
  })

  return [login, vm, image, ...clusterCommands(client, json), ...catalogCommands(client, json), portForwardCommand(client, json), proxyCommands(client, json)]
}

/** Polls the VM until it reaches `want` (or fails), with a spinner for people. */
async function waitForVm (api: ApiClient, vm: Vm, want: string, timeoutSeconds: number, quiet: boolean): Promise<Vm> {
  // Loaded here, not at start-up: a long-running node never needs it.
  const { default: ora } = await import('ora')
  const spinner = quiet ? undefined : ora({ text: `${vm.name}: ${vm.state}`, stream: process.stderr }).start()
  const deadline = Date.now() + timeoutSeconds * 1000
  let current = vm
  try {
    while (current.state !== want && current.state !== 'failed') {
      if (Date.now() > deadline) throw new CliError(`VM ${vm.id} did not become ${want} within ${timeoutSeconds} s (it is ${current.state}); raise --timeout or check the node's log`)
      await new Promise(resolve => setTimeout(resolve, 200))
      current = await api.request<Vm>('GET', `/api/v1/vms/${encodeURIComponent(vm.id)}`)
      if (spinner != null) {
        spinner.text = current.state === 'queued'
          ? `${vm.name}: queued, position ${String(current.queuePosition ?? '?')}${current.stateReason != null ? ` (${current.stateReason})` : ''}`
          : `${vm.name}: ${current.state}${current.host !== '' && current.host != null ? ` on ${String(current.host)}` : ''}`
      }
    }
    if (current.state === 'failed') spinner?.fail(`${vm.name}: failed`)
    else spinner?.succeed(`${vm.name}: ${current.state}`)
    return current
  } catch (err) {
    spinner?.fail()
    throw err
  }
}

/** key=value pairs from repeatable options; undefined when none were given. */
function pairs (list: string[] | undefined): Record<string, string> | undefined {
  if (list == null) return undefined
  return Object.fromEntries(list.map(pair => {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new CliError(`"${pair}" must be key=value`, 2)
    return [pair.slice(0, eq), pair.slice(eq + 1)]
  }))
}

function toWhole (value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new CliError(`"${value}" is not a whole number`, 2)
  return n
}

function toInt (value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new CliError(`"${value}" is not a positive whole number`, 2)
  return n
}

async function readStdin (): Promise<string> {
  let text = ''
  for await (const chunk of process.stdin) text += String(chunk)
  return text
}
