import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type {
  Arch, CreateVmSpec, Driver, DriverImage, DriverVm, DriverVmState, ExecRequest, ExecResult, GuestOs, HostCapacity,
  OperationOptions, PortForward
} from '../types.ts'
import {
  DriverUnavailableError, ExecTimeoutError, GuestAgentUnavailableError, HypervisorError, HypervisorLicenseError, ImageInvalidError,
  VmNotFoundInDriverError
} from '../errors.ts'
import * as cmd from './commands.ts'
import {
  DEFAULT_CLONE_TIMEOUT_MS, DEFAULT_COMMAND_TIMEOUT_MS, DEFAULT_DHCP_LEASES_PATH, DEFAULT_RESERVE, DEFAULT_STOP_TIMEOUT_MS,
  TESTED_MAJOR_VERSIONS
} from './constants.ts'
import {
  archOf, classifyFailure, guestOsOf, guestOsOfOsType, isPrlctlExecFailure, parseArch, parseConfigPvs, parseDhcpLeases, parseDiskFree,
  parseHostCpuMemory, parsePrlctlVersion, parseServerInfo, parseSnapshotCreated, parseSnapshotList, parseVmInfoList, toDriverState,
  type FailureContext, type ParallelsServerInfo, type ParallelsSnapshot, type ParallelsVmInfo
} from './parse.ts'
import { PortRelay } from './relay.ts'
import { createProcessRunner, type Runner, type RunOptions, type RunResult } from './runner.ts'

export interface ParallelsDriverComponents {
  logger: Logger
  /** Runs prlctl, prlsrvctl and host tools; tests pass one that replays recorded output. */
  runner?: Runner
  /** Reads Parallels' DHCP leases; tests pass a fake. */
  readTextFile?: (path: string) => Promise<string>
}

export interface ParallelsDriverInit {
  /** Default: prlctl on PATH (Parallels installs it in /usr/local/bin). */
  prlctlPath?: string
  prlsrvctlPath?: string
  labels?: Record<string, string>
  /** Clone with --linked where Parallels can (not .macvm). Default true. */
  linkedClones?: boolean
  /** Where clones are created (prlctl clone --dst); Parallels' VM home when absent. */
  vmDirectory?: string
  /** Left for macOS and Parallels: capacity() reports the rest. */
  reserve?: Partial<typeof DEFAULT_RESERVE>
  /** prlctl exec --current-user: run as the guest's logged-in user instead of root/SYSTEM. */
  execAsCurrentUser?: boolean
  stopTimeoutMs?: number
  commandTimeoutMs?: number
  cloneTimeoutMs?: number
  /** How often to look for VMs that stopped on their own ('vm-exited'); 0 turns it off. */
  watchIntervalMs?: number
  dhcpLeasesPath?: string
}

interface OpOptions {
  timeoutMs?: number
  signal?: AbortSignal
  onOutput?: RunOptions['onOutput']
}

const clip = (s: string, max = 120): string => s.length > max ? s.slice(0, max) + '…' : s

/**
 * Parallels Desktop through prlctl. Every VM it creates is a (linked) clone named corral-<id> of a
 * Parallels template; the VMs keep running when the node stops and list() finds them again.
 */
export class ParallelsDriver extends EventTarget implements Driver {
  readonly name = 'parallels' as const
  readonly simulated = false
  private readonly logger: Logger
  private readonly runner: Runner
  private readonly readTextFile: (path: string) => Promise<string>
  private readonly init: ParallelsDriverInit
  private readonly reserve: typeof DEFAULT_RESERVE
  private readonly relays = new Map<string, Map<number, PortRelay>>()
  private readonly guestOs = new Map<string, GuestOs>()
  private readonly guestIp = new Map<string, string>()
  private readonly lastState = new Map<string, DriverVmState>()
  private readonly busy = new Map<string, number>()
  private server?: ParallelsServerInfo
  private host?: { cpus: number, memoryMiB: number, arch: Arch }
  private watchTimer?: NodeJS.Timeout
  private polling = false

