import type { GuestOs } from '../types.ts'

export interface SimCommandResult {
  exitCode: number
  stdout: string
  stderr: string
  /** Simulated run time; `sleep N` uses it so exec timeouts can be exercised. */
  durationMs?: number
}

export interface SimGuest {
  id: string
  name: string
  os: GuestOs
  arch: string
}

export const simCommandNames = ['echo', 'uname', 'hostname', 'whoami', 'true', 'false', 'exit', 'sleep', 'env', 'cat'] as const

/**
 * The small command set a simulated guest answers. Enough for CI smoke tests and benchmarks; anything
 * else exits 127 with a message listing what sim understands.
 */
export function runSimCommand (guest: SimGuest, command: string[], env: Record<string, string>): SimCommandResult {
  const [name, ...args] = command
  const ok = (stdout: string): SimCommandResult => ({ exitCode: 0, stdout, stderr: '' })
  switch (name) {
    case 'echo': return ok(args.join(' ') + '\n')
    case 'uname': {
      const kernel = guest.os === 'macos' ? 'Darwin' : guest.os === 'windows' ? 'Windows_NT' : 'Linux'
      return ok((args.includes('-a') ? `${kernel} ${guest.name} simulated ${guest.arch} (corral sim)` : kernel) + '\n')
    }
    case 'hostname': return ok(guest.name + '\n')
    case 'whoami': return ok((guest.os === 'windows' ? 'corral\\ci' : 'ci') + '\n')
    case 'true': return ok('')
    case 'false': return { exitCode: 1, stdout: '', stderr: '' }
    case 'exit': {
      const code = Number(args[0] ?? 0)
      return { exitCode: Number.isInteger(code) && code >= 0 && code <= 255 ? code : 2, stdout: '', stderr: '' }
    }
    case 'sleep': {
      const seconds = Number(args[0])
      if (!Number.isFinite(seconds) || seconds < 0) return { exitCode: 1, stdout: '', stderr: `sleep: invalid time interval '${args[0] ?? ''}'\n` }
      return { exitCode: 0, stdout: '', stderr: '', durationMs: seconds * 1000 }
    }
    case 'env': return ok(Object.entries(env).map(([k, v]) => `${k}=${v}\n`).join(''))
    case 'cat':
      if (args[0] === '/etc/os-release') return ok(`NAME="corral simulated ${guest.os}"\nID=corral-sim\n`)
      return { exitCode: 1, stdout: '', stderr: `cat: ${args[0] ?? ''}: No such file or directory\n` }
    default:
      return {
        exitCode: 127,
        stdout: '',
        stderr: `sim: command not found: ${name ?? ''} (a simulated guest understands: ${simCommandNames.join(', ')})\n`
      }
  }
}
