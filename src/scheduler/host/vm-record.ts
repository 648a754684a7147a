import type { DriverName, PortForward } from '../../drivers/types.ts'
import type { VmState } from './vm-state.ts'

/** A VM as this host knows it. The host is its only writer. */
export interface VmRecord {
  id: string
  name: string
  image: string
  host: string
  driver: DriverName
  /** True when the VM is simulated (sim driver): nothing really runs. */
  simulated: boolean
  state: VmState
  /** Why the VM is in its state, when that is worth saying (failures, reconciling). */
  stateReason?: string
  cpus: number
  memoryMiB: number
  diskMiB: number
  labels: Record<string, string>
  ports: PortForward[]
  /** Who asked for it (a user or API key subject). */
  owner: string
  createdAt: string
  updatedAt: string
  /** Driver facts worth showing (accelerator, pid...). */
  info?: Record<string, unknown>
  /** While queued: the place in the cluster's queue (1 = next), and the request's priority. */
  queuePosition?: number
  priority?: number
}

export interface VmEvent {
  type: 'vm.state' | 'vm.deleted'
  vm: VmRecord
  previous?: VmState
  at: string
}
