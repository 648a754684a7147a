/** Builds an auth service on an in-memory store, a temp data dir, a movable clock and a log buffer. */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { createAuthService } from '../../src/auth/index.ts'
import type { AuthInit, AuthService } from '../../src/auth/index.ts'
import { MemoryStore } from '../helpers/memory-store.ts'

export const ADMIN_PASSWORD = 'correct horse battery staple'

export interface Fixture {
  auth: AuthService
  store: MemoryStore
  dataDir: string
  /** Every log line written so far (JSON). */
  logs: string[]
  now: () => number
  advance: (seconds: number) => void
  /** Another service on the same store, data dir, clock and log buffer (a restart). */
  restart: (init?: Partial<AuthInit>) => Promise<AuthService>
  cleanup: () => Promise<void>
}

export interface FixtureOptions extends Partial<AuthInit> {
  start?: boolean
}

export async function createFixture (options: FixtureOptions = {}): Promise<Fixture> {
  const { start = true, ...initOverrides } = options
  const dataDir = await mkdtemp(join(tmpdir(), 'corral-auth-'))
  const store = new MemoryStore()
  const logs: string[] = []
  const logger = pino({ level: 'debug' }, { write: (line: string) => { logs.push(line) } })
  let time = Date.parse('2030-01-01T00:00:00.000Z')
  const clock = (): number => time
  const services: AuthService[] = []

  const build = (init: Partial<AuthInit>): AuthService => {
    const auth = createAuthService({ store, logger, clock }, {
      dataDir,
      adminPassword: ADMIN_PASSWORD,
      tokenTtlSeconds: 900,
      lockout: { maxFailures: 3, windowSeconds: 60, lockSeconds: 300 },
      // Cheap hashes keep the suite fast; the default cost is exercised in password tests.
      passwordHashCost: 1024,
      ...init
    })
    services.push(auth)
    return auth
  }

  const auth = build(initOverrides)
  if (start) await auth.start()

  return {
    auth,
    store,
    dataDir,
    logs,
    now: clock,
    advance: (seconds) => { time += seconds * 1000 },
    restart: async (init = {}) => {
      const next = build({ ...initOverrides, ...init })
      await next.start()
      return next
    },
    cleanup: async () => {
      for (const service of services) await service.stop()
      await rm(dataDir, { recursive: true, force: true })
    }
  }
}
