import { pino, type Logger } from 'pino'
import { createRequire } from 'node:module'

/** Paths pino blanks out wherever they appear, so no secret can reach a log line by accident. */
const redact = ['password', 'token', 'apiKey', 'secret', 'authorization', '*.password', '*.token', '*.apiKey', '*.secret', '*.authorization', 'headers.authorization', 'req.headers.authorization']

export function createLogger (level: string, format: 'auto' | 'json' | 'pretty', destination: NodeJS.WritableStream = process.stderr): Logger {
  const usePretty = format === 'pretty' || (format === 'auto' && (destination as { isTTY?: boolean }).isTTY === true)
  const options = { level, redact: { paths: redact, censor: '[redacted]' }, base: { pid: process.pid } }
  if (usePretty) {
    // pino-pretty only when a person reads the log: JSON-logging nodes never load it.
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty')
    return pino(options, pretty({ sync: true, destination: destination as NodeJS.WritableStream & { fd?: number }, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }))
  }
  return pino(options, destination)
}
