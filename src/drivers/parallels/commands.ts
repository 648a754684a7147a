import type { GuestOs } from '../types.ts'
import { HypervisorError } from '../errors.ts'
import { VM_NAME_PREFIX } from './constants.ts'
import { guestCommandWords } from './guest-command.ts'

/**
 * The argv of every prlctl, prlsrvctl and host command the driver runs. Pure: argv[0] is the tool's
 * bare name; the driver swaps in the configured path. Nothing here goes through a shell.
 */

/** Parallels VM name for a corral id. Ids become argv words, so they must not look like options. */
export function vmName (id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(id)) {
    throw new HypervisorError(`VM id ${JSON.stringify(id)} cannot name a Parallels VM: use letters, digits, ".", "_" and "-", starting with a letter or digit`, { id })
  }
  return VM_NAME_PREFIX + id
}

/** The corral id of a Parallels VM name, or undefined for VMs corral did not create. */
export function idFromVmName (name: string): string | undefined {
  if (!name.startsWith(VM_NAME_PREFIX)) return undefined
  const id = name.slice(VM_NAME_PREFIX.length)
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(id) ? id : undefined
}

export const prlctlVersion = (): string[] => ['prlctl', '--version']

/** Host facts: VM home folder, Parallels version, license state. */
export const serverInfo = (): string[] => ['prlsrvctl', 'info', '--json']

/** Full information on every VM (not templates) the user can see. */
export const listVms = (): string[] => ['prlctl', 'list', '--all', '--info', '--json']

/** Full information on one VM or template, by name or UUID. */
export const vmInfo = (nameOrUuid: string): string[] => ['prlctl', 'list', nameOrUuid, '--all', '--info', '--json']

/** Templates only: the images corral can clone without being told a path. */
export const listTemplates = (): string[] => ['prlctl', 'list', '--all', '--template', '--info', '--json']

/** Make a .pvm/.macvm bundle known to Parallels so it can be cloned. */
export const register = (bundlePath: string): string[] => ['prlctl', 'register', bundlePath]

export interface CloneOptions {
  /** A linked clone shares the source's disk; Parallels cannot link .macvm (Apple silicon macOS) VMs. */
  linked: boolean
  /** Folder for the clone's bundle; Parallels' VM home when absent. */
  destination?: string
}

export function clone (source: string, name: string, options: CloneOptions): string[] {
  return [
    'prlctl', 'clone', source, '--name', name,
    ...(options.linked ? ['--linked'] : []),
    ...(options.destination != null ? ['--dst', options.destination] : [])
  ]
}

export const setResources = (name: string, cpus: number, memoryMiB: number): string[] =>
  ['prlctl', 'set', name, '--cpus', String(cpus), '--memsize', String(memoryMiB)]

export const start = (name: string): string[] => ['prlctl', 'start', name]

/**
 * graceful: ACPI/Parallels Tools shutdown; kill: pull the plug; drop-state: a suspended VM forgets
 * its saved memory and is stopped.
 */
export type StopMode = 'graceful' | 'kill' | 'drop-state'

export function stop (name: string, mode: StopMode): string[] {
  if (mode === 'kill') return ['prlctl', 'stop', name, '--kill']
  if (mode === 'drop-state') return ['prlctl', 'stop', name, '--drop-state']
  return ['prlctl', 'stop', name]
}

export const suspend = (name: string): string[] => ['prlctl', 'suspend', name]
export const resume = (name: string): string[] => ['prlctl', 'resume', name]
export const restart = (name: string): string[] => ['prlctl', 'restart', name]
/** Hard reset, for guests that cannot restart themselves. */
export const reset = (name: string): string[] => ['prlctl', 'reset', name]
/** Removes the VM and its bundle; a linked clone's parent is left alone. */
export const remove = (name: string): string[] => ['prlctl', 'delete', name]

export interface ExecOptions {
  /** Run as the user logged in to the guest's desktop instead of root/SYSTEM. */
  currentUser?: boolean
}

export function exec (name: string, os: GuestOs, command: string[], env: Record<string, string> = {}, options: ExecOptions = {}): string[] {
  return [
    'prlctl', 'exec', name,
    ...(options.currentUser === true ? ['--current-user'] : []),
    ...guestCommandWords(os, command, env)
  ]
}

export function snapshotCreate (name: string, snapshotName: string, description?: string): string[] {
  return [
    'prlctl', 'snapshot', name, '--name', snapshotName,
    ...(description != null ? ['--description', description] : [])
  ]
}

export const snapshotList = (name: string): string[] => ['prlctl', 'snapshot-list', name, '--json']

export function snapshotSwitch (name: string, snapshotId: string, options: { skipResume?: boolean } = {}): string[] {
  return ['prlctl', 'snapshot-switch', name, '--id', snapshotId, ...(options.skipResume === true ? ['--skip-resume'] : [])]
}

export function snapshotDelete (name: string, snapshotId: string, options: { children?: boolean } = {}): string[] {
  return ['prlctl', 'snapshot-delete', name, '--id', snapshotId, ...(options.children === true ? ['--children'] : [])]
}

/** prlsrvctl info reports neither CPUs nor RAM; macOS sysctl does (one value per line, in this order). */
export const hostCpuMemory = (): string[] => ['sysctl', '-n', 'hw.logicalcpu', 'hw.memsize']

export const hostArch = (): string[] => ['uname', '-m']

/** POSIX output format, sizes in KiB: one header line and one line for the volume holding `path`. */
export const diskFree = (path: string): string[] => ['df', '-Pk', path]
