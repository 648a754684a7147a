import { execFile } from 'node:child_process'
import { mkdir, readdir, readFile, stat, statfs } from 'node:fs/promises'
import { availableParallelism, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import type { Logger } from 'pino'
import type {
  Arch, CreateVmSpec, Driver, DriverImage, DriverVm, DriverVmState, ExecRequest, ExecResult, HostCapacity, OperationOptions, PortForward
} from '../types.ts'
import {
  DriverUnavailableError, GuestAgentCommandError, GuestAgentUnavailableError, HostDiskFullError, HypervisorError, ImageInvalidError, VmNotFoundInDriverError
} from '../errors.ts'
import { chooseAccelerator, probeAcceleratorFacts, type AcceleratorChoice, type AcceleratorSetting } from './accelerator.ts'
import { buildQemuArgv, NETDEV_ID, qemuBinaryFor } from './argv.ts'
import {
  CONSOLE_TAIL_LINES, DEFAULT_GUEST_PATH, DEFAULT_STOP_TIMEOUT_MS, EXIT_CONFIRM_MS, PORT_ATTEMPTS, QMP_COMMAND_TIMEOUT_MS, QMP_CONNECT_TIMEOUT_MS, QUIT_TIMEOUT_MS, SPAWN_TIMEOUT_MS
} from './constants.ts'
import { GuestAgentClient } from './guest-agent.ts'
import { MANIFEST_FILE, readImageFolder, type QemuImage } from './manifest.ts'
import { freeLoopbackPort, isQemuAlive, killQuietly, readPidFile, waitForExit } from './process.ts'
import { QmpClient, type QmpEvent } from './qmp.ts'
import { listVmIds, VmFolder, vmsDir, type VmRecord } from './vm-folder.ts'

const run = promisify(execFile)

export interface QemuDriverComponents {
  logger: Logger
}

export interface QemuDriverInit {
  /** VMs live in `<dataDir>/vms/<id>/`. */
  dataDir: string
  /** `auto` uses KVM/HVF only where they are real hardware virtualisation; the others force one. */
  accelerator?: AcceleratorSetting
  /** The emulator for host-architecture images; empty or absent picks qemu-system-<arch>. */
  qemuBinary?: string
  qemuImgBinary?: string
  /** Folders holding image folders (or image folders themselves) offered by listImages. */
  imageDirs?: string[]
  /** How long start and restart wait for the guest agent to answer. */
  bootTimeoutMs: number
  /** How long stop waits for the guest to power off after the ACPI button. */
  stopTimeoutMs?: number
  labels?: Record<string, string>
}

/** What the driver holds for a qemu process it is attached to (through QMP). */
interface VmHandle {
  pid: number
  marker: string
  qmp: QmpClient
  agent?: GuestAgentClient
  paused: boolean
  /** stop/delete/close asked for the exit (or the detach): no vm-exited event. */
  expectingExit: boolean
  detached: boolean
  shutdown?: { guest: boolean, reason: string }
}

/**
 * The QEMU driver. A VM is a folder with a qcow2 overlay on the image's read-only base (a linked
 * clone), a vm.json record, the QMP and guest-agent sockets, a pidfile and the console log. qemu runs
 * daemonized so VMs survive a node restart; the driver re-attaches to them through QMP, whose socket
 * closing is how it learns that a qemu died.
 *
 * Limits worth knowing: exec output arrives only when the command exits (qemu-ga has no streaming),
 * each stream is capped at 16 MiB by qemu-ga, and a request's env replaces the guest command's whole
 * environment (PATH is added for Linux guests). Only one client can hold a VM's QMP monitor, so two
 * drivers must not share a data folder at the same time.
 */
export class QemuDriver extends EventTarget implements Driver {
  readonly name = 'qemu' as const
  readonly simulated = false
  private readonly components: QemuDriverComponents
  private readonly init: QemuDriverInit
  private readonly dataDir: string
  private readonly handles = new Map<string, VmHandle>()
  private readonly locks = new Map<string, Promise<unknown>>()
  private accelerator?: AcceleratorChoice
  private opened = false

  constructor (components: QemuDriverComponents, init: QemuDriverInit) {
    super()
    this.components = components
    this.init = init
    this.dataDir = resolve(init.dataDir)
  }

  private get log (): Logger { return this.components.logger }
  private get hostArch (): Arch { return process.arch === 'arm64' ? 'arm64' : 'x86_64' }
  private get qemuImg (): string { return this.init.qemuImgBinary ?? 'qemu-img' }

  private binaryFor (arch: Arch): string {
    const configured = this.init.qemuBinary?.trim()
    return arch === this.hostArch && configured != null && configured !== '' ? configured : qemuBinaryFor(arch)
  }

  async open (): Promise<void> {
    if (this.opened) return
    const binary = this.binaryFor(this.hostArch)
    const version = await this.toolVersion(binary)
    await this.toolVersion(this.qemuImg)
    const accelerator = await this.chooseHostAccelerator()
    this.log.info({ qemu: binary, version, accelerator: accelerator.name, reason: accelerator.reason }, `qemu driver uses ${accelerator.name}: ${accelerator.reason}`)
    await mkdir(vmsDir(this.dataDir), { recursive: true })
    this.opened = true
    for (const id of await listVmIds(this.dataDir)) {
      const folder = new VmFolder(this.dataDir, id)
      const record = await folder.read()
      if (record == null) continue
      await this.reconcile(folder, record)
    }
  }

  async close (): Promise<void> {
    for (const handle of this.handles.values()) this.detach(handle)
    this.handles.clear()
    this.opened = false
  }

  async capacity (): Promise<HostCapacity> {
    const fs = await statfs(this.dataDir).catch(async () => await statfs(resolve(this.dataDir, '..')))
    return {
      cpus: availableParallelism(),
      memoryMiB: Math.floor(totalmem() / 1048576),
      diskMiB: Math.floor(Number(fs.bavail) * Number(fs.bsize) / 1048576),
      arch: this.hostArch,
      os: process.platform === 'darwin' ? 'macos' : process.platform === 'win32' ? 'windows' : 'linux',
      driver: 'qemu',
      labels: { ...this.init.labels },
      simulated: false,
      accelerator: await this.chooseHostAccelerator()
    }
  }

  async listImages (): Promise<DriverImage[]> {
    const images: DriverImage[] = []
    for (const dir of this.init.imageDirs ?? []) {
      for (const folder of await candidateImageFolders(dir)) {
        try {
          const image = await this.describeImage(await readImageFolder(folder))
          images.push(image)
        } catch (err) {
          this.log.warn({ folder, err: (err as Error).message }, 'skipping an image folder that is not a valid qemu image')
        }
      }
    }
    return images.sort((a, b) => a.name.localeCompare(b.name))
  }

  async inspectImage (name: string, path: string): Promise<DriverImage> {
    return { ...await this.describeImage(await readImageFolder(path)), name }
  }

  async create (spec: CreateVmSpec, options?: OperationOptions): Promise<DriverVm> {
    const folder = new VmFolder(this.dataDir, spec.id)
    return await this.locked(spec.id, async () => {
      options?.signal?.throwIfAborted()
      const existing = await folder.read()
      if (existing != null) return await this.describe(folder, existing)
      if (spec.image.simulated) throw new ImageInvalidError(`image "${spec.image.name}" is simulated and cannot boot under qemu; choose a qemu image folder`, { image: spec.image.name })
      const image = await readImageFolder(spec.image.path)
      await folder.create()
      try {
        if (image.diskPath != null) await this.createOverlay(image.diskPath, folder.overlayPath)
        const record: VmRecord = {
          version: 1,
          id: spec.id,
          name: spec.name,
          createdAt: new Date().toISOString(),
          image: { name: spec.image.name, folder: image.folder, manifest: image.manifest },
          cpus: spec.cpus,
          memoryMiB: spec.memoryMiB,
          socketDir: folder.defaultSocketDir(),
          ports: []
        }
        await folder.write(record)
        this.log.info({ vm: spec.id, image: spec.image.name, base: image.diskPath, overlay: image.diskPath != null ? folder.overlayPath : undefined }, 'qemu VM created as a linked clone')
        return await this.describe(folder, record)
      } catch (err) {
        await folder.remove(undefined)
        throw err
      }
    })
  }

  async start (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.locked(id, async () => {
      const { folder, record } = await this.load(id)
      options?.signal?.throwIfAborted()
      const live = await this.liveHandle(folder, record)
      if (live != null) {
        if (live.paused) await this.resumeHandle(live)
        return await this.describe(folder, record)
      }
      if (record.pid != null && await isQemuAlive(record.pid, folder.dir)) {
        throw new HypervisorError(`VM ${id} is already running (pid ${record.pid}) but its QMP monitor does not answer; another corral driver on ${this.dataDir} may hold it. Stop that one, or stop the VM`, { vm: id, pid: record.pid })
      }
      const image = await this.imageOf(record)
      const accelerator = await this.acceleratorFor(record.image.manifest.arch)
      const binary = this.binaryFor(record.image.manifest.arch)
      const pid = await this.spawn(folder, record, image, accelerator, binary)
      let handle: VmHandle
      try {
        handle = await this.attach(folder, record, pid)
      } catch (err) {
        // A qemu the driver cannot drive is of no use to anyone: end it rather than leave it running.
        killQuietly(pid, 'SIGKILL')
        record.exit = { state: 'failed', reason: `qemu started but its monitor did not answer: ${(err as Error).message}`, at: new Date().toISOString() }
        await this.saveStopped(folder, record)
        throw err
      }
      if (handle.agent != null) {
        try {
          await handle.agent.waitReady(this.init.bootTimeoutMs, options?.signal)
        } catch (err) {
          await this.forceOff(record, handle)
          record.exit = { state: 'failed', reason: `the guest did not come up: ${(err as Error).message}`, at: new Date().toISOString() }
          await this.saveStopped(folder, record)
          if (options?.signal?.aborted === true) throw options.signal.reason
          const tail = await consoleTail(folder.consoleLog)
          throw new GuestAgentUnavailableError(`VM ${id} started but its guest agent did not answer within ${this.init.bootTimeoutMs} ms, so it was stopped. Last console lines:\n${tail}`, { vm: id, console: folder.consoleLog })
        }
      }
      this.log.info({ vm: id, pid, accelerator: accelerator.name, ports: record.ports }, 'qemu VM running')
      return await this.describe(folder, record)
    })
  }

  async stop (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.locked(id, async () => {
      const { folder, record } = await this.load(id)
      options?.signal?.throwIfAborted()
      const handle = await this.liveHandle(folder, record)
      let reason = 'stopped on request'
      if (handle != null) {
        handle.expectingExit = true
        const timeoutMs = this.init.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS
        let graceful = false
        if (!handle.paused) {
          try {
            await handle.qmp.execute('system_powerdown', undefined, QMP_COMMAND_TIMEOUT_MS)
            graceful = await waitForExit(handle.pid, handle.marker, timeoutMs)
          } catch (err) {
            this.log.warn({ vm: id, err: (err as Error).message }, 'ACPI shutdown could not be requested')
          }
        }
        if (graceful) {
          reason = 'the guest powered off after the ACPI power button'
        } else {
          await this.forceOff(record, handle)
          reason = handle.paused
            ? 'quit while suspended (a paused guest cannot handle the power button)'
            : `forced off: the guest did not power off within ${timeoutMs} ms of the ACPI power button`
        }
        this.log.info({ vm: id, graceful }, reason)
      } else if (record.pid != null && await isQemuAlive(record.pid, folder.dir)) {
        // Alive but not attached (another client holds its monitor): end it the hard way.
        await this.killProcess(record.pid, folder.dir)
      }
      record.exit = { state: 'stopped', reason, at: new Date().toISOString() }
      await this.saveStopped(folder, record)
      return await this.describe(folder, record)
    })
  }

  async suspend (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.locked(id, async () => {
      const { folder, record } = await this.load(id)
      options?.signal?.throwIfAborted()
      const handle = await this.requireRunning(folder, record, 'suspend it')
      if (!handle.paused) {
        await handle.qmp.execute('stop', undefined, QMP_COMMAND_TIMEOUT_MS)
        handle.paused = true
      }
      return await this.describe(folder, record)
    })
  }

  async resume (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.locked(id, async () => {
      const { folder, record } = await this.load(id)
      options?.signal?.throwIfAborted()
      const handle = await this.requireRunning(folder, record, 'resume it')
      if (handle.paused) await this.resumeHandle(handle)
      return await this.describe(folder, record)
    })
  }

  async restart (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.locked(id, async () => {
      const { folder, record } = await this.load(id)
      options?.signal?.throwIfAborted()
      const handle = await this.requireRunning(folder, record, 'restart it')
      handle.agent?.invalidate()
      await handle.qmp.execute('system_reset', undefined, QMP_COMMAND_TIMEOUT_MS)
      if (handle.paused) await this.resumeHandle(handle)
      if (handle.agent != null) await handle.agent.waitReady(this.init.bootTimeoutMs, options?.signal)
      this.log.info({ vm: id }, 'qemu VM reset')
      return await this.describe(folder, record)
    })
  }

  async delete (id: string, options?: OperationOptions): Promise<void> {
    const folder = new VmFolder(this.dataDir, id)
    await this.locked(id, async () => {
      options?.signal?.throwIfAborted()
      if (!await exists(folder.dir)) return
      const record = await folder.read()
      const handle = this.handles.get(id)
      if (handle != null) {
        handle.expectingExit = true
        await this.forceOff(record, handle)
      }
      const pid = record?.pid ?? await readPidFile(folder.pidFile)
      if (pid != null && await isQemuAlive(pid, folder.dir)) await this.killProcess(pid, folder.dir)
      await folder.remove(record)
      this.log.info({ vm: id }, 'qemu VM deleted (overlay removed, base image untouched)')
    })
  }

  async exec (id: string, request: ExecRequest): Promise<ExecResult> {
    const { folder, record } = await this.load(id)
    const handle = await this.requireRunning(folder, record, 'run commands')
    if (handle.paused) throw new HypervisorError(`VM ${id} is suspended; resume it before running commands`, { vm: id, state: 'suspended' })
    if (handle.agent == null) throw new GuestAgentUnavailableError(`VM ${id} runs image "${record.image.name}", whose manifest declares no guest agent ("agent": "none"), so commands cannot run in it`, { vm: id })
    const [path, ...args] = request.command
    if (path == null || path === '') throw new TypeError('exec needs a command: a non-empty list whose first item is the program')
    const os = record.image.manifest.os
    const env = request.env == null
      ? undefined
      : Object.entries(os === 'windows' ? request.env : { PATH: DEFAULT_GUEST_PATH, ...request.env }).map(([k, v]) => `${k}=${v}`)
    let result
    try {
      result = await handle.agent.exec({
        path,
        args,
        env,
        timeoutMs: request.timeoutMs,
        signal: request.signal,
        killCommand: pid => os === 'windows'
          ? { path: 'taskkill', args: ['/F', '/T', '/PID', String(pid)] }
          : { path: 'kill', args: ['-KILL', String(pid)] }
      })
    } catch (err) {
      // qemu-ga refuses guest-exec when the program cannot be started: report it like a shell would.
      if (err instanceof GuestAgentCommandError && err.details.command === 'guest-exec') {
        const stderr = `${err.message}\n`
        request.onOutput?.('stderr', Buffer.from(stderr))
        return { exitCode: 127, stdout: '', stderr }
      }
      throw err
    }
    if (result.truncated) this.log.warn({ vm: id, command: path }, 'the guest agent truncated command output at 16 MiB')
    // qemu-ga returns output only when the command has exited, so "streaming" delivers it in one go.
    if (result.stdout.length > 0) request.onOutput?.('stdout', result.stdout)
    if (result.stderr.length > 0) request.onOutput?.('stderr', result.stderr)
    return { exitCode: result.exitCode, stdout: result.stdout.toString('utf8'), stderr: result.stderr.toString('utf8') }
  }

  async forwardPort (id: string, guestPort: number): Promise<PortForward> {
    if (!Number.isInteger(guestPort) || guestPort < 1 || guestPort > 65535) throw new RangeError(`guest port ${guestPort} is not a TCP port (1-65535)`)
    return await this.locked(id, async () => {
      const { folder, record } = await this.load(id)
      const handle = await this.requireRunning(folder, record, 'forward ports')
      const existing = record.ports.find(p => p.guestPort === guestPort)
      if (existing != null) return existing
      let lastError = ''
      for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
        const hostPort = await freeLoopbackPort()
        const answer = await handle.qmp.execute<string>('human-monitor-command', { 'command-line': `hostfwd_add ${NETDEV_ID} tcp:127.0.0.1:${hostPort}-:${guestPort}` }, QMP_COMMAND_TIMEOUT_MS)
        if (typeof answer === 'string' && answer.trim() !== '') {
          lastError = answer.trim()
          continue
        }
        const forward: PortForward = { guestPort, hostAddress: '127.0.0.1', hostPort, protocol: 'tcp' }
        record.ports = [...record.ports, forward]
        await folder.write(record)
        this.log.info({ vm: id, guestPort, hostPort }, 'port forwarded at run time')
        return forward
      }
      throw new HypervisorError(`qemu could not forward guest port ${guestPort} of VM ${id}: ${lastError}`, { vm: id, guestPort })
    })
  }

  async list (): Promise<DriverVm[]> {
    const vms: DriverVm[] = []
    for (const id of await listVmIds(this.dataDir)) {
      const folder = new VmFolder(this.dataDir, id)
      const record = await folder.read()
      if (record == null) continue
      if (!this.handles.has(id) && !this.locks.has(id) && record.pid != null && record.exit == null && !await isQemuAlive(record.pid, folder.dir)) {
        await this.markExited(folder, record, 'failed', 'the qemu process is gone but the driver did not see it exit (it died while no driver was attached)', false)
      }
      vms.push(await this.describe(folder, record))
    }
    return vms
  }

  // ---- internals ----

  private async chooseHostAccelerator (): Promise<AcceleratorChoice> {
    this.accelerator ??= chooseAccelerator(this.init.accelerator ?? 'auto', await probeAcceleratorFacts())
    return this.accelerator
  }

  private async acceleratorFor (arch: Arch): Promise<AcceleratorChoice> {
    if (arch !== this.hostArch) return { name: 'tcg', reason: `the image is ${arch} and the host ${this.hostArch}, so it can only be emulated` }
    return await this.chooseHostAccelerator()
  }

  private async toolVersion (binary: string): Promise<string> {
    try {
      const { stdout } = await run(binary, ['--version'], { timeout: 15_000 })
      return stdout.split('\n')[0].trim()
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      throw new DriverUnavailableError(code === 'ENOENT'
        ? `${binary} is not installed or not on PATH: on Debian or Ubuntu run 'apt-get install qemu-system-x86 qemu-utils' (macOS: 'brew install qemu'), or set qemu.binary`
        : `${binary} --version failed: ${(err as Error).message}`, { binary })
    }
  }

  private async describeImage (image: QemuImage): Promise<DriverImage> {
    const m = image.manifest
    let diskMiB = m.diskMiB
    if (image.diskPath != null) {
      const info = await this.diskInfo(image.diskPath)
      if (info.format !== 'qcow2') throw new ImageInvalidError(`${image.diskPath} is a ${info.format} disk; qemu images must be qcow2 so VMs can be linked clones (convert it with: qemu-img convert -O qcow2 <disk> base.qcow2)`, { path: image.folder })
      diskMiB ??= Math.ceil(info.virtualSize / 1048576)
    }
    const described: DriverImage = {
      name: m.name,
      arch: m.arch,
      os: m.os,
      path: image.folder,
      defaultCpus: m.defaultCpus,
      defaultMemoryMiB: m.defaultMemoryMiB,
      diskMiB: diskMiB ?? 0,
      simulated: false
    }
    if (m.ports.length > 0) described.ports = [...m.ports]
    return described
  }

  private async diskInfo (path: string): Promise<{ format: string, virtualSize: number }> {
    try {
      // -U: a base in use by running VMs is locked; reading its header is still safe.
      const { stdout } = await run(this.qemuImg, ['info', '-U', '--output=json', path], { timeout: 30_000 })
      const info = JSON.parse(stdout) as { format: string, 'virtual-size': number }
      return { format: info.format, virtualSize: info['virtual-size'] }
    } catch (err) {
      throw new ImageInvalidError(`qemu-img cannot read ${path}: ${stderrOf(err)}`, { path })
    }
  }

  private async createOverlay (base: string, overlay: string): Promise<void> {
    const started = performance.now()
    try {
      await run(this.qemuImg, ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay], { timeout: 60_000 })
    } catch (err) {
      const message = stderrOf(err)
      if (/no space left/i.test(message)) throw new HostDiskFullError(`no disk space left for the overlay in ${overlay}: free space on that disk`, { path: overlay })
      throw new HypervisorError(`qemu-img could not create the linked clone ${overlay} of ${base}: ${message}`, { base })
    }
    this.log.debug({ overlay, ms: Math.round(performance.now() - started) }, 'overlay created')
  }

  private async imageOf (record: VmRecord): Promise<QemuImage> {
    const m = record.image.manifest
    const image: QemuImage = { folder: record.image.folder, manifest: m }
    const need = async (file: string | undefined): Promise<string | undefined> => {
      if (file == null) return undefined
      const path = join(record.image.folder, file)
      if (!await exists(path)) throw new ImageInvalidError(`VM ${record.id} was cloned from image "${record.image.name}", but ${path} is gone; restore the image folder or delete the VM`, { vm: record.id, path })
      return path
    }
    image.diskPath = await need(m.disk)
    image.kernelPath = await need(m.kernel)
    image.initrdPath = await need(m.initrd)
    return image
  }

  /** Launches qemu -daemonize with fresh loopback ports for the image's forwards; returns the pid. */
  private async spawn (folder: VmFolder, record: VmRecord, image: QemuImage, accelerator: AcceleratorChoice, binary: string): Promise<number> {
    const m = record.image.manifest
    let lastError = ''
    for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
      const forwards: Array<{ hostPort: number, guestPort: number }> = []
      for (const guestPort of m.ports) forwards.push({ hostPort: await freeLoopbackPort(), guestPort })
      await folder.removeStaleRuntimeFiles(record)
      const argv = buildQemuArgv({
        vmId: record.id,
        arch: m.arch,
        accelerator: accelerator.name,
        machine: m.machine,
        cpus: record.cpus,
        memoryMiB: record.memoryMiB,
        overlayPath: image.diskPath != null ? folder.overlayPath : undefined,
        kernelPath: image.kernelPath,
        initrdPath: image.initrdPath,
        cmdline: m.cmdline,
        forwards,
        qmpSocket: VmFolder.qmpSocket(record),
        agentSocket: m.agent === 'qemu-ga' ? VmFolder.agentSocket(record) : undefined,
        consoleLog: folder.consoleLog,
        pidFile: folder.pidFile
      })
      this.log.info({ vm: record.id, accelerator: accelerator.name, reason: accelerator.reason }, `starting qemu VM with ${accelerator.name}: ${accelerator.reason}`)
      this.log.debug({ vm: record.id, binary, argv }, 'qemu command line')
      try {
        await run(binary, argv, { timeout: SPAWN_TIMEOUT_MS, cwd: folder.dir })
      } catch (err) {
        lastError = stderrOf(err)
        if (/host forwarding|address already in use/i.test(lastError)) continue
        throw new HypervisorError(`qemu could not start VM ${record.id}: ${lastError}`, { vm: record.id })
      }
      const pid = await readPidFile(folder.pidFile)
      if (pid == null) throw new HypervisorError(`qemu started VM ${record.id} but wrote no pidfile at ${folder.pidFile}`, { vm: record.id })
      record.pid = pid
      record.startedAt = new Date().toISOString()
      record.accelerator = accelerator
      record.ports = forwards.map(f => ({ guestPort: f.guestPort, hostAddress: '127.0.0.1', hostPort: f.hostPort, protocol: 'tcp' }))
      delete record.exit
      await folder.write(record)
      return pid
    }
    throw new HypervisorError(`qemu could not bind loopback ports for VM ${record.id} after ${PORT_ATTEMPTS} tries: ${lastError}`, { vm: record.id })
  }

  /** Connects QMP (and prepares the agent client) to a running qemu and watches it for exit. */
  private async attach (folder: VmFolder, record: VmRecord, pid: number): Promise<VmHandle> {
    const handle = { pid, marker: folder.dir, paused: false, expectingExit: false, detached: false } as VmHandle
    handle.qmp = await QmpClient.connect(VmFolder.qmpSocket(record), {
      timeoutMs: QMP_CONNECT_TIMEOUT_MS,
      onEvent: event => this.onQmpEvent(record.id, handle, event),
      onClose: () => { void this.onQmpClose(folder, handle) }
    })
    try {
      const status = await handle.qmp.execute<{ running: boolean, status: string }>('query-status', undefined, QMP_COMMAND_TIMEOUT_MS)
      handle.paused = !status.running
    } catch (err) {
      handle.qmp.close()
      throw err
    }
    if (record.image.manifest.agent === 'qemu-ga') handle.agent = new GuestAgentClient(VmFolder.agentSocket(record))
    this.handles.set(record.id, handle)
    return handle
  }

  private detach (handle: VmHandle): void {
    handle.detached = true
    handle.qmp.close()
    handle.agent?.close()
  }

  private onQmpEvent (id: string, handle: VmHandle, event: QmpEvent): void {
    switch (event.event) {
      case 'STOP': handle.paused = true; break
      case 'RESUME': handle.paused = false; break
      case 'RESET': handle.agent?.invalidate(); break
      case 'SHUTDOWN':
        handle.shutdown = { guest: event.data?.guest === true, reason: String(event.data?.reason ?? 'unknown') }
        break
      case 'GUEST_PANICKED':
        handle.shutdown = { guest: true, reason: 'guest-panic' }
        break
    }
    this.log.debug({ vm: id, event: event.event, data: event.data }, 'qmp event')
  }

  /** The monitor socket closed: qemu exited (or is exiting). Unless someone asked for it, that is a crash. */
  private async onQmpClose (folder: VmFolder, handle: VmHandle): Promise<void> {
    if (handle.detached) return
    handle.agent?.close()
    if (this.handles.get(folder.id) === handle) this.handles.delete(folder.id)
    const exited = await waitForExit(handle.pid, handle.marker, EXIT_CONFIRM_MS)
    if (handle.expectingExit) return
    if (!exited) {
      this.log.warn({ vm: folder.id, pid: handle.pid }, 'the QMP connection closed but qemu is still running; the driver will re-attach on the next open')
      return
    }
    const record = await folder.read()
    if (record == null) return
    const shutdown = handle.shutdown
    if (shutdown?.guest === true && shutdown.reason !== 'guest-panic') {
      await this.markExited(folder, record, 'stopped', `the guest powered itself off (${shutdown.reason})`, true)
    } else if (shutdown != null) {
      await this.markExited(folder, record, 'failed', `qemu shut down without being asked (${shutdown.reason}); see ${folder.consoleLog}`, true)
    } else {
      await this.markExited(folder, record, 'failed', `the qemu process (pid ${handle.pid}) exited unexpectedly: killed or crashed; see ${folder.consoleLog}`, true)
    }
  }

  private async markExited (folder: VmFolder, record: VmRecord, state: 'stopped' | 'failed', reason: string, announce: boolean): Promise<void> {
    record.exit = { state, reason, at: new Date().toISOString() }
    await this.saveStopped(folder, record).catch(() => {})
    this.log.warn({ vm: record.id, state, reason }, 'qemu VM exited without being asked to')
    if (announce) this.dispatchEvent(new CustomEvent('vm-exited', { detail: { id: record.id, state, reason } }))
  }

  private async saveStopped (folder: VmFolder, record: VmRecord): Promise<void> {
    delete record.pid
    record.ports = []
    const handle = this.handles.get(record.id)
    if (handle != null) {
      this.detach(handle)
      this.handles.delete(record.id)
    }
    await folder.write(record)
  }

  /** On open: attach to VMs still running, and record those that died while nobody watched. */
  private async reconcile (folder: VmFolder, record: VmRecord): Promise<void> {
    const pid = record.pid ?? await readPidFile(folder.pidFile)
    if (await isQemuAlive(pid, folder.dir)) {
      try {
        await this.attach(folder, record, pid as number)
        this.log.info({ vm: record.id, pid }, 're-attached to a running qemu VM')
      } catch (err) {
        this.log.warn({ vm: record.id, pid, err: (err as Error).message }, 'a qemu VM is running but its monitor did not answer; it is reported running, unattached')
      }
      return
    }
    if (record.pid != null && record.exit == null) {
      await this.markExited(folder, record, 'failed', 'the qemu process exited while no driver was attached (host or node restart, or a crash)', false)
    }
  }

  private async liveHandle (folder: VmFolder, record: VmRecord): Promise<VmHandle | undefined> {
    const handle = this.handles.get(record.id)
    if (handle != null && !handle.qmp.closed && await isQemuAlive(handle.pid, handle.marker)) return handle
    if (record.pid != null && await isQemuAlive(record.pid, folder.dir)) {
      try {
        return await this.attach(folder, record, record.pid)
      } catch {
        return undefined
      }
    }
    return undefined
  }

  private async requireRunning (folder: VmFolder, record: VmRecord, purpose: string): Promise<VmHandle> {
    const handle = await this.liveHandle(folder, record)
    if (handle == null) {
      const state = record.exit?.state ?? 'stopped'
      throw new HypervisorError(`VM ${record.id} is ${state}; start it to ${purpose}`, { vm: record.id, state })
    }
    return handle
  }

  private async resumeHandle (handle: VmHandle): Promise<void> {
    await handle.qmp.execute('cont', undefined, QMP_COMMAND_TIMEOUT_MS)
    handle.paused = false
  }

  /** quit through QMP, then SIGKILL; waits (bounded) for the process to be gone. */
  private async forceOff (record: VmRecord | undefined, handle: VmHandle): Promise<void> {
    handle.expectingExit = true
    try {
      await handle.qmp.execute('quit', undefined, QUIT_TIMEOUT_MS)
    } catch {}
    if (!await waitForExit(handle.pid, handle.marker, QUIT_TIMEOUT_MS)) await this.killProcess(handle.pid, handle.marker)
    this.detach(handle)
    if (record != null && this.handles.get(record.id) === handle) this.handles.delete(record.id)
  }

  private async killProcess (pid: number, marker: string): Promise<void> {
    killQuietly(pid, 'SIGKILL')
    if (!await waitForExit(pid, marker, QUIT_TIMEOUT_MS)) throw new HypervisorError(`qemu (pid ${pid}) did not exit after SIGKILL`, { pid })
  }

  private async load (id: string): Promise<{ folder: VmFolder, record: VmRecord }> {
    let folder: VmFolder
    try {
      folder = new VmFolder(this.dataDir, id)
    } catch {
      throw new VmNotFoundInDriverError(`the qemu driver has no VM ${id}`, { vm: id })
    }
    const record = await folder.read()
    if (record == null) throw new VmNotFoundInDriverError(`the qemu driver has no VM ${id} (no ${folder.recordPath})`, { vm: id })
    return { folder, record }
  }

  private async describe (folder: VmFolder, record: VmRecord): Promise<DriverVm> {
    const handle = this.handles.get(record.id)
    const alive = handle != null ? await isQemuAlive(handle.pid, handle.marker) : await isQemuAlive(record.pid, folder.dir)
    // Gone without a recorded exit and with no operation under way: it died and the close handler is catching up.
    const vanished = record.pid != null && !this.locks.has(record.id)
    const state: DriverVmState = alive ? (handle?.paused === true ? 'suspended' : 'running') : (record.exit?.state ?? (vanished ? 'failed' : 'stopped'))
    const info: Record<string, unknown> = {
      name: record.name,
      image: record.image.name,
      vmDir: folder.dir,
      consoleLog: folder.consoleLog,
      cpus: record.cpus,
      memoryMiB: record.memoryMiB
    }
    if (record.image.manifest.disk != null) info.overlay = folder.overlayPath
    if (alive) info.pid = handle?.pid ?? record.pid
    if (alive && handle == null) info.attached = false
    if (record.accelerator != null) {
      info.accelerator = record.accelerator.name
      info.acceleratorReason = record.accelerator.reason
    }
    if (!alive && record.exit != null) info.exitReason = record.exit.reason
    return { id: record.id, state, ports: alive ? record.ports.map(p => ({ ...p })) : [], info }
  }

  /** One lifecycle operation per VM at a time; exec is not serialised here (the agent queues). */
  private async locked<T> (id: string, work: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve()
    const current = previous.then(work, work)
    const settled = current.catch(() => {})
    this.locks.set(id, settled)
    try {
      return await current
    } finally {
      if (this.locks.get(id) === settled) this.locks.delete(id)
    }
  }
}

