import type { Duplex } from 'node:stream'
import { ProxyTunnelError } from './errors.ts'

/**
 * Reads one JSON line from a byte stream without taking anything after it: the bytes that follow
 * belong to the proxied connection and are put back. Bounded in size and time.
 */
export async function readJsonLine<T> (stream: Duplex, maxBytes: number, timeoutMs: number): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0)
    const timer = setTimeout(() => { settle(new ProxyTunnelError(`no tunnel header within ${timeoutMs} ms`)) }, timeoutMs)
    const settle = (err?: Error, value?: T): void => {
      clearTimeout(timer)
      stream.off('readable', onReadable)
      stream.off('end', onEnd)
      stream.off('error', onError)
      stream.off('close', onEnd)
      if (err != null) reject(err)
      else resolve(value as T)
    }
    const onReadable = (): void => {
      let chunk: Buffer | null
      while ((chunk = stream.read() as Buffer | null) != null) {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
        const newline = buffered.indexOf(10)
        if (newline >= 0) {
          const rest = buffered.subarray(newline + 1)
          if (rest.length > 0) stream.unshift(rest)
          let value: T
          try {
            value = JSON.parse(buffered.subarray(0, newline).toString('utf8')) as T
          } catch {
            settle(new ProxyTunnelError('the tunnel header is not JSON'))
            return
          }
          settle(undefined, value)
          return
        }
        if (buffered.length > maxBytes) {
          settle(new ProxyTunnelError(`the tunnel header is longer than ${maxBytes} bytes`))
          return
        }
      }
    }
    const onEnd = (): void => { settle(new ProxyTunnelError('the tunnel closed before its header')) }
    const onError = (err: Error): void => { settle(err) }
    stream.on('readable', onReadable)
    stream.once('end', onEnd)
    stream.once('close', onEnd)
    stream.once('error', onError)
    onReadable()
  })
}

export function jsonLine (value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value) + '\n', 'utf8')
}
