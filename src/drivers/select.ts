import type { DriverName } from './types.ts'
import { DriverUnavailableError } from './errors.ts'

export interface DriverProbe {
  /** Full path of an executable on PATH, or undefined. */
  which: (command: string) => string | undefined
  platform: NodeJS.Platform
  /** qemu's name for the host architecture, e.g. x86_64 or aarch64. */
  qemuArch: string
}

/**
 * Which driver a node runs. `auto` finds prlctl, then qemu; it never falls back to sim, because a
 * simulated host that quietly accepts CI jobs would be worse than a node that refuses to start.
 */
export function selectDriver (requested: 'auto' | DriverName, probe: DriverProbe): DriverName {
  const qemuBinary = `qemu-system-${probe.qemuArch}`
  if (requested === 'sim') return 'sim'
  if (requested === 'parallels') {
    if (probe.which('prlctl') == null) throw new DriverUnavailableError('driver "parallels" was asked for but prlctl is not on PATH: install Parallels Desktop Pro or Business edition (it provides prlctl), or choose another driver with CORRAL_DRIVER', { driver: 'parallels' })
    return 'parallels'
  }
  if (requested === 'qemu') {
    if (probe.which(qemuBinary) == null) throw new DriverUnavailableError(`driver "qemu" was asked for but ${qemuBinary} is not on PATH: ${qemuInstallHint(probe.platform)}`, { driver: 'qemu' })
    return 'qemu'
  }
  if (probe.which('prlctl') != null) return 'parallels'
  if (probe.which(qemuBinary) != null) return 'qemu'
  throw new DriverUnavailableError(
    `no hypervisor found: looked for prlctl (Parallels Desktop) and ${qemuBinary} (QEMU) on PATH. ` +
    `Install one (${qemuInstallHint(probe.platform)}; on a Mac, Parallels Desktop Pro or Business), ` +
    'or run simulated VMs on purpose with CORRAL_DRIVER=sim (or --driver sim).',
    { looked: ['prlctl', qemuBinary] })
}

function qemuInstallHint (platform: NodeJS.Platform): string {
  if (platform === 'darwin') return 'brew install qemu'
  return 'on Debian or Ubuntu: sudo apt-get install qemu-system-x86 qemu-utils'
}

export const qemuArchOf = (nodeArch: string): string => nodeArch === 'arm64' ? 'aarch64' : 'x86_64'
