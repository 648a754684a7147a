import type { CorralError } from '../../errors.ts'
import type { Arch, DriverVmState, GuestOs } from '../types.ts'
import {
  DriverUnavailableError, GuestAgentUnavailableError, HostDiskFullError, HypervisorError, HypervisorLicenseError, VmNotFoundInDriverError
} from '../errors.ts'
import type { RunResult } from './runner.ts'

/**
 * Pure readers of prlctl, prlsrvctl and host-tool output. Field names follow `prlctl list --info
 * --json` and `prlsrvctl info --json` of Parallels Desktop 19/20 (the same keys Parallels'
 * prl-devops-service decodes); see test/drivers/parallels/fixtures/README.md.
 */

/** What corral reads from one entry of `prlctl list --info --json`. */
export interface ParallelsVmInfo {
  uuid: string
  name: string
  /** Parallels' own word: running, stopped, suspended, paused, starting, stopping, invalid... */
  state: string
  /** Parallels' guest OS name, e.g. ubuntu, win-11, macosx. */
  os: string
  template: boolean
  /** The .pvm/.macvm bundle, without a trailing slash. */
  home: string
  guestTools: { state: string, version?: string }
  cpus?: number
  memoryMiB?: number
  /** Virtual size of the first hard disk. */
  diskMiB?: number
  /** Parallels' CPU type (arm, x86) when it reports one. */
  cpuType?: string
  /** MAC of the first enabled network adapter, 12 lowercase hex digits. */
  mac?: string
  /** Addresses Parallels Tools report; empty when the VM is stopped or has no tools. */
  ipv4: string[]
  ipv6: string[]
}

export interface ParallelsServerInfo {
  /** Folder where Parallels creates VMs (clones land here unless a destination is configured). */
  vmHome: string
  /** e.g. "20.1.2" from "Desktop 20.1.2-55742". */
  version?: string
  /** "valid" when Parallels may run VMs. */
  licenseState?: string
  hostname?: string
}

