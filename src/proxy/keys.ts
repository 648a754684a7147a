import { hkdfSync } from 'node:crypto'

/** A key for one purpose, which every node of a cluster derives alike from the cluster key. */
function derive (clusterKey: string, purpose: string): Uint8Array {
  return new Uint8Array(hkdfSync('sha256', Buffer.from(clusterKey.trim(), 'utf8'), 'corral', purpose, 32))
}

/** HMAC key of signed grants (signed URLs): any node checks a grant another node made. */
export function grantKeyFromClusterKey (clusterKey: string): Uint8Array {
  return derive(clusterKey, 'proxy signed grants v1')
}

/** TLS pre-shared key of direct tunnels between nodes: only members can open or serve one. */
export function tunnelKeyFromClusterKey (clusterKey: string): Uint8Array {
  return derive(clusterKey, 'proxy direct tunnels v1')
}
