import type { Member } from '../../node/index.ts'
import type { PlacementHost } from '../placement/index.ts'
import { asHostState, type PublishedHostState } from './published-state.ts'

/**
 * The read-only view placement works on: every member that has announced itself as a host, with
 * its status from membership and its capacity, free resources and images from its own gossip.
 */
export function hostsSnapshot (members: Member[], self: { peerId: string, state: PublishedHostState }): PlacementHost[] {
  const hosts: PlacementHost[] = []
  for (const member of members) {
    const state = member.peerId === self.peerId ? self.state : asHostState(member.state)
    if (state == null) continue
    hosts.push({
      name: member.nodeName !== '' ? member.nodeName : state.host.name,
      peerId: member.peerId,
      status: member.peerId === self.peerId ? 'alive' : member.status,
      draining: state.draining,
      capacity: state.host.capacity,
      free: { ...state.host.free },
      images: state.imageInfo,
      pullable: state.pullable
    })
  }
  return hosts
}
