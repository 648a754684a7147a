import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import {
  archOf, classifyFailure, guestOsOf, guestOsOfOsType, isPrlctlExecFailure, parseArch, parseConfigPvs, parseDhcpLeases, parseDiskFree,
  parseHostCpuMemory, parseJsonOutput, parsePrlctlVersion, parseServerInfo, parseSizeMiB, parseSnapshotCreated, parseSnapshotList,
  parseVmInfoList, prlctlMessage, toDriverState
} from '../../../src/drivers/parallels/parse.ts'
import { errorFixture, fixture } from './fake-runner.ts'

describe('parallels parse: prlctl list --info --json', () => {
  it('reads every VM of prlctl-list-all.json', () => {
    const vms = parseVmInfoList(fixture('prlctl-list-all.json'))
    assert.deepEqual(vms.map(v => v.name), ['corral-job42', 'corral-win7', 'corral-mac1', 'Windows 11 (personal)', 'corral-broken'])
    const [job42, win7, mac1, , broken] = vms
    assert.deepEqual(job42, {
      uuid: '5b7d9f8e-2c1a-4e3b-9a6d-0f1e2d3c4b5a',
      name: 'corral-job42',
      state: 'running',
      os: 'ubuntu',
      template: false,
      home: '/Users/ci/Parallels/corral-job42.pvm',
      guestTools: { state: 'installed', version: '20.1.2-55742' },
      cpus: 4,
      memoryMiB: 4096,
      diskMiB: 65536,
      cpuType: 'arm',
      mac: '001c42a1b2c3',
      ipv4: ['10.211.55.7'],
      ipv6: ['fdb2:2c26:f4e4:0:21c:42ff:fea1:b2c3', 'fe80::21c:42ff:fea1:b2c3']
    })
    assert.equal(win7.state, 'stopped')
    assert.deepEqual(win7.ipv4, [])
    assert.equal(guestOsOf(win7.os, win7.home), 'windows')
    assert.equal(mac1.home, '/Users/ci/Parallels/corral-mac1.macvm')
    assert.deepEqual(mac1.guestTools, { state: 'not_installed' })
    assert.equal(guestOsOf(mac1.os, mac1.home), 'macos')
    assert.equal(toDriverState(mac1.state), 'suspended')
    assert.equal(toDriverState(broken.state), 'failed')
  })

  it('reads single-VM info and templates (IDs in braces lose them)', () => {
    assert.equal(parseVmInfoList(fixture('prlctl-info-job42-stopped.json'))[0].state, 'stopped')
    assert.equal(parseVmInfoList(fixture('prlctl-info-job42-suspended.json'))[0].state, 'suspended')
    const templates = parseVmInfoList(fixture('prlctl-list-templates.json'))
    assert.deepEqual(templates.map(t => [t.uuid, t.template, t.os]), [
      ['d2c1b0a9-8f7e-4d6c-9b5a-4e3d2c1b0a98', true, 'ubuntu'],
      ['3f2e1d0c-b9a8-4765-8432-10fedcba9876', true, 'macosx'],
      ['a1b2c3d4-e5f6-4789-abcd-ef0123456789', true, 'win-11']
    ])
  })

  it('empty output is no VMs; a single object is one VM; junk around the JSON is ignored', () => {
    assert.deepEqual(parseVmInfoList(''), [])
    assert.deepEqual(parseVmInfoList('[]\n'), [])
    const one = JSON.stringify({ ID: '{abc}', Name: 'x', State: 'running' })
    assert.equal(parseVmInfoList(one)[0].uuid, 'abc')
    const noisy = 'Warning: some notice\n' + fixture('prlctl-info-job42-running.json') + '\nsomething else'
    assert.equal(parseVmInfoList(noisy)[0].name, 'corral-job42')
    assert.equal(parseJsonOutput('[{"a":"x\u0001y"}]', 't') != null, true)
    assert.throws(() => parseVmInfoList('not json at all'), { name: 'HypervisorError', message: /Parallels Desktop 19 or later/ })
  })

  it('maps every Parallels state to a corral state', () => {
    const cases: Array<[string, string]> = [
      ['running', 'running'], ['starting', 'running'], ['resuming', 'running'], ['continuing', 'running'], ['resetting', 'running'],
      ['stopped', 'stopped'], ['stopping', 'stopped'],
      ['suspended', 'suspended'], ['suspending', 'suspended'], ['paused', 'suspended'], ['pausing', 'suspended'],
      ['invalid', 'failed'], ['unknown', 'failed'], ['', 'failed']
    ]
    for (const [parallels, corral] of cases) assert.equal(toDriverState(parallels), corral, parallels)
  })

  it('guest OS, arch and sizes', () => {
    assert.equal(guestOsOf('win-2022'), 'windows')
    assert.equal(guestOsOf('macosx'), 'macos')
    assert.equal(guestOsOf('other', '/x/y.macvm'), 'macos')
    assert.equal(guestOsOf('debian'), 'linux')
    assert.equal(archOf('arm', 'x86_64'), 'arm64')
    assert.equal(archOf('x86', 'arm64'), 'x86_64')
    assert.equal(archOf(undefined, 'arm64'), 'arm64')
    assert.equal(archOf('mystery', 'x86_64'), 'x86_64')
    assert.equal(parseSizeMiB('4096Mb'), 4096)
    assert.equal(parseSizeMiB('64Gb'), 65536)
    assert.equal(parseSizeMiB('2048Kb'), 2)
    assert.equal(parseSizeMiB('0Mb'), 0)
    assert.equal(parseSizeMiB(512), 512)
    assert.equal(parseSizeMiB('lots'), undefined)
  })
})

