import type { Logger } from 'pino'
import type { AuthService } from '../auth/index.ts'
import type { LocalImages, CatalogService, CatalogUser, HolderGarbage, PrefetchResult } from '../catalog/index.ts'
import type { VmService } from '../scheduler/index.ts'
import type { ProxyService } from '../proxy/index.ts'

/** What the API shows of the mesh; absent on a node built without one (tests). */
export interface ClusterInfo {
  self: () => { peerId: string, nodeName: string, multiaddrs: string[] }
  members: () => Array<{ peerId: string, nodeName: string, status: string, apiAddress?: string, addrs: string[], lastSeen: number, self: boolean }>
  /** The scheduler leader this node recognises, with its term. */
  leader?: () => { peerId: string, nodeName: string, term: number, since: string } | undefined
  /** A token another node can join with: the cluster key and this node's addresses. */
  joinToken: () => string
  /** Gossip, sync and rpc traffic this node accepted and dropped (with reasons) since it started. */
  metrics?: () => Record<string, unknown>
}

/** The catalog as the API uses it; absent on a node built without one (tests). */
export interface CatalogApi {
  service: CatalogService
  /** Pull a reference onto every alive host matching the labels, through the mesh. */
  prefetch?: (ref: string, options: { hostLabels?: Record<string, string>, arch?: string }, user: CatalogUser) => Promise<PrefetchResult>
  /** Removes (or with dryRun lists) the cluster's useless catalog-holders records. */
  collectHolders?: (dryRun: boolean) => Promise<HolderGarbage[]>
}

export interface ApiComponents {
  auth: AuthService
  vms: VmService
  cluster?: ClusterInfo
  images: LocalImages
  catalog?: CatalogApi
  /** The reverse proxy into VMs; absent on a node built without one (tests). */
  proxy?: ProxyService
  logger: Logger
  clock: () => number
}

export interface ApiInit {
  /** host:port to listen on; port 0 picks a free one. */
  addr: string
  maxBodyBytes: number
  version: string
}