/** An image dir is an image folder itself, or holds image folders one level down. */
async function candidateImageFolders (dir: string): Promise<string[]> {
  const absolute = resolve(dir)
  if (await exists(join(absolute, MANIFEST_FILE))) return [absolute]
  try {
    const entries = await readdir(absolute, { withFileTypes: true })
    const folders: string[] = []
    for (const entry of entries) {
      if (entry.isDirectory() && await exists(join(absolute, entry.name, MANIFEST_FILE))) folders.push(join(absolute, entry.name))
    }
    return folders.sort()
  } catch {
    return []
  }
}

async function exists (path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}

function stderrOf (err: unknown): string {
  const e = err as { stderr?: string, message?: string, killed?: boolean, signal?: string }
  const stderr = typeof e.stderr === 'string' ? e.stderr.trim() : ''
  if (stderr !== '') return stderr
  if (e.killed === true) return `timed out and was killed (${e.signal ?? 'SIGTERM'})`
  return e.message ?? String(err)
}

async function consoleTail (path: string): Promise<string> {
  try {
    const lines = (await readFile(path, 'utf8')).trimEnd().split('\n')
    return lines.slice(-CONSOLE_TAIL_LINES).join('\n')
  } catch {
    return '(no console output)'
  }
}

export function createQemuDriver (components: QemuDriverComponents, init: QemuDriverInit): QemuDriver {
  return new QemuDriver(components, init)
}
