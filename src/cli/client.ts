import WebSocket from 'ws'
import { CliError } from './errors.ts'

export interface ClientOptions {
  server: string
  /** A token or an API key; both go in Authorization: Bearer. */
  credential?: string
}

/** A thin REST + websocket client for the CLI; problem documents become CliErrors with their detail. */
export class ApiClient {
  readonly server: string
  private readonly credential?: string

  constructor (options: ClientOptions) {
    this.server = options.server.replace(/\/+$/, '')
    this.credential = options.credential
  }

  async request<T> (method: string, path: string, body?: unknown): Promise<T> {
    let res: Response
    try {
      res = await fetch(this.server + path, {
        method,
        headers: {
          ...(this.credential != null ? { authorization: `Bearer ${this.credential}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {})
        },
        body: body !== undefined ? JSON.stringify(body) : undefined
      })
    } catch (err) {
      throw new CliError(`cannot reach the corral node at ${this.server} (${(err as { cause?: Error }).cause?.message ?? (err as Error).message}); is it running? Set --server or CORRAL_URL`)
    }
    const text = await res.text()
    const parsed = text === '' ? undefined : safeJson(text)
    if (!res.ok) {
      const problem = parsed as { detail?: string, title?: string } | undefined
      const hint = res.status === 401 ? ' (log in again with `corral login`)' : ''
      throw new CliError(`${res.status} ${problem?.title ?? res.statusText}: ${problem?.detail ?? text}${hint}`, 1, { status: res.status })
    }
    return parsed as T
  }

  /** A websocket to a path of the node, with this client's credential (port-forward tunnels). */
  websocket (path: string): WebSocket {
    const url = this.server.replace(/^http/, 'ws') + path
    return new WebSocket(url, { headers: this.credential != null ? { authorization: `Bearer ${this.credential}` } : {}, perMessageDeflate: false })
  }

  /** Runs a command over the exec websocket, streaming output; resolves with the exit code. */
  async execStream (id: string, request: unknown, onOutput: (stream: 'stdout' | 'stderr', data: string) => void): Promise<number> {
    const url = this.server.replace(/^http/, 'ws') + `/api/v1/vms/${encodeURIComponent(id)}/exec`
    const ws = new WebSocket(url, { headers: this.credential != null ? { authorization: `Bearer ${this.credential}` } : {} })
    return await new Promise<number>((resolve, reject) => {
      let exitCode: number | undefined
      let failure: CliError | undefined
      ws.on('unexpected-response', (_req, res) => {
        let text = ''
        res.on('data', (c: Buffer) => { text += c.toString() })
        res.on('end', () => {
          const problem = safeJson(text) as { detail?: string, title?: string } | undefined
          reject(new CliError(`${res.statusCode ?? 0} ${problem?.title ?? ''}: ${problem?.detail ?? text}`))
        })
      })
      ws.on('open', () => ws.send(JSON.stringify(request)))
      ws.on('message', (data: Buffer) => {
        const frame = safeJson(data.toString()) as { type: string, data?: string, exitCode?: number, problem?: { status: number, title: string, detail: string } }
        if (frame?.type === 'stdout' || frame?.type === 'stderr') onOutput(frame.type, frame.data ?? '')
        else if (frame?.type === 'exit') exitCode = frame.exitCode
        else if (frame?.type === 'error' && frame.problem != null) failure = new CliError(`${frame.problem.status} ${frame.problem.title}: ${frame.problem.detail}`)
      })
      ws.on('error', (err: Error) => reject(new CliError(`exec connection to ${this.server} failed: ${err.message}`)))
      ws.on('close', () => {
        if (failure != null) reject(failure)
        else if (exitCode != null) resolve(exitCode)
        else reject(new CliError('the node closed the exec connection before the command finished'))
      })
    })
  }
}

function safeJson (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}
