import { createHash } from 'node:crypto'
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { PortForward } from '../types.ts'
import type { AcceleratorChoice } from './accelerator.ts'
import type { QemuImageManifest } from './manifest.ts'

/** `vm.json`: what the driver knows about one VM, kept beside its overlay so a restarted node finds it. */
export interface VmRecord {
  version: 1
  id: string
  name: string
  createdAt: string
  image: { name: string, folder: string, manifest: QemuImageManifest }
  cpus: number
  memoryMiB: number
  /** Folder of the QMP and agent sockets: the VM folder unless its path is too long for a unix socket. */
  socketDir: string
  /** Set while qemu runs (or is believed to). */
  pid?: number
  startedAt?: string
  accelerator?: AcceleratorChoice
  ports: PortForward[]
  /** How the last run ended; absent while running or before the first start. */
  exit?: { state: 'stopped' | 'failed', reason: string, at: string }
}

/** A unix socket path must fit in sun_path (108 bytes on Linux, 104 on macOS). */
const MAX_SOCKET_PATH = 100
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/

/** The files of one VM under `<dataDir>/vms/<id>/`. */
export class VmFolder {
  readonly id: string
  readonly dir: string

  constructor (dataDir: string, id: string) {
    if (!ID_PATTERN.test(id)) throw new TypeError(`VM id "${id}" cannot name a folder: use letters, digits, '.', '_' and '-' (at most 128)`)
    this.id = id
    this.dir = join(vmsDir(dataDir), id)
  }

  get recordPath (): string { return join(this.dir, 'vm.json') }
  get overlayPath (): string { return join(this.dir, 'overlay.qcow2') }
  get pidFile (): string { return join(this.dir, 'qemu.pid') }
  get consoleLog (): string { return join(this.dir, 'console.log') }

  /** Where sockets go: in the VM folder if the path fits, else a short folder named by its hash. */
  defaultSocketDir (): string {
    if (join(this.dir, 'qmp.sock').length <= MAX_SOCKET_PATH) return this.dir
    return join(tmpdir(), `corral-qemu-${createHash('sha256').update(this.dir).digest('hex').slice(0, 16)}`)
  }

  static qmpSocket (record: VmRecord): string { return join(record.socketDir, 'qmp.sock') }
  static agentSocket (record: VmRecord): string { return join(record.socketDir, 'qga.sock') }

  async read (): Promise<VmRecord | undefined> {
    try {
      const record = JSON.parse(await readFile(this.recordPath, 'utf8')) as VmRecord
      return record.version === 1 && record.id === this.id ? record : undefined
    } catch {
      return undefined
    }
  }

  /** Write-then-rename, so a crash never leaves half a record. */
  async write (record: VmRecord): Promise<void> {
    const temp = `${this.recordPath}.${process.pid}.tmp`
    await writeFile(temp, JSON.stringify(record, null, 2) + '\n')
    await rename(temp, this.recordPath)
  }

  async create (): Promise<void> {
    await mkdir(this.dir, { recursive: true })
  }

  async removeStaleRuntimeFiles (record: VmRecord): Promise<void> {
    await mkdir(record.socketDir, { recursive: true })
    await rm(VmFolder.qmpSocket(record), { force: true })
    await rm(VmFolder.agentSocket(record), { force: true })
    await rm(this.pidFile, { force: true })
  }

  /** Removes the VM folder (overlay included) and a separate socket folder; never anything else. */
  async remove (record: VmRecord | undefined): Promise<void> {
    if (record != null && record.socketDir !== this.dir) await rm(record.socketDir, { recursive: true, force: true })
    await rm(this.dir, { recursive: true, force: true })
  }
}

export const vmsDir = (dataDir: string): string => join(dataDir, 'vms')

/** Ids of the VM folders under `<dataDir>/vms` (whatever their state). */
export async function listVmIds (dataDir: string): Promise<string[]> {
  try {
    const entries = await readdir(vmsDir(dataDir), { withFileTypes: true })
    return entries.filter(e => e.isDirectory() && ID_PATTERN.test(e.name)).map(e => e.name).sort()
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
}
