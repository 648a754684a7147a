import type { HostInfo } from '../host/host-agent.ts'
import type { VmRecord } from '../host/vm-record.ts'

/** What each host gossips about itself through the mesh (NodeState.state). One writer: the host. */
export interface PublishedHostState {
  kind: 'corral-host/1'
  host: HostInfo
  images: string[]
  vms: VmRecord[]
}

/** Gossip comes from peers that hold the cluster key, but a bad version must not crash a reader. */
export function asHostState (value: unknown): PublishedHostState | undefined {
  const v = value as Partial<PublishedHostState> | undefined
  if (v?.kind !== 'corral-host/1' || v.host == null || !Array.isArray(v.vms) || !Array.isArray(v.images)) return undefined
  return v as PublishedHostState
}
