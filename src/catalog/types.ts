/**
 * Public shapes of the catalog: cluster-wide image metadata (records replicated by the mesh), what
 * a pull or push reports as it goes, and the user a claims check is made for.
 */
import type { ProviderKind } from './providers/types.ts'

export type { ProviderKind, StorageProvider, ObjectInfo } from './providers/types.ts'

export type CatalogArch = 'x86_64' | 'arm64'

/** What a VM from the image needs of a host; placement and the catalog show it. */
export interface MinHost {
  cpus?: number
  memoryMiB?: number
  diskMiB?: number
}

/** How the bundle boots: which driver can use it, and the guest as the driver will describe it. */
export interface GuestInfo {
  /** qemu image folder (image.json), parallels .pvm/.macvm bundle, or anything else. */
  format: 'qemu' | 'parallels' | 'other'
  os: 'linux' | 'macos' | 'windows'
  defaultCpus: number
  defaultMemoryMiB: number
  diskMiB: number
  ports?: number[]
}

export interface Revocation {
  by: string
  at: string
  reason: string
}

/** Collection `catalog`, id = image id. One per image; tags and claims live here. */
export interface CatalogImage {
  id: string
  description: string
  /** tag -> version, e.g. { latest: "16.1", stable: "16.0" }. */
  tags: Record<string, string>
  /**
   * A user must hold every one of these to pull the image or create VMs from it: each is one of
   * corral's claims, or the name of a role the user has (how custom claims from the Parallels
   * DevOps Service are honoured).
   */
  requiredClaims: string[]
  minHost?: MinHost
  /** Set: no new pulls or VMs from any version (running VMs are left alone). */
  revoked?: Revocation
  createdBy: string
  createdAt: string
  updatedAt: string
}

/** Collection `catalog-versions`, id = `<image>:<version>:<arch>`. Immutable once pushed, except revocation. */
export interface CatalogVersion {
  image: string
  version: string
  arch: CatalogArch
  /** SHA-256 of the bundle manifest; pins every byte. */
  manifest: string
  /** The provider (by kind) that holds the chunks and the manifest. */
  provider: ProviderKind
  /** Plain bytes of the bundle, and what a pull with an empty cache transfers. */
  size: number
  storedSize: number
  chunks: number
  guest: GuestInfo
  minHost?: MinHost
  revoked?: Revocation
  createdBy: string
  createdAt: string
}

/** A catalog image with its versions, as the API shows it. */
export interface CatalogEntry extends CatalogImage {
  versions: CatalogVersion[]
}

/** Who asks: enough of an authenticated principal for a claims check, without importing auth. */
export interface CatalogUser {
  subject: string
  claims: ReadonlySet<string>
  roles: readonly string[]
}

export type TransferPhase = 'resolving' | 'manifest' | 'chunks' | 'unpacking' | 'uploading' | 'done' | 'failed'

/** Progress of one pull or push; also what `catalog` websocket events carry. */
export interface TransferProgress {
  kind: 'pull' | 'push' | 'import'
  image: string
  version: string
  arch: string
  phase: TransferPhase
  /** Distinct chunks the bundle has, and how many are in place (already held or fetched). */
  chunksTotal: number
  chunksDone: number
  /** Stored bytes of the bundle, and how many are in place. */
  bytesTotal: number
  bytesDone: number
  /** Stored bytes this transfer moved, by where they came from or went. */
  bytesFromPeers: number
  bytesFromProvider: number
  /** Chunks that were already in the cache (or the provider, for a push). */
  chunksReused: number
  /** Corrupt chunks detected and fetched again. */
  corruptChunks: number
  /** For an import: packs found, handled so far, and the one under way. */
  packs?: { total: number, done: number, current?: string, step?: string }
  error?: string
}

/** What POST /api/v1/catalog/{id}/prefetch started on each matching host. */
export interface PrefetchResult {
  ref: string
  hosts: Array<{
    host: string
    peerId: string
    /** started: a pull job runs there; cached: it has the image already; failed: see error. */
    status: 'started' | 'cached' | 'failed'
    job?: string
    error?: string
  }>
}
