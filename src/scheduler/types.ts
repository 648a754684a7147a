import type { ExecResult, PortForward } from '../drivers/types.ts'
import type { CreateVmRequest, ExecOptions, HostInfo } from './host/host-agent.ts'
import type { VmRecord } from './host/vm-record.ts'
import type { VmAction } from './host/vm-state.ts'
import type { PlacementRequest, PlacementResult } from './placement/index.ts'

/** A create request as the API passes it: the VM, where it may run, and how long it may queue. */
export interface VmCreateRequest extends CreateVmRequest, Omit<PlacementRequest, 'image' | 'cpus' | 'memoryMiB' | 'labels' | 'labelsNot'> {
  /** Host labels the VM needs (key=value must match), and ones it must avoid. */
  hostLabels?: Record<string, string>
  hostLabelsNot?: Record<string, string>
  /** Higher first in the queue; default 50. */
  priority?: number
  queueTimeoutSeconds?: number
}

export type Awaitable<T> = T | Promise<T>
export type LifecycleAction = Exclude<VmAction, 'delete' | 'exec'>

/** A host as the API shows it: its own report plus what membership says of it. */
export interface HostView extends Omit<HostInfo, 'state'> {
  state: 'alive' | 'suspect' | 'dead'
  /** The host's mesh identity (absent for a node without a mesh). */
  peerId?: string
  /** Images the host can clone now. */
  images: string[]
  /** True for the node answering. */
  self: boolean
  lastSeen?: string
}

/**
 * What the API needs from whoever runs VMs: one host (HostAgent) or the whole cluster
 * (ClusterVms, which forwards to the owning host). Dispatches 'vm' events (VmEvent).
 */
export interface VmService {
  list: () => Awaitable<VmRecord[]>
  get: (id: string) => Awaitable<VmRecord>
  /**
   * Accepts the request and answers at once; `settled()` resolves once the VM is booted (or
   * failed). Only callers that wait call it: following a VM costs a gateway lookups and events.
   */
  create: (request: VmCreateRequest) => Promise<{ vm: VmRecord, settled: () => Promise<VmRecord> }>
  /** What placement would do with the request now (dry run); absent where there is no scheduler. */
  explain?: (request: VmCreateRequest) => PlacementResult
  /** `caller` (the acting user) travels with requests forwarded to another host, for its log. */
  act: (id: string, action: LifecycleAction, caller?: string) => Promise<VmRecord>
  delete: (id: string, caller?: string) => Promise<void>
  exec: (id: string, options: ExecOptions & { caller?: string }) => Promise<ExecResult>
  forwardPort: (id: string, guestPort: number) => Promise<PortForward>
  hosts: () => Awaitable<HostView[]>
  addEventListener: EventTarget['addEventListener']
  removeEventListener: EventTarget['removeEventListener']
}
