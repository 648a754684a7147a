/**
 * The contract every hypervisor driver implements: `qemu` (Linux), `parallels` (macOS, prlctl) and
 * `sim` (simulated hosts for tests and benchmarks). The host agent in src/scheduler/host owns VM
 * records and the state machine; a driver only does what it is told and reports what really exists.
 */

export type DriverName = 'qemu' | 'parallels' | 'sim'
export type Arch = 'x86_64' | 'arm64'
export type GuestOs = 'linux' | 'macos' | 'windows'

export interface HostCapacity {
  /** CPUs, memory and disk that VMs on this host may use in total. */
  cpus: number
  memoryMiB: number
  diskMiB: number
  arch: Arch
  /** The host's own OS (linux, macos, windows). */
  os: string
  driver: DriverName
  /** Free-form labels from config (e.g. `{ rack: "a", xcode: "16" }`). */
  labels: Record<string, string>
  /** True only for the sim driver: answers about sim hosts must always say so. */
  simulated: boolean
  /** For real hypervisors: how VMs are accelerated (kvm, hvf, tcg, parallels) and why. */
  accelerator?: { name: string, reason: string }
}

/** An image the driver can clone VMs from. */
export interface DriverImage {
  name: string
  arch: Arch
  os: GuestOs
  /** Where the image lives on this host (a qcow2 folder, a .pvm bundle, or `sim:` for built-ins). */
  path: string
  defaultCpus: number
  defaultMemoryMiB: number
  /** Disk a clone of it reserves on the host. */
  diskMiB: number
  simulated: boolean
  /** Guest ports the image serves, informational (e.g. [22, 80]). */
  ports?: number[]
}

export interface CreateVmSpec {
  /** corral's id for the VM; the driver names its artefacts after it. */
  id: string
  name: string
  image: DriverImage
  cpus: number
  memoryMiB: number
}

/** What the hypervisor says a VM is doing. */
export type DriverVmState = 'running' | 'stopped' | 'suspended' | 'failed'

export interface PortForward {
  guestPort: number
  /** Always a loopback address: the proxy reaches VMs through it. */
  hostAddress: string
  hostPort: number
  protocol: 'tcp'
}

export interface DriverVm {
  id: string
  state: DriverVmState
  ports: PortForward[]
  /** Driver-specific facts worth showing (pid, accelerator, overlay path...). */
  info?: Record<string, unknown>
}

export type OutputStream = 'stdout' | 'stderr'

export interface ExecRequest {
  command: string[]
  env?: Record<string, string>
  /** The command is killed (where the guest allows) and the call fails with ExecTimeoutError. */
  timeoutMs: number
  /** Called with output as it arrives, for the websocket form of exec. */
  onOutput?: (stream: OutputStream, chunk: Uint8Array) => void
  signal?: AbortSignal
}

export interface ExecResult {
  exitCode: number
  stdout: string
  stderr: string
}

export interface OperationOptions {
  signal?: AbortSignal
}

/** Things a driver reports on its own, such as a hypervisor process that died. */
export interface DriverEvents {
  /** A VM stopped without being asked to (crash, guest power-off). */
  'vm-exited': CustomEvent<{ id: string, state: DriverVmState, reason: string }>
}

export interface Driver extends EventTarget {
  readonly name: DriverName
  readonly simulated: boolean

  /** Prepare (check binaries, create folders, re-attach to running VMs). Called once before use. */
  open: () => Promise<void>
  /** Release timers, sockets and child processes; VMs keep running. Safe to call twice. */
  close: () => Promise<void>

  capacity: () => Promise<HostCapacity>
  /** Images this driver has on its own (built-ins for sim, templates for parallels). */
  listImages: () => Promise<DriverImage[]>
  /** Check a path the user registers as an image and describe it; throws ImageInvalidError. */
  inspectImage: (name: string, path: string) => Promise<DriverImage>

  /** Clone the image into a new, stopped VM (a linked clone where the hypervisor can). */
  create: (spec: CreateVmSpec, options?: OperationOptions) => Promise<DriverVm>
  start: (id: string, options?: OperationOptions) => Promise<DriverVm>
  /** Graceful shutdown with a bounded wait, then forced. */
  stop: (id: string, options?: OperationOptions) => Promise<DriverVm>
  suspend: (id: string, options?: OperationOptions) => Promise<DriverVm>
  resume: (id: string, options?: OperationOptions) => Promise<DriverVm>
  restart: (id: string, options?: OperationOptions) => Promise<DriverVm>
  /** Remove the VM and everything the clone created; never the base image. Idempotent. */
  delete: (id: string, options?: OperationOptions) => Promise<void>

  exec: (id: string, request: ExecRequest) => Promise<ExecResult>
  /** Make a guest port reachable on a loopback address (reused if it already is). */
  forwardPort: (id: string, guestPort: number) => Promise<PortForward>

  /** Every VM the hypervisor really has that this driver created, for reconciling after a restart. */
  list: () => Promise<DriverVm[]>
}
