import type { PlacementRequest } from '../placement/index.ts'
import type { VmRecord } from '../host/vm-record.ts'

/** What a gateway answers about the requests it keeps (src/scheduler/cluster/cluster-vms.ts). */
export const PENDING_RPC = { get: 'pending.get', delete: 'pending.delete' } as const

/** A VM request with its placement constraints, as a gateway hands it to the scheduler. */
export interface ScheduledRequest extends PlacementRequest {
  name?: string
  /** The VM's own labels (PlacementRequest.labels are the host labels it needs). */
  vmLabels?: Record<string, string>
  start?: boolean
  owner: string
}

/**
 * A request the cluster has not placed yet. The node that accepted it (the gateway) keeps it,
 * durable, and re-submits it to whoever leads until a host runs it, it times out or is deleted.
 */
export interface PendingVm {
  id: string
  request: ScheduledRequest
  /** Higher first; FIFO (enqueuedAt) within a priority. */
  priority: number
  /** Gateway wall clock when accepted (ms): the order survives a change of leader. */
  enqueuedAt: number
  /** Gateway wall clock after which the request is given up (ms). */
  deadline: number
  gateway: string
  gatewayName: string
  state: 'queued' | 'failed'
  reason?: string
  position?: number
}

/** Queue order: priority, then arrival, then id (a total order every leader agrees on). */
export function queueOrder (a: PendingVm, b: PendingVm): number {
  return b.priority - a.priority || a.enqueuedAt - b.enqueuedAt || a.id.localeCompare(b.id)
}

/** What a queued request looks like through the API, so clients see one VM from the start. */
export function pendingAsVm (p: PendingVm): VmRecord {
  const at = new Date(p.enqueuedAt).toISOString()
  return {
    id: p.id,
    name: p.request.name ?? `${p.request.image}-${p.id.slice(3, 9)}`,
    image: p.request.image,
    host: '',
    // Not placed yet: no host, so no driver either.
    driver: (p.request.driver ?? 'unassigned') as VmRecord['driver'],
    simulated: false,
    state: p.state,
    stateReason: p.reason,
    cpus: p.request.cpus ?? 0,
    memoryMiB: p.request.memoryMiB ?? 0,
    diskMiB: 0,
    labels: p.request.vmLabels ?? {},
    ports: [],
    owner: p.request.owner,
    createdAt: at,
    updatedAt: at,
    queuePosition: p.position,
    priority: p.priority
  }
}
