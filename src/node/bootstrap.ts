/**
 * Joining through the bootstrap list: dial every address, retrying each with exponential backoff
 * and jitter up to a fixed number of attempts. One round runs at start; the mesh starts another
 * only when it has lost every connection, so a bootstrap node that is down costs a bounded number
 * of dials, and a whole cluster restarting in any order still finds itself.
 */
import type { Logger } from 'pino'
import type { BootstrapRetryOptions } from './types.ts'

export interface BootstrapDialerInit {
  addrs: string[]
  selfId: string
  retry: BootstrapRetryOptions
  log: Logger
  /** Dials one address; resolves once connected. */
  dial: (addr: string, signal: AbortSignal) => Promise<void>
}

export class BootstrapDialer {
  private readonly init: BootstrapDialerInit
  private round: Promise<void> | undefined
  private controller: AbortController | undefined

  constructor (init: BootstrapDialerInit) {
    this.init = init
  }

  get running (): boolean {
    return this.round !== undefined
  }

  /** Start a round unless one is running. Resolves when every address connected or gave up. */
  run (): Promise<void> {
    if (this.round !== undefined) return this.round
    const targets = this.init.addrs.filter(a => !a.endsWith(`/p2p/${this.init.selfId}`))
    if (targets.length === 0) return Promise.resolve()
    this.controller = new AbortController()
    const signal = this.controller.signal
    this.round = Promise.all(targets.map(async addr => { await this.dialWithRetry(addr, signal) }))
      .then(() => {})
      .finally(() => { this.round = undefined })
    return this.round
  }

  stop (): void {
    this.controller?.abort()
  }

  private async dialWithRetry (addr: string, signal: AbortSignal): Promise<void> {
    const { attempts, initialDelayMs, maxDelayMs } = this.init.retry
    for (let attempt = 1; attempt <= attempts && !signal.aborted; attempt++) {
      try {
        await this.init.dial(addr, signal)
        this.init.log.debug({ addr, attempt }, 'connected to a bootstrap node')
        return
      } catch (err) {
        if (signal.aborted) return
        // Every node may list itself among the bootstrap addresses (one config for all hosts).
        if ((err as Error)?.name === 'InvalidPeerIdError' || /dial self/i.test((err as Error)?.message ?? '')) return
        // Retrying cannot help until someone fixes the key (the refusal is already logged).
        if ((err as Error)?.name === 'ClusterKeyMismatchError') return
        const last = attempt === attempts
        this.init.log[last ? 'warn' : 'debug']({ addr, attempt, attempts, err: (err as Error)?.message },
          last ? 'could not reach a bootstrap node; giving up until this node has no peers' : 'bootstrap dial failed, will retry')
        if (last) return
        const base = Math.min(maxDelayMs, initialDelayMs * 2 ** (attempt - 1))
        await sleep(base / 2 + Math.random() * base / 2, signal)
      }
    }
  }
}

function sleep (ms: number, signal: AbortSignal): Promise<void> {
  return new Promise(resolve => {
    const done = (): void => {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}