  constructor (components: ParallelsDriverComponents, init: ParallelsDriverInit = {}) {
    super()
    this.logger = components.logger
    this.runner = components.runner ?? createProcessRunner()
    this.readTextFile = components.readTextFile ?? (async (path) => await readFile(path, 'utf8'))
    this.init = init
    this.reserve = { ...DEFAULT_RESERVE, ...init.reserve }
  }

  async open (): Promise<void> {
    const { version, major } = parsePrlctlVersion((await this.runOk(cmd.prlctlVersion(), { op: 'read the Parallels Desktop version' })).stdout)
    if (!TESTED_MAJOR_VERSIONS.includes(major)) {
      this.logger.warn({ version, tested: TESTED_MAJOR_VERSIONS }, 'parallels: this Parallels Desktop version is newer or older than the ones corral was checked against; report anything odd')
    }
    const server = await this.serverInfo(true)
    if (server.licenseState != null && server.licenseState !== 'valid') {
      throw new HypervisorLicenseError(
        `Parallels Desktop's license is "${server.licenseState}", so it will not run VMs: activate Parallels Desktop Pro or Business on this Mac (prlsrvctl info --license shows the details), then start corral again`,
        { licenseState: server.licenseState })
    }
    this.logger.info({ version, vmHome: server.vmHome }, 'parallels driver ready')
    await this.checkForExits()
    const interval = this.init.watchIntervalMs ?? 0
    if (interval > 0 && this.watchTimer == null) {
      this.watchTimer = setInterval(() => { void this.checkForExits() }, interval)
      this.watchTimer.unref()
    }
  }

  async close (): Promise<void> {
    if (this.watchTimer != null) clearInterval(this.watchTimer)
    this.watchTimer = undefined
    const ids = [...this.relays.keys()]
    for (const id of ids) await this.closeForwards(id)
  }

  async capacity (): Promise<HostCapacity> {
    const server = await this.serverInfo()
    const host = await this.hostFacts()
    const folder = this.init.vmDirectory ?? server.vmHome
    const disk = parseDiskFree((await this.runOk(cmd.diskFree(folder), { op: `read free disk space of ${folder}` })).stdout)
    // Free space already excludes what corral's clones hold, and the scheduler subtracts each VM's
    // image disk from the total; adding the VMs' disks back keeps the two from counting them twice.
    const held = (await this.corralVms()).reduce((sum, vm) => sum + (vm.info.diskMiB ?? 0), 0)
    return {
      cpus: Math.max(1, host.cpus - this.reserve.cpus),
      memoryMiB: Math.max(0, host.memoryMiB - this.reserve.memoryMiB),
      diskMiB: Math.max(0, Math.min(disk.totalMiB, disk.availableMiB + held) - this.reserve.diskMiB),
      arch: host.arch,
      os: 'macos',
      driver: 'parallels',
      labels: { ...this.init.labels },
      simulated: false,
      accelerator: {
        name: 'parallels',
        reason: `Parallels Desktop ${server.version ?? '(version unknown)'} runs VMs hardware-accelerated on this ${host.arch} Mac` +
          (host.arch === 'arm64' ? ' (Apple Hypervisor/Virtualization frameworks; arm64 guests only)' : ' (Intel VT-x)')
      }
    }
  }

  async listImages (): Promise<DriverImage[]> {
    const hostArch = (await this.hostFacts()).arch
    const templates = parseVmInfoList((await this.runOk(cmd.listTemplates(), { op: 'list templates' })).stdout)
    return templates.map(t => this.imageOf(t, hostArch))
  }

