import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import * as cmd from '../../../src/drivers/parallels/commands.ts'
import {
  posixCommandLine, posixQuote, powershellScript, powershellWords, windowsArgQuote
} from '../../../src/drivers/parallels/guest-command.ts'

describe('parallels commands: argv for every operation', () => {
  it('names corral VMs corral-<id> and refuses ids that could read as options', () => {
    assert.equal(cmd.vmName('job42'), 'corral-job42')
    assert.equal(cmd.idFromVmName('corral-job42'), 'job42')
    assert.equal(cmd.idFromVmName('Windows 11 (personal)'), undefined)
    assert.equal(cmd.idFromVmName('corral-'), undefined)
    assert.throws(() => cmd.vmName('-rf'), { name: 'HypervisorError' })
    assert.throws(() => cmd.vmName('a b'), { name: 'HypervisorError' })
    assert.throws(() => cmd.vmName(''), { name: 'HypervisorError' })
  })

  it('queries', () => {
    assert.deepEqual(cmd.prlctlVersion(), ['prlctl', '--version'])
    assert.deepEqual(cmd.serverInfo(), ['prlsrvctl', 'info', '--json'])
    assert.deepEqual(cmd.listVms(), ['prlctl', 'list', '--all', '--info', '--json'])
    assert.deepEqual(cmd.vmInfo('corral-job42'), ['prlctl', 'list', 'corral-job42', '--all', '--info', '--json'])
    assert.deepEqual(cmd.listTemplates(), ['prlctl', 'list', '--all', '--template', '--info', '--json'])
    assert.deepEqual(cmd.hostCpuMemory(), ['sysctl', '-n', 'hw.logicalcpu', 'hw.memsize'])
    assert.deepEqual(cmd.hostArch(), ['uname', '-m'])
    assert.deepEqual(cmd.diskFree('/Users/ci/Parallels'), ['df', '-Pk', '/Users/ci/Parallels'])
  })

  it('clone: linked unless told otherwise, destination only when configured', () => {
    assert.deepEqual(cmd.clone('d2c1b0a9', 'corral-a', { linked: true }), ['prlctl', 'clone', 'd2c1b0a9', '--name', 'corral-a', '--linked'])
    assert.deepEqual(cmd.clone('d2c1b0a9', 'corral-a', { linked: false, destination: '/Volumes/VMs' }),
      ['prlctl', 'clone', 'd2c1b0a9', '--name', 'corral-a', '--dst', '/Volumes/VMs'])
    assert.deepEqual(cmd.register('/Users/ci/x.pvm'), ['prlctl', 'register', '/Users/ci/x.pvm'])
    assert.deepEqual(cmd.setResources('corral-a', 4, 8192), ['prlctl', 'set', 'corral-a', '--cpus', '4', '--memsize', '8192'])
  })

  it('power operations', () => {
    assert.deepEqual(cmd.start('corral-a'), ['prlctl', 'start', 'corral-a'])
    assert.deepEqual(cmd.stop('corral-a', 'graceful'), ['prlctl', 'stop', 'corral-a'])
    assert.deepEqual(cmd.stop('corral-a', 'kill'), ['prlctl', 'stop', 'corral-a', '--kill'])
    assert.deepEqual(cmd.stop('corral-a', 'drop-state'), ['prlctl', 'stop', 'corral-a', '--drop-state'])
    assert.deepEqual(cmd.suspend('corral-a'), ['prlctl', 'suspend', 'corral-a'])
    assert.deepEqual(cmd.resume('corral-a'), ['prlctl', 'resume', 'corral-a'])
    assert.deepEqual(cmd.restart('corral-a'), ['prlctl', 'restart', 'corral-a'])
    assert.deepEqual(cmd.reset('corral-a'), ['prlctl', 'reset', 'corral-a'])
    assert.deepEqual(cmd.remove('corral-a'), ['prlctl', 'delete', 'corral-a'])
  })

  it('snapshots', () => {
    assert.deepEqual(cmd.snapshotCreate('corral-a', 'clean'), ['prlctl', 'snapshot', 'corral-a', '--name', 'clean'])
    assert.deepEqual(cmd.snapshotCreate('corral-a', 'clean', 'before tests'), ['prlctl', 'snapshot', 'corral-a', '--name', 'clean', '--description', 'before tests'])
    assert.deepEqual(cmd.snapshotList('corral-a'), ['prlctl', 'snapshot-list', 'corral-a', '--json'])
    assert.deepEqual(cmd.snapshotSwitch('corral-a', 'e78b'), ['prlctl', 'snapshot-switch', 'corral-a', '--id', 'e78b'])
    assert.deepEqual(cmd.snapshotSwitch('corral-a', 'e78b', { skipResume: true }), ['prlctl', 'snapshot-switch', 'corral-a', '--id', 'e78b', '--skip-resume'])
    assert.deepEqual(cmd.snapshotDelete('corral-a', 'e78b'), ['prlctl', 'snapshot-delete', 'corral-a', '--id', 'e78b'])
    assert.deepEqual(cmd.snapshotDelete('corral-a', 'e78b', { children: true }), ['prlctl', 'snapshot-delete', 'corral-a', '--id', 'e78b', '--children'])
  })

  it('exec on Linux/macOS: one shell-quoted word after the VM name', () => {
    assert.deepEqual(cmd.exec('corral-a', 'linux', ['uname', '-a']), ['prlctl', 'exec', 'corral-a', "'uname' '-a'"])
    assert.deepEqual(cmd.exec('corral-a', 'macos', ['make', 'test'], { CI: 'true' }, { currentUser: true }),
      ['prlctl', 'exec', 'corral-a', '--current-user', "'env' 'CI=true' 'make' 'test'"])
  })

  it('exec on Windows: PowerShell with an encoded script, no spaces in any word', () => {
    const argv = cmd.exec('corral-w', 'windows', ['cmd.exe', '/c', 'echo hi'])
    assert.deepEqual(argv.slice(0, 7), ['prlctl', 'exec', 'corral-w', 'powershell.exe', '-NoProfile', '-NonInteractive', '-EncodedCommand'])
    assert.equal(argv.length, 8)
    assert.match(argv[7], /^[A-Za-z0-9+/=]+$/)
    const script = Buffer.from(argv[7], 'base64').toString('utf16le')
    assert.equal(script, powershellScript(['cmd.exe', '/c', 'echo hi']))
  })

  it('exec refuses an empty command and bad environment names', () => {
    assert.throws(() => cmd.exec('corral-a', 'linux', []), { name: 'HypervisorError' })
    assert.throws(() => cmd.exec('corral-a', 'linux', ['true'], { 'A-B': '1' }), { name: 'HypervisorError', message: /A-B/ })
    assert.throws(() => cmd.exec('corral-a', 'linux', ['true'], { '1A': '1' }), { name: 'HypervisorError' })
  })
})

