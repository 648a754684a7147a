import type { HostInfo } from '../host/host-agent.ts'
import type { PlacementImage } from '../placement/index.ts'

/**
 * What each host gossips about itself in its heartbeat (NodeState.state). One writer: the host.
 * Its VMs and queued requests are not here: they travel row by row in mesh feeds (state-publisher.ts).
 */
export interface PublishedHostState {
  kind: 'corral-host/2'
  host: HostInfo
  /** The version of the host's VM feed that `host.free` accounts for. */
  vmsVersion: number
  images: string[]
  /** The same images described for placement (arch, OS, default size). */
  imageInfo: PlacementImage[]
  /** Catalog versions the host could pull before cloning (absent from hosts without a catalog). */
  pullable?: PlacementImage[]
  /** A draining host keeps its VMs but takes no new ones. */
  draining: boolean
}

/** Gossip comes from peers that hold the cluster key, but a bad version must not crash a reader. */
export function asHostState (value: unknown): PublishedHostState | undefined {
  const v = value as Partial<PublishedHostState> | undefined
  if (v?.kind !== 'corral-host/2' || v.host == null || typeof v.vmsVersion !== 'number' || !Array.isArray(v.images) || !Array.isArray(v.imageInfo)) return undefined
  return v as PublishedHostState
}