  async inspectImage (name: string, path: string): Promise<DriverImage> {
    const bundle = path.replace(/\/+$/, '')
    if (!/\.(pvm|macvm)$/i.test(bundle)) {
      throw new ImageInvalidError(`${JSON.stringify(path)} is not a Parallels VM bundle: give the path of a .pvm or .macvm folder (Parallels keeps them in its VM home, e.g. ~/Parallels)`, { path })
    }
    const info = await stat(bundle).catch(() => undefined)
    if (info == null || !info.isDirectory()) {
      throw new ImageInvalidError(`${bundle} does not exist on this host or is not a folder: copy the whole VM bundle here first, then register it`, { path })
    }
    const xml = await readFile(join(bundle, 'config.pvs'), 'utf8').catch(() => undefined)
    if (xml == null) {
      throw new ImageInvalidError(`${bundle} has no config.pvs, so it is not a complete Parallels VM: copy the whole bundle again or export it from Parallels Desktop`, { path })
    }
    let facts
    try {
      facts = parseConfigPvs(xml)
    } catch (err) {
      throw new ImageInvalidError(`${bundle}/config.pvs cannot be read: ${(err as Error).message}`, { path })
    }
    const macvm = /\.macvm$/i.test(bundle)
    const os = macvm ? 'macos' : guestOsOfOsType(facts.osType)
    if (os == null) {
      throw new ImageInvalidError(
        `cannot tell the guest OS of ${bundle} from its config.pvs (OsType ${facts.osType ?? 'missing'}): ` +
        'register the VM in Parallels Desktop and turn it into a template (prlctl set <vm> --template on); corral lists templates with their OS',
        { path })
    }
    return {
      name,
      path: bundle,
      os,
      arch: macvm ? 'arm64' : (await this.hostFacts()).arch,
      defaultCpus: facts.cpus ?? 2,
      defaultMemoryMiB: facts.memoryMiB ?? 2048,
      diskMiB: facts.diskMiB ?? 0,
      simulated: false
    }
  }

  async create (spec: CreateVmSpec, options?: OperationOptions): Promise<DriverVm> {
    const name = cmd.vmName(spec.id)
    return await this.whileBusy(spec.id, async () => {
      if (await this.find(name) != null) {
        throw new HypervisorError(`a Parallels VM named ${name} already exists: delete it (prlctl delete ${name}) or create the VM under another id`, { vm: name })
      }
      const source = await this.cloneSource(spec.image)
      const linked = (this.init.linkedClones ?? true) && !/\.macvm$/i.test(source.home)
      try {
        await this.runOk(
          cmd.clone(source.uuid, name, { linked, ...(this.init.vmDirectory != null ? { destination: this.init.vmDirectory } : {}) }),
          { op: `clone ${spec.image.name} into`, vm: name },
          { timeoutMs: this.init.cloneTimeoutMs ?? DEFAULT_CLONE_TIMEOUT_MS, signal: options?.signal })
        await this.runOk(cmd.setResources(name, spec.cpus, spec.memoryMiB), { op: 'set CPUs and memory of', vm: name }, { signal: options?.signal })
      } catch (err) {
        await this.discard(name)
        throw err
      }
      this.guestOs.set(spec.id, spec.image.os)
      return this.settled(spec.id, await this.inspect(spec.id, options), { linkedClone: linked, image: spec.image.name })
    })
  }

  async start (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.whileBusy(id, async () => {
      const name = cmd.vmName(id)
      const vm = await this.inspect(id, options)
      const state = toDriverState(vm.state)
      if (state === 'running') return this.settled(id, vm)
      this.guestIp.delete(id)
      const argv = state === 'suspended' ? cmd.resume(name) : cmd.start(name)
      await this.runOk(argv, { op: 'start', vm: name }, { signal: options?.signal })
      return this.settled(id, await this.inspect(id, options))
    })
  }

