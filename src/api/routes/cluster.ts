import { Type } from '@sinclair/typebox'
import type { ApiComponents, ClusterInfo } from '../components.ts'
import type { RouteDef } from '../route.ts'
import { MeshUnavailableError } from '../errors.ts'

const Member = Type.Object({
  peerId: Type.String(), nodeName: Type.String(), status: Type.String(), apiAddress: Type.Optional(Type.String()),
  addrs: Type.Array(Type.String()), lastSeen: Type.String(), self: Type.Boolean()
})
const Cluster = Type.Object({
  self: Type.Object({ peerId: Type.String(), nodeName: Type.String(), multiaddrs: Type.Array(Type.String({ description: 'put one in another node\'s bootstrap list' })) }),
  members: Type.Array(Member),
  leader: Type.Union([Type.Null(), Type.Object({}, { additionalProperties: true })]),
  metrics: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'messages this node accepted and dropped (malformed, oversized, unsigned) since it started' }))
})

/** The mesh as this node sees it, and how another node joins it. */
export function clusterRoutes ({ cluster }: ApiComponents): RouteDef[] {
  const mesh = (): ClusterInfo => {
    if (cluster == null) throw new MeshUnavailableError('this node runs without a mesh; start it with corral node to join a cluster')
    return cluster
  }
  return [
    {
      method: 'get', path: '/api/v1/cluster', claim: 'cluster:read', tag: 'cluster', summary: 'This node, the members and the leader',
      success: { status: 200, schema: Cluster, description: 'the cluster as this node sees it' },
      handler: () => {
        const c = mesh()
        const members = c.members().map(m => ({ ...m, lastSeen: new Date(m.lastSeen).toISOString() })).sort((a, b) => a.nodeName.localeCompare(b.nodeName))
        return { body: { self: c.self(), members, leader: c.leader?.() ?? null, ...(c.metrics !== undefined ? { metrics: c.metrics() } : {}) } }
      }
    },
    {
      method: 'get', path: '/api/v1/cluster/join-token', claim: 'cluster:write', tag: 'cluster', summary: 'A token that lets a new node join (it holds the cluster key: treat it as a secret)',
      success: { status: 200, schema: Type.Object({ token: Type.String() }), description: 'pass it to corral node --join or CORRAL_JOIN_TOKEN' },
      handler: () => ({ body: { token: mesh().joinToken() } })
    }
  ]
}
