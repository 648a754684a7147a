import type { Arch } from '../types.ts'
import type { AcceleratorName } from './accelerator.ts'

/** Everything one qemu launch needs; paths are absolute. */
export interface QemuLaunch {
  vmId: string
  arch: Arch
  accelerator: AcceleratorName
  machine?: 'pc' | 'q35'
  cpus: number
  memoryMiB: number
  /** The VM's qcow2 overlay (linked clone), if the image has a disk. */
  overlayPath?: string
  kernelPath?: string
  initrdPath?: string
  cmdline?: string
  forwards: Array<{ hostPort: number, guestPort: number }>
  qmpSocket: string
  /** virtio-serial port org.qemu.guest_agent.0; omitted for images without an agent. */
  agentSocket?: string
  consoleLog: string
  pidFile: string
}

/** The name of the netdev, used again by hostfwd_add at run time. */
export const NETDEV_ID = 'net0'
export const AGENT_PORT_NAME = 'org.qemu.guest_agent.0'

/** QEMU's option syntax splits on commas; a literal comma in a value is written twice. */
export const escapeOptionValue = (value: string): string => value.replaceAll(',', ',,')

export const qemuBinaryFor = (arch: Arch): string => arch === 'arm64' ? 'qemu-system-aarch64' : 'qemu-system-x86_64'

/**
 * The qemu command line for one VM. qemu daemonizes (so VMs outlive the node), writes a pidfile and
 * is driven through QMP; the console goes to a file. Networking is user-mode with every forward bound
 * to 127.0.0.1. No microvm: it hangs under TCG ("Unable to calibrate against PIT").
 */
export function buildQemuArgv (launch: QemuLaunch): string[] {
  const o = escapeOptionValue
  const argv: string[] = ['-name', `corral-${launch.vmId}`, '-nodefaults', '-no-user-config', '-display', 'none']
  if (launch.arch === 'arm64') {
    argv.push('-M', 'virt', '-accel', launch.accelerator, '-cpu', launch.accelerator === 'tcg' ? 'max' : 'host')
  } else {
    argv.push('-M', launch.machine ?? 'pc', '-accel', launch.accelerator)
    // Under TCG the default CPU model is the portable choice; `host` exists only with real acceleration.
    if (launch.accelerator !== 'tcg') argv.push('-cpu', 'host')
  }
  argv.push('-m', `${launch.memoryMiB}`, '-smp', `${launch.cpus}`)
  if (launch.overlayPath != null) argv.push('-drive', `file=${o(launch.overlayPath)},if=virtio,format=qcow2,cache=writeback,discard=unmap`)
  if (launch.kernelPath != null) argv.push('-kernel', launch.kernelPath)
  if (launch.initrdPath != null) argv.push('-initrd', launch.initrdPath)
  if (launch.cmdline != null && launch.kernelPath != null) argv.push('-append', launch.cmdline)

  const hostfwds = launch.forwards.map(f => `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`).join('')
  // romfile= skips the iPXE option ROM: corral never network-boots, and it slows the BIOS down.
  argv.push('-netdev', `user,id=${NETDEV_ID}${hostfwds}`, '-device', `virtio-net-pci,netdev=${NETDEV_ID},romfile=`)

  if (launch.agentSocket != null) {
    argv.push(
      '-chardev', `socket,id=qga0,path=${o(launch.agentSocket)},server=on,wait=off`,
      '-device', 'virtio-serial-pci,id=vser0',
      '-device', `virtserialport,bus=vser0.0,chardev=qga0,name=${AGENT_PORT_NAME}`)
  }
  argv.push(
    '-chardev', `socket,id=qmp0,path=${o(launch.qmpSocket)},server=on,wait=off`,
    '-mon', 'chardev=qmp0,mode=control',
    '-chardev', `file,id=console0,path=${o(launch.consoleLog)}`,
    '-serial', 'chardev:console0',
    '-pidfile', launch.pidFile,
    '-daemonize')
  return argv
}