export interface ParallelsSnapshot {
  id: string
  name: string
  date: string
  state: string
  current: boolean
  parent: string
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v != null && !Array.isArray(v)
const str = (v: unknown): string | undefined => typeof v === 'string' ? v : undefined
const clip = (s: string, max = 300): string => s.length > max ? s.slice(0, max) + '…' : s

/**
 * JSON from prlctl, tolerating what it is known to wrap around it: notices before or after the
 * document (vagrant-parallels GH-204) and raw control characters inside it (GH-219).
 */
export function parseJsonOutput (text: string, what: string): unknown {
  if (text.trim() === '') return undefined
  try {
    return JSON.parse(text)
  } catch {}
  const start = text.search(/[[{]/)
  const end = Math.max(text.lastIndexOf(']'), text.lastIndexOf('}'))
  if (start >= 0 && end > start) {
    const inner = text.slice(start, end + 1).replace(/[\u0000-\u001f]/g, ' ')
    try {
      return JSON.parse(inner)
    } catch {}
  }
  throw new HypervisorError(
    `${what} printed output corral cannot read as JSON (${JSON.stringify(clip(text.trim(), 200))}); ` +
    'check that Parallels Desktop 19 or later is installed (prlctl --version) and run the command by hand to see what it says',
    { what })
}

/** "4096Mb", "64Gb", "512Kb", "0Mb" or a bare number of MiB → MiB. */
export function parseSizeMiB (value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return value
  if (typeof value !== 'string') return undefined
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(value)
  if (m == null) return undefined
  const n = Number(m[1])
  const factor: Record<string, number> = { k: 1 / 1024, '': 1, m: 1, g: 1024, t: 1024 * 1024 }
  return Math.round(n * factor[m[2].toLowerCase()])
}

function readVmInfo (entry: Record<string, unknown>): ParallelsVmInfo | undefined {
  const uuid = str(entry.ID)?.replace(/^\{|\}$/g, '')
  const name = str(entry.Name)
  if (uuid == null || name == null) return undefined
  const hardware = isRecord(entry.Hardware) ? entry.Hardware : {}
  const cpu = isRecord(hardware.cpu) ? hardware.cpu : {}
  const memory = isRecord(hardware.memory) ? hardware.memory : {}
  const hdd0 = isRecord(hardware.hdd0) ? hardware.hdd0 : {}
  const nic = Object.entries(hardware)
    .filter(([key, dev]) => /^net\d+$/.test(key) && isRecord(dev) && dev.enabled !== false)
    .map(([, dev]) => dev as Record<string, unknown>)[0]
  const tools = isRecord(entry.GuestTools) ? entry.GuestTools : {}
  const network = isRecord(entry.Network) ? entry.Network : {}
  const addresses = Array.isArray(network.ipAddresses) ? network.ipAddresses.filter(isRecord) : []
  const addressesOf = (type: string): string[] =>
    addresses.filter(a => a.type === type).map(a => str(a.ip) ?? '').filter(ip => ip !== '')
  const mac = str(nic?.mac)?.replace(/[^0-9a-fA-F]/g, '').toLowerCase()
  return {
    uuid,
    name,
    state: str(entry.State) ?? 'unknown',
    os: str(entry.OS) ?? '',
    template: str(entry.Template) === 'yes',
    home: (str(entry.Home) ?? '').replace(/\/+$/, ''),
    guestTools: { state: str(tools.state) ?? 'unknown', ...(str(tools.version) != null ? { version: str(tools.version) } : {}) },
    ...(typeof cpu.cpus === 'number' ? { cpus: cpu.cpus } : {}),
    ...(parseSizeMiB(memory.size) != null ? { memoryMiB: parseSizeMiB(memory.size) } : {}),
    ...(hdd0.enabled !== false && parseSizeMiB(hdd0.size) != null ? { diskMiB: parseSizeMiB(hdd0.size) } : {}),
    ...(str(cpu.type) != null ? { cpuType: str(cpu.type) } : {}),
    ...(mac != null && mac.length === 12 ? { mac } : {}),
    ipv4: addressesOf('ipv4').filter(ip => /^(\d{1,3}\.){3}\d{1,3}$/.test(ip)),
    ipv6: addressesOf('ipv6')
  }
}

/** `prlctl list [vm] --all --info --json` (and with --template). Empty output means no VMs. */
export function parseVmInfoList (text: string): ParallelsVmInfo[] {
  const doc = parseJsonOutput(text, 'prlctl list --info --json')
  if (doc == null) return []
  const entries = Array.isArray(doc) ? doc : [doc]
  return entries.filter(isRecord).map(readVmInfo).filter((vm): vm is ParallelsVmInfo => vm != null)
}

/** Parallels' state word → the four states corral knows. Transitions count as where they lead. */
export function toDriverState (parallelsState: string): DriverVmState {
  switch (parallelsState.toLowerCase()) {
    case 'running':
    case 'starting':
    case 'resuming':
    case 'continuing':
    case 'resetting':
    case 'restoring':
      return 'running'
    case 'stopped':
    case 'stopping':
      return 'stopped'
    case 'suspended':
    case 'suspending':
    case 'paused':
    case 'pausing':
      return 'suspended'
    default:
      return 'failed'
  }
}

export function guestOsOf (parallelsOs: string, home = ''): GuestOs {
  if (/^win/i.test(parallelsOs)) return 'windows'
  if (/mac|darwin|osx/i.test(parallelsOs) || /\.macvm$/i.test(home)) return 'macos'
  return 'linux'
}

export function archOf (cpuType: string | undefined, fallback: Arch): Arch {
  if (cpuType == null) return fallback
  if (/arm|aarch/i.test(cpuType)) return 'arm64'
  if (/x86|x64|amd64|i[3-6]86/i.test(cpuType)) return 'x86_64'
  return fallback
}

/** `prlsrvctl info --json`. */
export function parseServerInfo (text: string): ParallelsServerInfo {
  const doc = parseJsonOutput(text, 'prlsrvctl info --json')
  if (!isRecord(doc) || str(doc['VM home']) == null) {
    throw new HypervisorError('prlsrvctl info --json did not report a "VM home" folder; check that Parallels Desktop is installed and set up for this user (open it once)')
  }
  const license = isRecord(doc.License) ? doc.License : {}
  const version = /(\d+\.\d+\.\d+)/.exec(str(doc.Version) ?? '')?.[1]
  return {
    vmHome: (str(doc['VM home']) ?? '').replace(/\/+$/, ''),
    ...(version != null ? { version } : {}),
    ...(str(license.state) != null ? { licenseState: str(license.state) } : {}),
    ...(str(doc.Hostname) != null ? { hostname: str(doc.Hostname) } : {})
  }
}

/** "prlctl version 20.1.2 (55742)". */
export function parsePrlctlVersion (text: string): { version: string, major: number, build?: string } {
  const m = /prlctl version (\d+)\.(\d+)\.(\d+)(?:\s*\((\d+)\))?/.exec(text)
  if (m == null) {
    throw new HypervisorError(`prlctl --version printed ${JSON.stringify(clip(text.trim(), 120))}, not a Parallels Desktop version; check that prlctl on PATH belongs to Parallels Desktop`)
  }
  return { version: `${m[1]}.${m[2]}.${m[3]}`, major: Number(m[1]), ...(m[4] != null ? { build: m[4] } : {}) }
}

/** `sysctl -n hw.logicalcpu hw.memsize`. */
export function parseHostCpuMemory (text: string): { cpus: number, memoryMiB: number } {
  const [cpus, bytes] = text.trim().split(/\s+/).map(Number)
  if (!Number.isInteger(cpus) || cpus < 1 || !Number.isFinite(bytes) || bytes <= 0) {
    throw new HypervisorError(`sysctl printed ${JSON.stringify(clip(text.trim(), 120))}, not a CPU count and a memory size; the parallels driver runs on macOS only`)
  }
  return { cpus, memoryMiB: Math.floor(bytes / 1048576) }
}

/** `uname -m`. */
export function parseArch (text: string): Arch {
  const machine = text.trim()
  if (machine === 'arm64' || machine === 'aarch64') return 'arm64'
  if (machine === 'x86_64' || machine === 'amd64') return 'x86_64'
  throw new HypervisorError(`uname -m printed ${JSON.stringify(clip(machine, 60))}; corral runs Parallels VMs on arm64 and x86_64 Macs only`)
}

/** `df -Pk <path>`: the volume's size and what is free, in MiB. */
export function parseDiskFree (text: string): { totalMiB: number, availableMiB: number } {
  const lines = text.trim().split('\n').filter(l => l.trim() !== '')
  const m = /^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)%\s+(.*)$/.exec(lines[lines.length - 1] ?? '')
  if (m == null) throw new HypervisorError(`df printed ${JSON.stringify(clip(text.trim(), 160))}, which corral cannot read as free space`)
  return { totalMiB: Math.floor(Number(m[2]) / 1024), availableMiB: Math.floor(Number(m[4]) / 1024) }
}

/** "The snapshot with id {e78bb2b8-...} has been successfully created." → the id. */
export function parseSnapshotCreated (text: string): string {
  const id = /\{([0-9a-fA-F-]{8,})\}/.exec(text)?.[1]
  if (id == null) throw new HypervisorError(`prlctl snapshot did not print the new snapshot's id (${JSON.stringify(clip(text.trim(), 160))}); list them with prlctl snapshot-list`)
  return id
}

/** `prlctl snapshot-list <vm> --json`: an object keyed by "{id}". */
export function parseSnapshotList (text: string): ParallelsSnapshot[] {
  const doc = parseJsonOutput(text, 'prlctl snapshot-list --json')
  if (!isRecord(doc)) return []
  return Object.entries(doc).filter(([, v]) => isRecord(v)).map(([key, v]) => {
    const s = v as Record<string, unknown>
    return {
      id: key.replace(/^\{|\}$/g, ''),
      name: str(s.name) ?? '',
      date: str(s.date) ?? '',
      state: str(s.state) ?? '',
      current: s.current === true,
      parent: (str(s.parent) ?? '').replace(/^\{|\}$/g, '')
    }
  })
}

/**
 * Parallels' Shared-network DHCP leases: lines `ip="expiry,duration,mac,client-id"`. Returns the
 * address most recently leased to `mac` (any separators, any case), if any.
 */
export function parseDhcpLeases (text: string, mac: string): string | undefined {
  const wanted = mac.replace(/[^0-9a-fA-F]/g, '').toLowerCase()
  let best: { ip: string, leasedAt: number } | undefined
  for (const line of text.split('\n')) {
    const m = /^\s*([0-9.]+)="(\d+),(\d+),([0-9a-fA-F:]+),/.exec(line)
    if (m == null || m[4].replace(/:/g, '').toLowerCase() !== wanted) continue
    const leasedAt = Number(m[2]) - Number(m[3])
    if (best == null || leasedAt > best.leasedAt) best = { ip: m[1], leasedAt }
  }
  return best?.ip
}

export interface ConfigPvsFacts {
  vmName?: string
  cpus?: number
  memoryMiB?: number
  diskMiB?: number
  /** Parallels SDK guest type: 7 macOS, 8 Windows, 9 Linux (PVS_GUEST_TYPE_*). */
  osType?: number
}

function element (xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`).exec(xml)
  return m?.[1]
}

const intIn = (xml: string | undefined, tag: string): number | undefined => {
  const v = xml != null ? element(xml, tag)?.trim() : undefined
  return v != null && /^\d+$/.test(v) ? Number(v) : undefined
}

/** The few facts inspectImage needs from a bundle's config.pvs (XML). */
export function parseConfigPvs (xml: string): ConfigPvsFacts {
  if (!/<ParallelsVirtualMachine[\s>]/.test(xml)) {
    throw new HypervisorError('config.pvs is not a Parallels VM configuration (no <ParallelsVirtualMachine> element)')
  }
  const hardware = element(xml, 'Hardware')
  const general = element(element(xml, 'Settings') ?? '', 'General')
  const vmName = element(element(xml, 'Identification') ?? '', 'VmName')?.trim()
  const facts: ConfigPvsFacts = {}
  if (vmName != null && vmName !== '') facts.vmName = vmName
  const cpus = intIn(element(hardware ?? '', 'Cpu'), 'Number')
  if (cpus != null) facts.cpus = cpus
  const ram = intIn(element(hardware ?? '', 'Memory'), 'RAM')
  if (ram != null) facts.memoryMiB = ram
  const disk = intIn(element(hardware ?? '', 'Hdd'), 'Size')
  if (disk != null) facts.diskMiB = disk
  const osType = intIn(general, 'OsType')
  if (osType != null) facts.osType = osType
  return facts
}

export function guestOsOfOsType (osType: number | undefined): GuestOs | undefined {
  switch (osType) {
    case 7: return 'macos'
    case 8: return 'windows'
    case 9: return 'linux'
    default: return undefined
  }
}

export interface FailureContext {
  /** What corral was doing, in words: "start", "clone ubuntu-24.04", "exec". */
  op: string
  /** The Parallels VM name, when the operation concerns one. */
  vm?: string
  /** For disk errors: the folder to free space in. */
  vmHome?: string
}

/** The part of prlctl's complaint worth quoting: its non-empty lines, joined. */
export function prlctlMessage (result: Pick<RunResult, 'stdout' | 'stderr'>): string {
  const text = result.stderr.trim() !== '' ? result.stderr : result.stdout
  return clip(text.split('\n').map(l => l.trim()).filter(l => l !== '').join(' '), 500)
}

const SERVICE_DOWN = /Unable to connect to (the )?Parallels Service|Login failed|Parallels Service is not running|Can(not|'t) connect to (the )?(Parallels )?(dispatcher|service)/i
const NOT_FOUND = /could not be found|is not registered in the virtual machine directory|virtual machine .{0,80} does not exist|PRL_ERR_VM_UUID_NOT_FOUND/i
const DISK_FULL = /not enough (free )?(disk )?space|out of disk space|no space left on device|disk is full|PRL_ERR_[A-Z_]*DIS[CK]_SPACE/i
const RUNNING_LIMIT = /maximum (supported )?number of (active |running )?virtual machines|RUNNING_VMS_LIMIT/i
const LICENSE = /licen[cs]e|not available in this edition|PRL_ERR_(LICENSE|JLIC)/i
const GUEST_TOOLS = /Parallels Tools|guest tools|PRL_ERR_VM_EXEC|PRL_ERR_.*GUEST|guest (OS )?session/i
const NOT_RUNNING = /(virtual machine|VM) is not running|is (stopped|suspended|paused)\b|PRL_ERR_DISP_VM_IS_NOT_STARTED/i

/** prlctl's failure turned into the corral error whose name says what to do about it. */
export function classifyFailure (result: RunResult, context: FailureContext): CorralError {
  const said = prlctlMessage(result)
  const vm = context.vm != null ? ` ${context.vm}` : ''
  const details = { op: context.op, ...(context.vm != null ? { vm: context.vm } : {}), exitCode: result.exitCode, prlctl: said }
  if (result.timedOut === true) {
    return new HypervisorError(`prlctl did not finish "${context.op}"${vm} in time and was stopped; Parallels may be busy or hung — check the VM in Parallels Desktop's Control Center and retry`, details)
  }
  if (result.exitCode === 253 || SERVICE_DOWN.test(said)) {
    return new DriverUnavailableError(`prlctl cannot reach the Parallels service ("${said}"): start Parallels Desktop on this Mac (open -a "Parallels Desktop") and make sure corral runs as the user who owns the VMs`, details)
  }
  if (NOT_FOUND.test(said)) {
    return new VmNotFoundInDriverError(`Parallels has no VM${vm || ' by that name'} ("${said}"): it was deleted or unregistered outside corral; corral treats it as gone — recreate it if it is still needed`, details)
  }
  if (DISK_FULL.test(said)) {
    const where = context.vmHome != null ? ` in ${context.vmHome}` : ''
    return new HostDiskFullError(`not enough free disk on this Mac to ${context.op}${vm} ("${said}"): free space${where}, delete VMs that are no longer needed (prlctl list --all), or use an image with a smaller disk`, details)
  }
  if (RUNNING_LIMIT.test(said)) {
    return new HypervisorLicenseError(`too many VMs are running on this Mac to ${context.op}${vm} ("${said}"): Apple's licence allows two macOS guests at once (and a Parallels license may cap running VMs) — stop a VM here or run this one on another host`, details)
  }
  if (LICENSE.test(said)) {
    return new HypervisorLicenseError(`Parallels Desktop's license refused to ${context.op}${vm} ("${said}"): corral needs Parallels Desktop Pro or Business edition with an active license — check it with prlsrvctl info --license and activate or renew it`, details)
  }
  if (GUEST_TOOLS.test(said)) {
    return new GuestAgentUnavailableError(`cannot ${context.op} in${vm}: Parallels Tools are not answering in the guest ("${said}"); wait until the guest has booted, or install Parallels Tools in the template the VM was cloned from`, details)
  }
  if (NOT_RUNNING.test(said)) {
    return new HypervisorError(`cannot ${context.op}${vm}: the VM is not running ("${said}"); start it first`, details)
  }
  return new HypervisorError(`prlctl failed to ${context.op}${vm} (exit ${result.exitCode}): ${said || 'no message'}`, details)
}

const PRLCTL_OWN_FAILURE = /^(Failed to |Login failed|Unable to |Prl[A-Z][A-Za-z]+_|The virtual machine |This feature is not available)|PRL_ERR_|Parallels Tools/m

/**
 * `prlctl exec` exits with the guest command's code, and with 255 (253: service unreachable, 254: VM
 * frozen) when prlctl itself failed. A guest command that exits 253-255 and prints a prlctl-like
 * complaint is misread as a prlctl failure; nothing else is.
 */
export function isPrlctlExecFailure (result: RunResult): boolean {
  if (result.timedOut === true) return false
  return result.exitCode >= 253 && result.exitCode <= 255 && PRLCTL_OWN_FAILURE.test(result.stderr)
}
