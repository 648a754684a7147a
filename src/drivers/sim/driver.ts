import { setTimeout as sleep } from 'node:timers/promises'
import type { Server, AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { Store } from '../../store/types.ts'
import type {
  Arch, CreateVmSpec, Driver, DriverImage, DriverVm, DriverVmState, ExecRequest, ExecResult, HostCapacity, OperationOptions, PortForward
} from '../types.ts'
import { ExecTimeoutError, HypervisorError, ImageInvalidError, VmNotFoundInDriverError } from '../errors.ts'
import { builtinSimImages } from './builtin.ts'
import { runSimCommand } from './commands.ts'
import { listenSimPort } from './port-responder.ts'

export interface SimTimings {
  createMs: number
  startMs: number
  stopMs: number
  deleteMs: number
  execMs: number
}

export interface SimDriverInit {
  cpus: number
  memoryMiB: number
  diskMiB: number
  arch: Arch
  labels: Record<string, string>
  timings: SimTimings
}

export interface SimDriverComponents {
  logger: Logger
  /** Simulated VMs outlive the node like real ones do, so restarts can be reconciled. */
  store: Store
}

interface SimVm {
  id: string
  name: string
  image: DriverImage
  state: DriverVmState
  ports: Array<{ guestPort: number, hostPort: number }>
}

const COLLECTION = 'sim-vms'

/** Simulated hypervisor: no VMs really run. Always labelled simulated; never chosen by auto-detection. */
export class SimDriver extends EventTarget implements Driver {
  readonly name = 'sim' as const
  readonly simulated = true
  private readonly components: SimDriverComponents
  private readonly init: SimDriverInit
  private readonly listeners = new Map<string, Server>()

  constructor (components: SimDriverComponents, init: SimDriverInit) {
    super()
    this.components = components
    this.init = init
  }

  async open (): Promise<void> {
    // Forwards are live sockets: after a restart they must be opened again on request.
    for (const vm of this.components.store.list<SimVm>(COLLECTION)) {
      if (vm.ports.length > 0) await this.save({ ...vm, ports: [] })
    }
  }

  async close (): Promise<void> {
    for (const server of this.listeners.values()) server.close()
    this.listeners.clear()
  }

  async capacity (): Promise<HostCapacity> {
    return {
      cpus: this.init.cpus,
      memoryMiB: this.init.memoryMiB,
      diskMiB: this.init.diskMiB,
      arch: this.init.arch,
      os: 'simulated',
      driver: 'sim',
      labels: { ...this.init.labels },
      simulated: true,
      accelerator: { name: 'sim', reason: 'the sim driver was asked for: VMs are simulated, nothing boots' }
    }
  }

  async listImages (): Promise<DriverImage[]> {
    return builtinSimImages(this.init.arch)
  }

  async inspectImage (name: string, path: string): Promise<DriverImage> {
    // A sim host can "run" any path: it describes a Linux image unless the name says otherwise.
    if (path.trim() === '') throw new ImageInvalidError('the image path is empty: give the path of the image to register')
    const os = /mac/i.test(name) ? 'macos' : /win/i.test(name) ? 'windows' : 'linux'
    return { name, path, os, arch: this.init.arch, defaultCpus: 2, defaultMemoryMiB: 2048, diskMiB: 20480, simulated: true, ports: [22, 80] }
  }

  async create (spec: CreateVmSpec, options?: OperationOptions): Promise<DriverVm> {
    await this.delay(this.init.timings.createMs, options)
    const vm: SimVm = { id: spec.id, name: spec.name, image: spec.image, state: 'stopped', ports: [] }
    await this.save(vm)
    return this.describe(vm)
  }

  async start (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.transition(id, this.init.timings.startMs, 'running', options)
  }

  async stop (id: string, options?: OperationOptions): Promise<DriverVm> {
    this.closeForwards(id)
    const vm = await this.transition(id, this.init.timings.stopMs, 'stopped', options)
    await this.save({ ...this.get(id), ports: [] })
    return { ...vm, ports: [] }
  }

  async suspend (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.transition(id, this.init.timings.stopMs, 'suspended', options)
  }

  async resume (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.transition(id, this.init.timings.startMs, 'running', options)
  }

  async restart (id: string, options?: OperationOptions): Promise<DriverVm> {
    return await this.transition(id, this.init.timings.stopMs + this.init.timings.startMs, 'running', options)
  }

  async delete (id: string, options?: OperationOptions): Promise<void> {
    if (this.components.store.get<SimVm>(COLLECTION, id) == null) return
    this.closeForwards(id)
    await this.delay(this.init.timings.deleteMs, options)
    await this.components.store.delete(COLLECTION, id)
  }

  async exec (id: string, request: ExecRequest): Promise<ExecResult> {
    const vm = this.get(id)
    if (vm.state !== 'running') throw new HypervisorError(`simulated VM ${id} is ${vm.state}; start it before running commands`)
    const result = runSimCommand({ id, name: vm.name, os: vm.image.os, arch: vm.image.arch }, request.command, request.env ?? {})
    const duration = this.init.timings.execMs + (result.durationMs ?? 0)
    if (duration > request.timeoutMs) {
      await this.delay(request.timeoutMs, { signal: request.signal })
      throw new ExecTimeoutError(`"${request.command.join(' ')}" did not finish within ${request.timeoutMs} ms and was stopped; raise timeoutSeconds if it needs longer`)
    }
    await this.delay(duration, { signal: request.signal })
    if (result.stdout !== '') request.onOutput?.('stdout', Buffer.from(result.stdout))
    if (result.stderr !== '') request.onOutput?.('stderr', Buffer.from(result.stderr))
    return { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr }
  }

  async forwardPort (id: string, guestPort: number): Promise<PortForward> {
    const vm = this.get(id)
    if (vm.state !== 'running') throw new HypervisorError(`simulated VM ${id} is ${vm.state}; ports can be forwarded only while it runs`)
    const existing = vm.ports.find(p => p.guestPort === guestPort)
    if (existing != null && this.listeners.has(`${id}:${guestPort}`)) return forward(existing)
    const server = await listenSimPort(vm.name, guestPort)
    this.listeners.set(`${id}:${guestPort}`, server)
    const hostPort = (server.address() as AddressInfo).port
    await this.save({ ...vm, ports: [...vm.ports.filter(p => p.guestPort !== guestPort), { guestPort, hostPort }] })
    return forward({ guestPort, hostPort })
  }

  async list (): Promise<DriverVm[]> {
    return this.components.store.list<SimVm>(COLLECTION).map(vm => this.describe(vm))
  }

  private get (id: string): SimVm {
    const vm = this.components.store.get<SimVm>(COLLECTION, id)
    if (vm == null) throw new VmNotFoundInDriverError(`the sim driver has no VM ${id}`)
    return vm
  }

  private async transition (id: string, ms: number, to: DriverVmState, options?: OperationOptions): Promise<DriverVm> {
    this.get(id)
    await this.delay(ms, options)
    const vm = { ...this.get(id), state: to }
    await this.save(vm)
    return this.describe(vm)
  }

  /**
   * A real hypervisor's VMs outlive a node killed with SIGKILL, so a simulated VM's state is durable
   * before the call that changed it returns: a node restarted after a crash reconciles its records
   * against what the VMs really are, as it would on a real host. (Written behind, a VM reported
   * running came back stopped when the kill beat the write.)
   */
  private async save (vm: SimVm): Promise<void> {
    try {
      await this.components.store.put(COLLECTION, vm.id, vm)
    } catch (err) {
      throw new HypervisorError(`could not record simulated VM ${vm.id} in the state folder: ${(err as Error).message}; free disk space or fix the data folder's permissions`)
    }
  }

  private describe (vm: SimVm): DriverVm {
    return { id: vm.id, state: vm.state, ports: vm.ports.map(forward), info: { simulated: true } }
  }

  private closeForwards (id: string): void {
    for (const [key, server] of this.listeners) {
      if (key.startsWith(`${id}:`)) {
        server.close()
        this.listeners.delete(key)
      }
    }
  }

  private async delay (ms: number, options?: OperationOptions): Promise<void> {
    if (ms > 0) await sleep(ms, undefined, { signal: options?.signal })
    else options?.signal?.throwIfAborted()
  }
}

const forward = (p: { guestPort: number, hostPort: number }): PortForward =>
  ({ guestPort: p.guestPort, hostAddress: '127.0.0.1', hostPort: p.hostPort, protocol: 'tcp' })

export function createSimDriver (components: SimDriverComponents, init: SimDriverInit): SimDriver {
  return new SimDriver(components, init)
}