  async stop (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.whileBusy(id, async () => {
      const name = cmd.vmName(id)
      const vm = await this.inspect(id, options)
      await this.closeForwards(id)
      this.guestIp.delete(id)
      const raw = vm.state.toLowerCase()
      const state = toDriverState(raw)
      if (state === 'stopped') return this.settled(id, vm)
      if (raw === 'suspended' || raw === 'suspending') {
        await this.runOk(cmd.stop(name, 'drop-state'), { op: 'stop', vm: name }, { signal: options?.signal })
      } else if (raw === 'paused' || state === 'failed') {
        await this.runOk(cmd.stop(name, 'kill'), { op: 'stop', vm: name }, { signal: options?.signal })
      } else {
        const graceful = await this.run(cmd.stop(name, 'graceful'), { timeoutMs: this.init.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS, signal: options?.signal })
        if (graceful.exitCode !== 0 || graceful.timedOut === true) {
          const err = classifyFailure(graceful, { op: 'shut down', vm: name })
          if (err instanceof VmNotFoundInDriverError) throw err
          this.logger.warn({ vm: name, reason: err.message }, 'parallels: graceful shutdown did not finish; stopping the VM by force')
          await this.runOk(cmd.stop(name, 'kill'), { op: 'force-stop', vm: name }, { signal: options?.signal })
        }
      }
      return this.settled(id, await this.inspect(id, options))
    })
  }

  async suspend (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.whileBusy(id, async () => {
      const name = cmd.vmName(id)
      const vm = await this.inspect(id, options)
      const state = toDriverState(vm.state)
      if (state === 'suspended') return this.settled(id, vm)
      if (state !== 'running') throw new HypervisorError(`cannot suspend ${name}: it is ${vm.state}; only a running VM can be suspended`, { vm: name, state: vm.state })
      await this.runOk(cmd.suspend(name), { op: 'suspend', vm: name }, { signal: options?.signal })
      return this.settled(id, await this.inspect(id, options))
    })
  }

  async resume (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.whileBusy(id, async () => {
      const name = cmd.vmName(id)
      const vm = await this.inspect(id, options)
      const state = toDriverState(vm.state)
      if (state === 'running') return this.settled(id, vm)
      if (state !== 'suspended') throw new HypervisorError(`cannot resume ${name}: it is ${vm.state}, not suspended; start it instead`, { vm: name, state: vm.state })
      await this.runOk(cmd.resume(name), { op: 'resume', vm: name }, { signal: options?.signal })
      return this.settled(id, await this.inspect(id, options))
    })
  }

  async restart (id: string, options?: OperationOptions): Promise<DriverVm> {
    const vm = await this.inspect(id, options)
    const state = toDriverState(vm.state)
    if (state !== 'running') return await this.start(id, options)
    return await this.whileBusy(id, async () => {
      const name = cmd.vmName(id)
      this.guestIp.delete(id)
      try {
        await this.runOk(cmd.restart(name), { op: 'restart', vm: name }, { signal: options?.signal })
      } catch (err) {
        // A restart asks the guest to reboot itself; without Parallels Tools only a reset works.
        if (!(err instanceof GuestAgentUnavailableError)) throw err
        this.logger.warn({ vm: name }, 'parallels: guest cannot restart itself; resetting the VM')
        await this.runOk(cmd.reset(name), { op: 'reset', vm: name }, { signal: options?.signal })
      }
      return this.settled(id, await this.inspect(id, options))
    })
  }

  async delete (id: string, options?: OperationOptions): Promise<void> {
    const name = cmd.vmName(id)
    await this.whileBusy(id, async () => {
      await this.closeForwards(id)
      const vm = await this.find(name, options)
      if (vm != null) {
        const raw = vm.state.toLowerCase()
        const state = toDriverState(raw)
        if (raw === 'suspended') {
          await this.ignoreNotFound(this.runOk(cmd.stop(name, 'drop-state'), { op: 'stop', vm: name }, { signal: options?.signal }))
        } else if (state === 'running' || state === 'suspended') {
          await this.ignoreNotFound(this.runOk(cmd.stop(name, 'kill'), { op: 'stop', vm: name }, { signal: options?.signal }))
        }
        await this.ignoreNotFound(this.runOk(cmd.remove(name), { op: 'delete', vm: name }, { signal: options?.signal }))
      }
      this.forget(id)
    })
  }

