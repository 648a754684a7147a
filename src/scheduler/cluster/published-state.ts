import type { HostInfo } from '../host/host-agent.ts'
import type { VmRecord } from '../host/vm-record.ts'
import type { PlacementImage } from '../placement/index.ts'
import type { PendingVm } from './pending.ts'

/** What each host gossips about itself through the mesh (NodeState.state). One writer: the host. */
export interface PublishedHostState {
  kind: 'corral-host/1'
  host: HostInfo
  images: string[]
  /** The same images described for placement (arch, OS, default size). */
  imageInfo: PlacementImage[]
  /** Catalog versions the host could pull before cloning (absent from hosts without a catalog). */
  pullable?: PlacementImage[]
  vms: VmRecord[]
  /** Requests this node accepted that wait in the cluster's queue. */
  pending: PendingVm[]
  /** A draining host keeps its VMs but takes no new ones. */
  draining: boolean
}

/** Gossip comes from peers that hold the cluster key, but a bad version must not crash a reader. */
export function asHostState (value: unknown): PublishedHostState | undefined {
  const v = value as Partial<PublishedHostState> | undefined
  if (v?.kind !== 'corral-host/1' || v.host == null || !Array.isArray(v.vms) || !Array.isArray(v.images) || !Array.isArray(v.imageInfo) || !Array.isArray(v.pending)) return undefined
  return v as PublishedHostState
}
