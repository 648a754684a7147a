import type { GuestOs } from '../types.ts'
import { HypervisorError } from '../errors.ts'

/**
 * How a corral exec request becomes the words after `prlctl exec <vm>`.
 *
 * prlctl does not hand argv to the guest as argv. On Linux and macOS guests it joins its arguments
 * with spaces and the guest runs the result through a shell (prlctl(8): "run via bash -c"; observed on
 * macOS guests, openclaw/crabbox#2396), so an argument such as `set -eu; make` would be split again.
 * corral therefore sends ONE argument: a complete POSIX command line in which every word is
 * single-quoted, which that shell parses back into exactly the argv that was asked for.
 *
 * Windows guests treat the first word as the program (a single joined string fails with exit 2,
 * observed on PD 26), and cmd.exe-style re-parsing mangles quotes, so corral runs PowerShell with an
 * -EncodedCommand (base64 of UTF-16LE): four words with no spaces or quotes, immune to either rule.
 */
export function guestCommandWords (os: GuestOs, command: string[], env: Record<string, string> = {}): string[] {
  if (command.length === 0 || command[0] === '') throw new HypervisorError('exec needs a command: the first word names the program to run in the guest')
  for (const key of Object.keys(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new HypervisorError(`environment variable name ${JSON.stringify(key)} is not valid: use letters, digits and _ and do not start with a digit`)
    }
  }
  return os === 'windows' ? powershellWords(command, env) : [posixCommandLine(command, env)]
}

/** `'it'"'"'s'`: single quotes keep every byte literal in sh, bash and zsh. */
export function posixQuote (word: string): string {
  return `'${word.replaceAll("'", `'"'"'`)}'`
}

/**
 * One shell command line. Environment goes through `env K=V ...` so it reaches exactly this command.
 * prlctl refuses a literal backslash-newline and some guests split lines, so a command containing a
 * newline travels base64-encoded and is decoded by the guest's own shell.
 */
export function posixCommandLine (command: string[], env: Record<string, string> = {}): string {
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${v}`)
  const words = assignments.length > 0 ? ['env', ...assignments, ...command] : command
  const line = words.map(posixQuote).join(' ')
  if (!/[\r\n]/.test(line)) return line
  const encoded = Buffer.from(line, 'utf8').toString('base64')
  return `/bin/sh -c "$(printf %s ${encoded} | base64 --decode)"`
}

/** CommandLineToArgvW quoting, so the program receives each argument intact. */
export function windowsArgQuote (arg: string): string {
  if (arg !== '' && !/[\s"]/.test(arg)) return arg
  let out = '"'
  let backslashes = 0
  for (const ch of arg) {
    if (ch === '\\') {
      backslashes++
      continue
    }
    if (ch === '"') {
      out += '\\'.repeat(backslashes * 2 + 1) + '"'
    } else {
      out += '\\'.repeat(backslashes) + ch
    }
    backslashes = 0
  }
  return out + '\\'.repeat(backslashes * 2) + '"'
}

const psQuote = (s: string): string => `'${s.replaceAll("'", "''")}'`

/**
 * The PowerShell script run in Windows guests. It starts the program through ProcessStartInfo with a
 * command line quoted here (Windows PowerShell 5.1 quotes native arguments wrongly), lets the child
 * write to prlctl's own stdout/stderr, and exits with the child's code.
 */
export function powershellScript (command: string[], env: Record<string, string> = {}): string {
  const [program, ...args] = command
  const lines = [
    "$ErrorActionPreference = 'Stop'",
    "$ProgressPreference = 'SilentlyContinue'",
    '$psi = New-Object System.Diagnostics.ProcessStartInfo',
    `$psi.FileName = ${psQuote(program)}`,
    `$psi.Arguments = ${psQuote(args.map(windowsArgQuote).join(' '))}`,
    '$psi.UseShellExecute = $false',
    ...Object.entries(env).map(([k, v]) => `$psi.EnvironmentVariables[${psQuote(k)}] = ${psQuote(v)}`),
    '$p = [System.Diagnostics.Process]::Start($psi)',
    '$p.WaitForExit()',
    'exit $p.ExitCode'
  ]
  return lines.join('\n')
}

export function powershellWords (command: string[], env: Record<string, string> = {}): string[] {
  const encoded = Buffer.from(powershellScript(command, env), 'utf16le').toString('base64')
  return ['powershell.exe', '-NoProfile', '-NonInteractive', '-EncodedCommand', encoded]
}
