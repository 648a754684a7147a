import { readFileSync } from 'node:fs'
import { Command, Option, CommanderError } from 'commander'
import { CorralError } from '../errors.ts'
import { CliError } from './errors.ts'
import { nodeCommand } from './node-command.ts'

const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version
// The CLI is the only place that reads the environment; everything below gets values passed in.
const env = process.env

// `--version` alone prints the version; anywhere else it belongs to a subcommand (`corral catalog
// push --version 1.2`), which commander would otherwise take for the program's version flag.
if (process.argv.length === 3 && process.argv[2] === '--version') {
  process.stdout.write(`${version}\n`)
  process.exit(0)
}

const program = new Command('corral')
  .version(version, '-V', 'output the version number (also: corral --version)')
  .description('disposable VMs for CI across a mesh of hosts')
  .addOption(new Option('--server <url>', 'node to talk to').env('CORRAL_URL'))
  .addOption(new Option('--token <token>', 'token to use instead of the saved login').env('CORRAL_TOKEN'))
  .addOption(new Option('--api-key <key>', 'API key to use instead of a token').env('CORRAL_API_KEY'))
  .option('--json', 'machine-readable output')
  .exitOverride()

program.addCommand(nodeCommand(version, env))
// `corral node` runs for weeks and needs none of the client commands: neither their modules nor
// their ~40 commander objects (0.2 MB of live heap the node would keep). Every other run (help, a
// typo commander suggests a fix for) gets them all. The subcommand is found as bin/corral.js does.
const args = process.argv.slice(2)
const subcommand = args.find((arg, i) => !arg.startsWith('-') && !['--server', '--token', '--api-key'].includes(args[i - 1]))
if (subcommand !== 'node') {
  const { clientCommands } = await import('./client-commands.ts')
  for (const command of clientCommands(env)) program.addCommand(command)
}

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode
  } else if (err instanceof CliError) {
    process.stderr.write(`corral: ${err.message}\n`)
    process.exitCode = err.exitCode
  } else if (err instanceof CorralError) {
    process.stderr.write(`corral: ${err.message}\n`)
    process.exitCode = 1
  } else {
    process.stderr.write(`corral: unexpected error: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
}