describe('parallels parse: host facts', () => {
  it('prlsrvctl info --json', () => {
    assert.deepEqual(parseServerInfo(fixture('prlsrvctl-info.json')), {
      vmHome: '/Users/ci/Parallels', version: '20.1.2', licenseState: 'valid', hostname: 'mac-ci-01.local'
    })
    assert.equal(parseServerInfo(fixture('prlsrvctl-info-license-expired.json')).licenseState, 'expired')
    assert.throws(() => parseServerInfo('{}'), { name: 'HypervisorError', message: /VM home/ })
  })

  it('prlctl --version', () => {
    assert.deepEqual(parsePrlctlVersion(fixture('prlctl-version.txt')), { version: '20.1.2', major: 20, build: '55742' })
    assert.deepEqual(parsePrlctlVersion('prlctl version 10.0.0 (12345) rev 123456'), { version: '10.0.0', major: 10, build: '12345' })
    assert.throws(() => parsePrlctlVersion('command not found'), { name: 'HypervisorError' })
  })

  it('sysctl, uname, df', () => {
    assert.deepEqual(parseHostCpuMemory(fixture('sysctl-cpu-memory.txt')), { cpus: 12, memoryMiB: 32768 })
    assert.throws(() => parseHostCpuMemory('sysctl: unknown oid'), { name: 'HypervisorError', message: /macOS/ })
    assert.equal(parseArch(fixture('uname-m.txt')), 'arm64')
    assert.equal(parseArch('x86_64\n'), 'x86_64')
    assert.throws(() => parseArch('ppc'), { name: 'HypervisorError' })
    assert.deepEqual(parseDiskFree(fixture('df-vm-home.txt')), { totalMiB: 948584, availableMiB: 409600 })
    assert.deepEqual(parseDiskFree('Filesystem 1024-blocks Used Available Capacity Mounted on\nmap auto_home 2048 0 2048 0% /System/Volumes/Data/home\n'),
      { totalMiB: 2, availableMiB: 2 })
    assert.throws(() => parseDiskFree('df: /nope: No such file or directory'), { name: 'HypervisorError' })
  })

  it('DHCP leases: the newest lease for the MAC, whatever its spelling', () => {
    const leases = fixture('parallels_dhcp_leases.txt')
    assert.equal(parseDhcpLeases(leases, '001C42A1B2C3'), '10.211.55.7')
    assert.equal(parseDhcpLeases(leases, '00:1c:42:d4:e5:f6'), '10.211.55.9')
    assert.equal(parseDhcpLeases(leases, '001C42000000'), undefined)
    assert.equal(parseDhcpLeases('', '001C42A1B2C3'), undefined)
  })

  it('config.pvs', () => {
    assert.deepEqual(parseConfigPvs(fixture('config.pvs')), { vmName: 'ubuntu-24.04-arm64', cpus: 2, memoryMiB: 2048, diskMiB: 65536, osType: 9 })
    assert.equal(guestOsOfOsType(9), 'linux')
    assert.equal(guestOsOfOsType(8), 'windows')
    assert.equal(guestOsOfOsType(7), 'macos')
    assert.equal(guestOsOfOsType(255), undefined)
    assert.throws(() => parseConfigPvs('<html></html>'), { name: 'HypervisorError' })
  })

  it('snapshots', () => {
    assert.equal(parseSnapshotCreated(fixture('prlctl-snapshot-create.txt')), 'e78bb2b8-7a99-4c8b-ab9a-491a47648c44')
    assert.throws(() => parseSnapshotCreated('Creating the snapshot...'), { name: 'HypervisorError' })
    assert.deepEqual(parseSnapshotList(fixture('prlctl-snapshot-list.json')), [
      { id: 'e78bb2b8-7a99-4c8b-ab9a-491a47648c44', name: 'clean', date: '2025-01-10 12:00:00', state: 'poweroff', current: false, parent: '' },
      { id: '08ddd014-7d57-4b19-9a82-15940f38e7f0', name: 'tools-installed', date: '2025-01-11 09:30:12', state: 'poweroff', current: true, parent: 'e78bb2b8-7a99-4c8b-ab9a-491a47648c44' }
    ])
    assert.deepEqual(parseSnapshotList(''), [])
  })
})

