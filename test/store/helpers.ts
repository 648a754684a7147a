import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import type { Logger } from 'pino'

export interface LogEntry { level: number, msg: string, [key: string]: unknown }

/** A debug-level logger that keeps its entries, so tests can see what the store did (commits). */
export function recordingLogger (): { logger: Logger, entries: LogEntry[] } {
  const entries: LogEntry[] = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => { entries.push(JSON.parse(line)) } })
  return { logger, entries }
}

export function silentLogger (): Logger {
  return pino({ enabled: false })
}

/** A fresh folder under the OS temp dir and a function that removes it. */
export async function tempDir (): Promise<{ dir: string, remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'corral-store-'))
  return { dir, remove: async () => { await rm(dir, { recursive: true, force: true }) } }
}
