import { execFile } from 'node:child_process'
import { constants as fsConstants } from 'node:fs'
import { access, readFile } from 'node:fs/promises'
import { promisify } from 'node:util'

export type AcceleratorName = 'kvm' | 'hvf' | 'tcg'
export type AcceleratorSetting = 'auto' | AcceleratorName

/** What the host says about hardware virtualisation; gathered by probeAcceleratorFacts. */
export interface AcceleratorFacts {
  platform: NodeJS.Platform
  /** Node's name for the CPU architecture (x64, arm64). */
  arch: string
  /** Flags from /proc/cpuinfo (Linux only; undefined when unreadable). */
  cpuFlags?: ReadonlySet<string>
  /** Whether /dev/kvm opens for reading and writing. */
  kvm: 'usable' | 'missing' | 'denied'
  /** macOS: sysctl kern.hv_support says the Hypervisor framework works. */
  hvf: boolean
}

export interface AcceleratorChoice {
  name: AcceleratorName
  /** One sentence for logs, the VM record and HostCapacity.accelerator. */
  reason: string
}

/**
 * Picks how QEMU runs guests. A /dev/kvm that opens is not enough: a nested, paravirtual KVM (such as
 * kvm_pvm) answers but a guest barely boots under it, and the CPU then shows neither vmx nor svm. So
 * on x86 KVM needs the flag as well; anything short of real hardware virtualisation means TCG.
 */
export function chooseAccelerator (setting: AcceleratorSetting, facts: AcceleratorFacts): AcceleratorChoice {
  const detected = detectAccelerator(facts)
  if (setting === 'auto') return detected
  if (setting === detected.name) return { name: setting, reason: `forced by config (accelerator: ${setting}); detection agrees: ${detected.reason}` }
  return { name: setting, reason: `forced by config (accelerator: ${setting}); detection alone would have chosen ${detected.name}: ${detected.reason}` }
}

function detectAccelerator (facts: AcceleratorFacts): AcceleratorChoice {
  if (facts.platform === 'darwin') {
    return facts.hvf
      ? { name: 'hvf', reason: 'macOS reports the Hypervisor framework available (kern.hv_support=1)' }
      : { name: 'tcg', reason: 'macOS reports no Hypervisor framework (kern.hv_support is not 1), so guests are emulated' }
  }
  if (facts.platform !== 'linux') return { name: 'tcg', reason: `no hardware accelerator is supported on ${facts.platform}, so guests are emulated` }
  if (facts.kvm === 'missing') return { name: 'tcg', reason: '/dev/kvm does not exist (no KVM module loaded or no virtualisation), so guests are emulated' }
  if (facts.kvm === 'denied') return { name: 'tcg', reason: '/dev/kvm exists but is not readable and writable by this user (add it to the kvm group), so guests are emulated' }
  if (facts.arch === 'x64' || facts.arch === 'ia32') {
    const flags = facts.cpuFlags
    if (flags == null) return { name: 'tcg', reason: '/dev/kvm opens but /proc/cpuinfo could not be read to confirm vmx or svm, so guests are emulated' }
    if (flags.has('vmx')) return { name: 'kvm', reason: '/dev/kvm opens and the CPU has vmx (Intel VT-x)' }
    if (flags.has('svm')) return { name: 'kvm', reason: '/dev/kvm opens and the CPU has svm (AMD-V)' }
    return { name: 'tcg', reason: '/dev/kvm opens but the CPU has neither vmx nor svm: it is a nested or paravirtual KVM under which guests barely boot, so guests are emulated' }
  }
  // Arm CPUs do not list virtualisation in /proc/cpuinfo; a /dev/kvm that opens is the best evidence.
  return { name: 'kvm', reason: `/dev/kvm opens on ${facts.arch} (no CPU flag to confirm it there)` }
}

/** Reads the facts chooseAccelerator needs from this host. Never throws: unknowns fall back to TCG. */
export async function probeAcceleratorFacts (): Promise<AcceleratorFacts> {
  const platform = process.platform
  const facts: AcceleratorFacts = { platform, arch: process.arch, kvm: 'missing', hvf: false }
  if (platform === 'linux') {
    facts.cpuFlags = await readCpuFlags()
    facts.kvm = await probeKvm()
  } else if (platform === 'darwin') {
    facts.hvf = await probeHvf()
  }
  return facts
}

export function parseCpuFlags (cpuinfo: string): Set<string> {
  const flags = new Set<string>()
  for (const line of cpuinfo.split('\n')) {
    const match = /^(flags|Features)\s*:\s*(.*)$/.exec(line)
    if (match != null) for (const flag of match[2].trim().split(/\s+/)) if (flag !== '') flags.add(flag)
  }
  return flags
}

async function readCpuFlags (): Promise<Set<string> | undefined> {
  try {
    return parseCpuFlags(await readFile('/proc/cpuinfo', 'utf8'))
  } catch {
    return undefined
  }
}

async function probeKvm (): Promise<AcceleratorFacts['kvm']> {
  try {
    await access('/dev/kvm', fsConstants.R_OK | fsConstants.W_OK)
    return 'usable'
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'denied'
  }
}

async function probeHvf (): Promise<boolean> {
  try {
    const { stdout } = await promisify(execFile)('sysctl', ['-n', 'kern.hv_support'], { timeout: 5000 })
    return stdout.trim() === '1'
  } catch {
    return false
  }
}
