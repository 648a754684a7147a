import { createServer, type Server, type Socket } from 'node:net'
import { Command } from 'commander'
import WebSocket, { createWebSocketStream } from 'ws'
import type { ApiClient } from './client.ts'
import { CliError } from './errors.ts'

interface Mapping {
  local: number
  remote: number
}

/**
 * `corral port-forward VM LOCAL:REMOTE...`: listens on local ports and carries each connection to
 * a port inside the VM over a websocket to the node's API port (one websocket per connection), so
 * SSH, VNC or RDP reach a VM from a machine that can only reach the API.
 */
export function portForwardCommand (client: (cmd: Command) => Promise<ApiClient>, json: (cmd: Command) => boolean): Command {
  return new Command('port-forward')
    .description('forward local ports to ports inside a VM through the API port (like kubectl port-forward); stops on Ctrl-C')
    .argument('<vm>', 'VM id')
    .argument('<ports...>', 'LOCAL:REMOTE, :REMOTE (any free local port) or PORT (the same on both sides)')
    .option('--address <address>', 'local address to listen on', '127.0.0.1')
    .action(async (vm: string, ports: string[], opts: { address: string }, cmd: Command) => {
      const api = await client(cmd)
      const mappings = ports.map(parseMapping)
      // Fails early, with the API's own message, on a VM that does not exist or a bad credential.
      await api.request('GET', `/api/v1/vms/${encodeURIComponent(vm)}`)
      const sockets = new Set<Socket>()
      const servers: Server[] = []
      try {
        for (const mapping of mappings) {
          const server = createServer({ allowHalfOpen: true }, socket => {
            sockets.add(socket)
            socket.once('close', () => sockets.delete(socket))
            forward(api, vm, mapping.remote, socket)
          })
          await new Promise<void>((resolve, reject) => {
            server.once('error', (err: NodeJS.ErrnoException) => reject(new CliError(`cannot listen on ${opts.address}:${mapping.local}: ${err.code ?? err.message}`)))
            server.listen(mapping.local, opts.address, () => resolve())
          })
          servers.push(server)
          const local = (server.address() as { port: number }).port
          if (json(cmd)) process.stdout.write(JSON.stringify({ vm, local: `${opts.address}:${local}`, remote: mapping.remote }) + '\n')
          else process.stdout.write(`Forwarding from ${opts.address}:${local} -> ${vm}:${mapping.remote}\n`)
        }
        await new Promise<void>(resolve => {
          process.once('SIGINT', () => resolve())
          process.once('SIGTERM', () => resolve())
        })
      } finally {
        for (const server of servers) server.close()
        for (const socket of sockets) socket.destroy()
      }
    })
}

/** One local connection: a websocket to the VM port, bytes both ways, ends passed on. */
function forward (api: ApiClient, vm: string, port: number, socket: Socket): void {
  socket.pause()
  socket.on('error', () => undefined)
  const ws = api.websocket(`/api/v1/vms/${encodeURIComponent(vm)}/port-forward/${port}`)
  ws.on('unexpected-response', (_req, res) => {
    let text = ''
    res.on('data', (c: Buffer) => { text += c.toString() })
    res.on('end', () => {
      const problem = safeJson(text) as { title?: string, detail?: string } | undefined
      process.stderr.write(`corral: connection to ${vm}:${port} refused: ${res.statusCode ?? 0} ${problem?.title ?? ''}: ${problem?.detail ?? text}\n`)
      socket.destroy()
    })
  })
  ws.on('error', (err: Error) => {
    process.stderr.write(`corral: connection to ${vm}:${port} failed: ${err.message}\n`)
    socket.destroy()
  })
  ws.once('open', () => {
    const stream = createWebSocketStream(ws, { allowHalfOpen: true })
    stream.on('error', () => { socket.destroy() })
    // A local end travels as the websocket's close (websockets have no half-close); a local reset cuts it.
    socket.on('close', () => { if (!stream.writableEnded) stream.destroy() })
    stream.on('close', () => { socket.destroy() })
    socket.pipe(stream)
    stream.pipe(socket)
    socket.resume()
  })
  socket.once('close', () => { if (ws.readyState === WebSocket.CONNECTING) ws.terminate() })
}

function parseMapping (text: string): Mapping {
  const match = /^(?:(\d{0,5}):)?(\d{1,5})$/.exec(text)
  if (match == null) throw new CliError(`"${text}" is not LOCAL:REMOTE, :REMOTE or PORT`, 2)
  const remote = Number(match[2])
  const local = match[1] == null ? remote : match[1] === '' ? 0 : Number(match[1])
  if (remote < 1 || remote > 65535 || local > 65535) throw new CliError(`"${text}": ports are 1-65535`, 2)
  return { local, remote }
}

function safeJson (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}