/** What a shell that re-parses the command line hands to the program: its argv, NUL-separated. */
function argvAfterShell (line: string): string[] {
  const out = execFileSync('/bin/sh', ['-c', `set -- ${line}; printf '%s\\0' "$@"`], { encoding: 'utf8' })
  return out.split('\0').slice(0, -1)
}

describe('parallels guest command quoting', () => {
  it('single quotes survive a POSIX shell word for word', () => {
    const tricky = ['printf', '%s|', 'two words', "it's", '$HOME', '`id`', '"dq"', 'a\\b', '*', '', ';rm -rf /']
    const line = posixCommandLine(tricky)
    // The guest shell parses the line; `sh -c` with the line as its script reproduces that.
    const out = execFileSync('/bin/sh', ['-c', line], { encoding: 'utf8' })
    assert.equal(out, tricky.slice(2).map(w => `${w}|`).join(''))
    assert.equal(posixQuote("it's"), `'it'"'"'s'`)
  })

  it('environment reaches the command through env', () => {
    const line = posixCommandLine(['sh', '-c', 'printf %s "$GREETING"'], { GREETING: "hello 'world' $USER" })
    assert.equal(execFileSync('/bin/sh', ['-c', line], { encoding: 'utf8' }), "hello 'world' $USER")
  })

  it('a command containing newlines travels base64-encoded and still runs exactly', () => {
    const script = 'set -eu\nprintf "%s\\n" first\nprintf "%s\\n" "$1"'
    const line = posixCommandLine(['sh', '-c', script, 'sh', 'arg one'])
    assert.doesNotMatch(line, /\n/)
    assert.match(line, /base64 --decode/)
    assert.equal(execFileSync('/bin/sh', ['-c', line], { encoding: 'utf8' }), 'first\narg one\n')
  })

  it('argvAfterShell helper agrees with the quoting', () => {
    assert.deepEqual(argvAfterShell(posixCommandLine(['a b', 'c'])), ['a b', 'c'])
  })

  it('Windows arguments follow CommandLineToArgvW rules', () => {
    assert.equal(windowsArgQuote('plain'), 'plain')
    assert.equal(windowsArgQuote(''), '""')
    assert.equal(windowsArgQuote('two words'), '"two words"')
    assert.equal(windowsArgQuote('say "hi"'), '"say \\"hi\\""')
    assert.equal(windowsArgQuote('C:\\dir with space\\'), '"C:\\dir with space\\\\"')
    assert.equal(windowsArgQuote('a\\\\"b'), '"a\\\\\\\\\\"b"')
  })

  it('the PowerShell script sets environment, quotes single quotes, and exits with the child code', () => {
    const script = powershellScript(['C:\\tools\\run.exe', "it's", 'x y'], { TOKEN: "a'b" })
    assert.match(script, /\$psi\.FileName = 'C:\\tools\\run\.exe'/)
    assert.match(script, /\$psi\.Arguments = 'it''s "x y"'/)
    assert.match(script, /\$psi\.EnvironmentVariables\['TOKEN'\] = 'a''b'/)
    assert.match(script, /exit \$p\.ExitCode$/)
    const words = powershellWords(['whoami'])
    assert.equal(Buffer.from(words[4], 'base64').toString('utf16le'), powershellScript(['whoami']))
  })
})
