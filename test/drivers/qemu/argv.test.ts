import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { buildQemuArgv, escapeOptionValue, qemuBinaryFor, type QemuLaunch } from '../../../src/drivers/qemu/argv.ts'

const launch = (over: Partial<QemuLaunch> = {}): QemuLaunch => ({
  vmId: 'vm-1',
  arch: 'x86_64',
  accelerator: 'tcg',
  cpus: 2,
  memoryMiB: 512,
  overlayPath: '/data/vms/vm-1/overlay.qcow2',
  kernelPath: '/images/guest/vmlinuz',
  initrdPath: '/images/guest/initrd.img',
  cmdline: 'console=ttyS0',
  forwards: [{ hostPort: 40000, guestPort: 80 }, { hostPort: 40001, guestPort: 22 }],
  qmpSocket: '/data/vms/vm-1/qmp.sock',
  agentSocket: '/data/vms/vm-1/qga.sock',
  consoleLog: '/data/vms/vm-1/console.log',
  pidFile: '/data/vms/vm-1/qemu.pid',
  ...over
})

/** The value following `flag` (the first, or the nth occurrence). */
const after = (argv: string[], flag: string, nth = 0): string | undefined => {
  const indexes = argv.flatMap((a, i) => a === flag ? [i] : [])
  const i = indexes[nth]
  return i == null ? undefined : argv[i + 1]
}

describe('buildQemuArgv', () => {
  it('uses the pc machine with TCG and never microvm, with no -cpu host', () => {
    const argv = buildQemuArgv(launch())
    assert.equal(after(argv, '-M'), 'pc')
    assert.equal(after(argv, '-accel'), 'tcg')
    assert.equal(argv.includes('-cpu'), false)
    assert.equal(argv.some(a => a.includes('microvm')), false)
  })

  it('passes -cpu host with KVM and honours a q35 image', () => {
    const argv = buildQemuArgv(launch({ accelerator: 'kvm', machine: 'q35' }))
    assert.equal(after(argv, '-accel'), 'kvm')
    assert.equal(after(argv, '-cpu'), 'host')
    assert.equal(after(argv, '-M'), 'q35')
  })

  it('sizes memory and CPUs and boots the overlay, kernel, initrd and cmdline', () => {
    const argv = buildQemuArgv(launch())
    assert.equal(after(argv, '-m'), '512')
    assert.equal(after(argv, '-smp'), '2')
    assert.match(after(argv, '-drive') ?? '', /^file=\/data\/vms\/vm-1\/overlay\.qcow2,if=virtio,format=qcow2/)
    assert.equal(after(argv, '-kernel'), '/images/guest/vmlinuz')
    assert.equal(after(argv, '-initrd'), '/images/guest/initrd.img')
    assert.equal(after(argv, '-append'), 'console=ttyS0')
  })

  it('omits the drive and kernel options an image does not have', () => {
    const argv = buildQemuArgv(launch({ overlayPath: undefined, kernelPath: undefined, initrdPath: undefined, cmdline: 'ignored' }))
    for (const flag of ['-drive', '-kernel', '-initrd', '-append']) assert.equal(argv.includes(flag), false, flag)
  })

  it('binds every forward to 127.0.0.1 on user-mode networking', () => {
    const argv = buildQemuArgv(launch())
    assert.equal(after(argv, '-netdev'), 'user,id=net0,hostfwd=tcp:127.0.0.1:40000-:80,hostfwd=tcp:127.0.0.1:40001-:22')
    assert.ok(argv.includes('virtio-net-pci,netdev=net0,romfile='))
  })

  it('wires QMP, the guest agent port, the console file, the pidfile and daemonizes', () => {
    const argv = buildQemuArgv(launch())
    assert.ok(argv.includes('socket,id=qmp0,path=/data/vms/vm-1/qmp.sock,server=on,wait=off'))
    assert.ok(argv.includes('chardev=qmp0,mode=control'))
    assert.ok(argv.includes('socket,id=qga0,path=/data/vms/vm-1/qga.sock,server=on,wait=off'))
    assert.ok(argv.includes('virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0'))
    assert.ok(argv.includes('file,id=console0,path=/data/vms/vm-1/console.log'))
    assert.equal(after(argv, '-serial'), 'chardev:console0')
    assert.equal(after(argv, '-pidfile'), '/data/vms/vm-1/qemu.pid')
    assert.ok(argv.includes('-daemonize'))
    assert.ok(argv.includes('-nodefaults'))
    assert.equal(after(argv, '-display'), 'none')
  })

  it('leaves the agent out for images without one', () => {
    const argv = buildQemuArgv(launch({ agentSocket: undefined }))
    assert.equal(argv.some(a => a.includes('qga0') || a.includes('virtio-serial')), false)
  })

  it('doubles commas inside option values', () => {
    assert.equal(escapeOptionValue('/a,b/c'), '/a,,b/c')
    const argv = buildQemuArgv(launch({ overlayPath: '/odd,dir/overlay.qcow2' }))
    assert.match(after(argv, '-drive') ?? '', /^file=\/odd,,dir\/overlay\.qcow2,/)
  })

  it('uses the virt machine for arm64 guests', () => {
    const argv = buildQemuArgv(launch({ arch: 'arm64' }))
    assert.equal(after(argv, '-M'), 'virt')
    assert.equal(after(argv, '-cpu'), 'max')
    assert.equal(qemuBinaryFor('arm64'), 'qemu-system-aarch64')
    assert.equal(qemuBinaryFor('x86_64'), 'qemu-system-x86_64')
  })
})
