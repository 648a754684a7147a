import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'

/** What `corral login` remembers: the server and a token for it. */
export interface Session {
  server: string
  token: string
  expiresAt?: string
}

export function sessionFile (env: Record<string, string | undefined>): string {
  const base = env.CORRAL_CONFIG_DIR ?? join(env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'corral')
  return join(base, 'session.json')
}

export async function loadSession (file: string): Promise<Session | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Session
  } catch {
    return undefined
  }
}

/** Written 0600: the token is a credential. */
export async function saveSession (file: string, session: Session): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  await writeFile(file, JSON.stringify(session, null, 2) + '\n', { mode: 0o600 })
  await chmod(file, 0o600)
}