  async exec (id: string, request: ExecRequest): Promise<ExecResult> {
    request.signal?.throwIfAborted()
    const name = cmd.vmName(id)
    let os = this.guestOs.get(id)
    if (os == null) {
      const vm = await this.inspect(id, request)
      os = guestOsOf(vm.os, vm.home)
    }
    const argv = cmd.exec(name, os, request.command, request.env ?? {}, { currentUser: this.init.execAsCurrentUser ?? false })
    const result = await this.run(argv, { timeoutMs: request.timeoutMs, signal: request.signal, onOutput: request.onOutput })
    if (result.timedOut === true) {
      throw new ExecTimeoutError(
        `${JSON.stringify(clip(request.command.join(' ')))} did not finish within ${request.timeoutMs} ms in ${name} and was stopped ` +
        '(interrupting prlctl exec cancels the guest process where Parallels Tools allow it); raise timeoutSeconds if it needs longer',
        { vm: name, timeoutMs: request.timeoutMs })
    }
    if (isPrlctlExecFailure(result)) throw classifyFailure(result, { op: 'run commands', vm: name })
    return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr }
  }

  async forwardPort (id: string, guestPort: number): Promise<PortForward> {
    if (!Number.isInteger(guestPort) || guestPort < 1 || guestPort > 65535) {
      throw new HypervisorError(`guest port ${guestPort} is not a TCP port: use 1-65535`, { guestPort })
    }
    const existing = this.relays.get(id)?.get(guestPort)
    if (existing != null) return forward(guestPort, existing)
    const name = cmd.vmName(id)
    const vm = await this.inspect(id)
    if (toDriverState(vm.state) !== 'running') {
      throw new HypervisorError(`${name} is ${vm.state}; ports can be forwarded only while it runs — start it first`, { vm: name, state: vm.state })
    }
    await this.guestAddress(id, vm)
    const relay = await PortRelay.listen(
      async () => ({ host: await this.guestAddress(id), port: guestPort }),
      this.logger,
      () => this.guestIp.delete(id))
    const byPort = this.relays.get(id) ?? new Map<number, PortRelay>()
    byPort.set(guestPort, relay)
    this.relays.set(id, byPort)
    return forward(guestPort, relay)
  }

  async list (): Promise<DriverVm[]> {
    return (await this.corralVms()).map(({ id, info }) => this.describe(id, info))
  }

  /** Snapshots are Parallels-only (not in the Driver contract); .macvm VMs cannot have them. */
  async createSnapshot (id: string, snapshotName: string, description?: string, options?: OperationOptions): Promise<string> {
    const name = cmd.vmName(id)
    const result = await this.runOk(cmd.snapshotCreate(name, snapshotName, description), { op: 'snapshot', vm: name }, { signal: options?.signal })
    return parseSnapshotCreated(result.stdout)
  }

  async listSnapshots (id: string, options?: OperationOptions): Promise<ParallelsSnapshot[]> {
    const name = cmd.vmName(id)
    return parseSnapshotList((await this.runOk(cmd.snapshotList(name), { op: 'list snapshots of', vm: name }, { signal: options?.signal })).stdout)
  }

  async revertSnapshot (id: string, snapshotId: string, options?: OperationOptions & { skipResume?: boolean }): Promise<DriverVm> {
    return await this.whileBusy(id, async () => {
      const name = cmd.vmName(id)
      this.guestIp.delete(id)
      await this.runOk(cmd.snapshotSwitch(name, snapshotId, { skipResume: options?.skipResume }), { op: 'switch to a snapshot of', vm: name }, { signal: options?.signal })
      return this.settled(id, await this.inspect(id, options))
    })
  }

  async deleteSnapshot (id: string, snapshotId: string, options?: OperationOptions): Promise<void> {
    const name = cmd.vmName(id)
    await this.runOk(cmd.snapshotDelete(name, snapshotId), { op: 'delete a snapshot of', vm: name }, { signal: options?.signal })
  }

  /**
   * Compares what Parallels reports with what corral last saw and announces VMs that stopped or
   * vanished while nobody asked (guest power-off, crash, deletion in the Parallels UI). Called by the
   * watch timer; public so tests and the host agent can run it on demand.
   */
  async checkForExits (): Promise<void> {
    if (this.polling) return
    this.polling = true
    let vms: Array<{ id: string, info: ParallelsVmInfo }>
    try {
      vms = await this.corralVms()
    } catch (err) {
      this.logger.warn({ err }, 'parallels: could not list VMs to look for unexpected exits')
      return
    } finally {
      this.polling = false
    }
    const seen = new Set<string>()
    for (const { id, info } of vms) {
      seen.add(id)
      const now = toDriverState(info.state)
      const before = this.lastState.get(id)
      this.lastState.set(id, now)
      if (this.busy.has(id) || before !== 'running' || now === 'running' || now === 'suspended') continue
      void this.closeForwards(id)
      this.emitExit(id, now, `Parallels reports the VM ${info.state} without corral asking (guest shut down or crashed)`)
    }
    for (const [id, before] of this.lastState) {
      if (seen.has(id) || this.busy.has(id)) continue
      this.lastState.delete(id)
      if (before === 'running') {
        void this.closeForwards(id)
        this.emitExit(id, 'failed', 'the VM disappeared from Parallels (deleted or unregistered outside corral)')
      }
    }
  }

  private emitExit (id: string, state: DriverVmState, reason: string): void {
    this.logger.warn({ id, state, reason }, 'parallels: VM exited on its own')
    this.dispatchEvent(new CustomEvent('vm-exited', { detail: { id, state, reason } }))
  }

  private async run (argv: string[], options: OpOptions = {}): Promise<RunResult> {
    const [tool, ...args] = argv
    const program = tool === 'prlctl'
      ? this.init.prlctlPath ?? 'prlctl'
      : tool === 'prlsrvctl' ? this.init.prlsrvctlPath ?? 'prlsrvctl' : tool
    // Only the subcommand is logged: exec arguments can carry secrets from the job's environment.
    this.logger.debug({ tool, subcommand: args[0] }, 'parallels: running')
    try {
      return await this.runner([program, ...args], {
        timeoutMs: options.timeoutMs ?? this.init.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
        ...(options.signal != null ? { signal: options.signal } : {}),
        ...(options.onOutput != null ? { onOutput: options.onOutput } : {})
      })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new DriverUnavailableError(
          tool === 'prlctl' || tool === 'prlsrvctl'
            ? `${program} was not found: install Parallels Desktop Pro or Business edition (it puts ${tool} in /usr/local/bin) or set the path to ${tool} in corral's parallels settings`
            : `${program} was not found on this host: the parallels driver needs macOS's own ${tool}`,
          { program })
      }
      throw err
    }
  }

  private async runOk (argv: string[], context: FailureContext, options: OpOptions = {}): Promise<RunResult> {
    const result = await this.run(argv, options)
    if (result.exitCode !== 0 || result.timedOut === true) {
      throw classifyFailure(result, { ...(this.server != null ? { vmHome: this.init.vmDirectory ?? this.server.vmHome } : {}), ...context })
    }
    return result
  }

  private async ignoreNotFound (op: Promise<unknown>): Promise<void> {
    try {
      await op
    } catch (err) {
      if (!(err instanceof VmNotFoundInDriverError)) throw err
    }
  }

  private async whileBusy<T> (id: string, fn: () => Promise<T>): Promise<T> {
    this.busy.set(id, (this.busy.get(id) ?? 0) + 1)
    try {
      return await fn()
    } finally {
      const left = (this.busy.get(id) ?? 1) - 1
      if (left <= 0) this.busy.delete(id)
      else this.busy.set(id, left)
    }
  }

  private async serverInfo (refresh = false): Promise<ParallelsServerInfo> {
    if (this.server == null || refresh) {
      this.server = parseServerInfo((await this.runOk(cmd.serverInfo(), { op: 'read Parallels host information' })).stdout)
    }
    return this.server
  }

  private async hostFacts (): Promise<{ cpus: number, memoryMiB: number, arch: Arch }> {
    if (this.host == null) {
      const cpuMemory = parseHostCpuMemory((await this.runOk(cmd.hostCpuMemory(), { op: 'read CPU count and memory' })).stdout)
      const arch = parseArch((await this.runOk(cmd.hostArch(), { op: 'read the CPU architecture' })).stdout)
      this.host = { ...cpuMemory, arch }
    }
    return this.host
  }

  /** The VM's Parallels record; VmNotFoundInDriverError if Parallels has none. */
  private async inspect (id: string, options?: OperationOptions): Promise<ParallelsVmInfo> {
    const name = cmd.vmName(id)
    const vm = await this.find(name, options)
    if (vm == null) throw new VmNotFoundInDriverError(`Parallels has no VM ${name}: it was deleted or unregistered outside corral, or never created`, { vm: name })
    this.guestOs.set(id, guestOsOf(vm.os, vm.home))
    return vm
  }

  private async find (nameOrUuid: string, options?: OperationOptions): Promise<ParallelsVmInfo | undefined> {
    const result = await this.run(cmd.vmInfo(nameOrUuid), { signal: options?.signal })
    if (result.exitCode !== 0 || result.timedOut === true) {
      const err = classifyFailure(result, { op: 'look up', vm: nameOrUuid })
      if (err instanceof VmNotFoundInDriverError) return undefined
      throw err
    }
    const vms = parseVmInfoList(result.stdout)
    return vms.find(vm => vm.name === nameOrUuid || vm.uuid === nameOrUuid) ?? (vms.length === 1 ? vms[0] : undefined)
  }

  private async corralVms (): Promise<Array<{ id: string, info: ParallelsVmInfo }>> {
    const all = parseVmInfoList((await this.runOk(cmd.listVms(), { op: 'list VMs' })).stdout)
    return all.flatMap(info => {
      const id = cmd.idFromVmName(info.name)
      if (id == null || info.template) return []
      this.guestOs.set(id, guestOsOf(info.os, info.home))
      return [{ id, info }]
    })
  }

  /**
   * The registered template or VM to clone for an image: found by bundle path (then by name among
   * templates); an unregistered bundle registered by inspectImage's path is registered first.
   */
  private async cloneSource (image: DriverImage): Promise<ParallelsVmInfo> {
    const home = image.path.replace(/\/+$/, '')
    const templates = parseVmInfoList((await this.runOk(cmd.listTemplates(), { op: 'list templates' })).stdout)
    const byHome = (vms: ParallelsVmInfo[]): ParallelsVmInfo | undefined => vms.find(vm => vm.home === home)
    const template = byHome(templates) ?? templates.find(t => t.name === image.name)
    if (template != null) return template
    const isBundle = /\.(pvm|macvm)$/i.test(home)
    const registered = byHome(parseVmInfoList((await this.runOk(cmd.listVms(), { op: 'list VMs' })).stdout))
    if (registered != null) return registered
    if (!isBundle) {
      throw new ImageInvalidError(`image ${image.name} is neither a Parallels template on this host nor a .pvm/.macvm bundle (path ${JSON.stringify(image.path)}): list templates with prlctl list --template`, { image: image.name })
    }
    await this.runOk(cmd.register(home), { op: `register ${home}` })
    const afterRegister = byHome(parseVmInfoList((await this.runOk(cmd.listVms(), { op: 'list VMs' })).stdout))
    if (afterRegister == null) throw new HypervisorError(`prlctl register ${home} succeeded but Parallels lists no VM in that folder; register it by hand to see why`, { image: image.name })
    return afterRegister
  }

  /** Best-effort removal of a half-made clone; failures are logged, the original error wins. */
  private async discard (name: string): Promise<void> {
    try {
      const vm = await this.find(name)
      if (vm == null) return
      if (toDriverState(vm.state) !== 'stopped') await this.run(cmd.stop(name, 'kill'))
      const result = await this.run(cmd.remove(name))
      if (result.exitCode !== 0) this.logger.warn({ vm: name, prlctl: result.stderr.trim() }, 'parallels: could not remove a half-made clone; delete it by hand')
    } catch (err) {
      this.logger.warn({ err, vm: name }, 'parallels: could not remove a half-made clone; delete it by hand')
    }
  }

  private imageOf (t: ParallelsVmInfo, hostArch: Arch): DriverImage {
    const macvm = /\.macvm$/i.test(t.home)
    return {
      name: t.name,
      arch: macvm ? 'arm64' : archOf(t.cpuType, hostArch),
      os: guestOsOf(t.os, t.home),
      path: t.home,
      defaultCpus: t.cpus ?? 2,
      defaultMemoryMiB: t.memoryMiB ?? 2048,
      diskMiB: t.diskMiB ?? 0,
      simulated: false
    }
  }

  /**
   * The guest's IPv4 address on Parallels' Shared network: what Parallels Tools report, else the
   * newest DHCP lease for the VM's MAC (macOS guests on Apple silicon have no Tools-reported address).
   */
  private async guestAddress (id: string, known?: ParallelsVmInfo): Promise<string> {
    const cached = this.guestIp.get(id)
    if (cached != null) return cached
    const vm = known ?? await this.inspect(id)
    let ip: string | undefined = vm.ipv4[0]
    if (ip == null && vm.mac != null) {
      const leasesPath = this.init.dhcpLeasesPath ?? DEFAULT_DHCP_LEASES_PATH
      const leases = await this.readTextFile(leasesPath).catch(() => '')
      ip = parseDhcpLeases(leases, vm.mac)
    }
    if (ip == null) {
      throw new GuestAgentUnavailableError(
        `${vm.name} has no IPv4 address yet: Parallels Tools report none and Parallels' DHCP leases have none for its network adapter; ` +
        'wait until the guest has booted with its first adapter on the Shared network, then retry',
        { vm: vm.name })
    }
    this.guestIp.set(id, ip)
    return ip
  }

  private async closeForwards (id: string): Promise<void> {
    const byPort = this.relays.get(id)
    if (byPort == null) return
    this.relays.delete(id)
    for (const relay of byPort.values()) await relay.close()
  }

  private forget (id: string): void {
    this.guestOs.delete(id)
    this.guestIp.delete(id)
    this.lastState.delete(id)
  }

  /** The VM as an operation left it: remembered, so the exit watch does not mistake it for a crash. */
  private settled (id: string, vm: ParallelsVmInfo, extra: Record<string, unknown> = {}): DriverVm {
    this.lastState.set(id, toDriverState(vm.state))
    return this.describe(id, vm, extra)
  }

  private describe (id: string, vm: ParallelsVmInfo, extra: Record<string, unknown> = {}): DriverVm {
    const state = toDriverState(vm.state)
    return {
      id,
      state,
      ports: [...(this.relays.get(id)?.entries() ?? [])].map(([guestPort, relay]) => forward(guestPort, relay)),
      info: {
        name: vm.name,
        uuid: vm.uuid,
        parallelsState: vm.state,
        home: vm.home,
        guestOs: guestOsOf(vm.os, vm.home),
        guestTools: vm.guestTools.state,
        ...(vm.ipv4[0] != null ? { ip: vm.ipv4[0] } : {}),
        ...extra
      }
    }
  }
}

const forward = (guestPort: number, relay: PortRelay): PortForward =>
  ({ guestPort, hostAddress: '127.0.0.1', hostPort: relay.hostPort, protocol: 'tcp' })

export function createParallelsDriver (components: ParallelsDriverComponents, init: ParallelsDriverInit = {}): ParallelsDriver {
  return new ParallelsDriver(components, init)
}