describe('parallels parse: failures', () => {
  const files = readdirSync(new URL('./fixtures/errors/', import.meta.url)).filter(f => f.endsWith('.json')).map(f => f.replace(/\.json$/, ''))

  it('has an error fixture for VM not found, license limits and a full disk', () => {
    for (const required of ['vm-not-found', 'license-edition', 'license-running-vms-limit', 'disk-full-clone', 'disk-full-start']) {
      assert.ok(files.includes(required), required)
    }
  })

  for (const file of files) {
    it(`maps ${file} to the error its fixture expects`, () => {
      const f = errorFixture(file)
      const err = classifyFailure({ exitCode: f.exitCode, stdout: f.stdout, stderr: f.stderr }, { op: 'do it', vm: 'corral-job42', vmHome: '/Users/ci/Parallels' })
      assert.equal(err.name, f.expect)
      // prlctl's own words are kept, so nothing it said is lost.
      assert.ok(err.message.includes(prlctlMessage(f).slice(0, 40)), err.message)
      assert.equal(err.details.exitCode, f.exitCode)
    })
  }

  it('messages say what to do', () => {
    const msg = (name: string): string => {
      const f = errorFixture(name)
      return classifyFailure({ exitCode: f.exitCode, stdout: f.stdout, stderr: f.stderr }, { op: 'start', vm: 'corral-job42', vmHome: '/Users/ci/Parallels' }).message
    }
    assert.match(msg('vm-not-found'), /deleted or unregistered outside corral.*recreate/)
    assert.match(msg('license-edition'), /Pro or Business edition.*prlsrvctl info --license/)
    assert.match(msg('license-running-vms-limit'), /two macOS guests at once.*stop a VM here or run this one on another host/)
    assert.match(msg('license-expired'), /activate or renew/)
    assert.match(msg('disk-full-clone'), /free space in \/Users\/ci\/Parallels/)
    assert.match(msg('disk-full-start'), /delete VMs that are no longer needed/)
    assert.match(msg('tools-unavailable-exec'), /install Parallels Tools in the template/)
    assert.match(msg('service-unreachable'), /start Parallels Desktop/)
    assert.match(msg('vm-not-running-exec'), /start it first/)
  })

  it('a timed-out prlctl call is a HypervisorError that says so', () => {
    const err = classifyFailure({ exitCode: 143, stdout: '', stderr: '', timedOut: true }, { op: 'clone', vm: 'corral-a' })
    assert.equal(err.name, 'HypervisorError')
    assert.match(err.message, /did not finish "clone" corral-a in time/)
  })

  it('exec: the guest command\'s own exit codes are not prlctl failures', () => {
    assert.equal(isPrlctlExecFailure({ exitCode: 0, stdout: 'x', stderr: '' }), false)
    assert.equal(isPrlctlExecFailure({ exitCode: 2, stdout: '', stderr: 'ls: cannot access' }), false)
    assert.equal(isPrlctlExecFailure({ exitCode: 255, stdout: '', stderr: 'my tool: fatal\n' }), false)
    assert.equal(isPrlctlExecFailure({ exitCode: 254, stdout: '', stderr: '' }), false)
    for (const name of ['tools-unavailable-exec', 'vm-not-running-exec', 'vm-not-found', 'service-unreachable']) {
      const f = errorFixture(name)
      assert.equal(isPrlctlExecFailure({ exitCode: f.exitCode, stdout: f.stdout, stderr: f.stderr }), true, name)
    }
    assert.equal(isPrlctlExecFailure({ exitCode: 255, stdout: '', stderr: 'Failed to x', timedOut: true }), false)
  })
})
