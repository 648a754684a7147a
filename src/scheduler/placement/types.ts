import type { Arch, DriverName, GuestOs, HostCapacity } from '../../drivers/types.ts'
import type { Resources } from '../host/reservations.ts'

export type { Resources }

/** What a VM request asks of the host that will run it. */
export interface PlacementRequest {
  image: string
  /** Default: the image's defaultCpus as the host knows it. */
  cpus?: number
  /** Default: the image's defaultMemoryMiB as the host knows it. */
  memoryMiB?: number
  /** The CPU architecture the VM must have (the host's, since corral does not emulate). */
  arch?: Arch
  /** The guest OS the VM must run: checked against the image as the host describes it. */
  os?: GuestOs
  driver?: DriverName
  /** Host labels (from host config) that must be present with exactly these values. */
  labels?: Record<string, string>
  /** Host labels the host must not have with these values (`xcode != 15`); a host without the key passes. */
  labelsNot?: Record<string, string>
  /**
   * Whether a simulated (sim driver) host may take the VM. true: allowed; false: never.
   * Left out: only when the cluster has no real hypervisor that is not dead, so sim is never
   * picked silently where a real host exists. `driver: 'sim'` counts as allowing it.
   */
  simulated?: boolean
}

/** An image as one host knows it, cached or pullable. */
export interface PlacementImage {
  name: string
  arch: Arch
  os: GuestOs
  defaultCpus: number
  defaultMemoryMiB: number
  /** Disk a clone of it reserves on the host. */
  diskMiB: number
  /** The smallest host it may run on, in total capacity (a catalog version's minimum host). */
  minHost?: MinHost
}

/** Least total capacity a host must have, whatever is free on it now. */
export interface MinHost {
  cpus?: number
  memoryMiB?: number
  diskMiB?: number
}

export type HostStatus = 'alive' | 'suspect' | 'dead'

/** One host as the scheduler's snapshot sees it. Never mutated by placement. */
export interface PlacementHost {
  name: string
  peerId: string
  /** What membership says of the host. Only alive hosts take VMs. */
  status: HostStatus
  /** A draining host keeps its VMs but takes no new ones. */
  draining: boolean
  capacity: HostCapacity
  free: Resources
  /** Images the host has on disk and can clone at once. */
  images: PlacementImage[]
  /**
   * Images the host could fetch before cloning, described as the catalog does (the description
   * is needed to check the arch and size the VM, so names alone would not do).
   */
  pullable?: PlacementImage[]
}

export type PlacementPolicy = 'binpack' | 'spread'

export interface PlacementOptions {
  /**
   * Score added to hosts that already cache the image (fit scores lie in 0..1). Default 1: a host
   * that has the image always outranks one that must pull it, whatever the policy.
   */
  cachedImageBonus?: number
  /**
   * Orders hosts of equal score (before name and peer id). Pass a fresh random integer per request
   * so that two leaders with the same snapshot spread their picks over equally good hosts instead
   * of racing for one; leave out for a fully deterministic order by name.
   */
  tieBreakSeed?: number
}

/** A host that passed every filter, with how it scored. */
export interface PlacementCandidate {
  /** The host's name (PlacementHost.name). */
  name: string
  peerId: string
  /** fit + cached-image bonus; higher is better. */
  score: number
  /** The policy's own score, 0..1 (binpack: how full the host is after placement; spread: how empty). */
  fit: number
  /** True if the host has the image on disk; false if it would pull it first. */
  cachedImage: boolean
  simulated: boolean
  /** What the VM would reserve on this host (defaults come from this host's image description). */
  resources: Resources
}

export interface PlacementRejection {
  host: string
  peerId: string
  /** Every filter this host failed, each naming what is wrong with the numbers. */
  reasons: string[]
}

export type PlacementResult =
  | {
    placed: true
    /** The best candidate (ranked[0]). */
    host: PlacementCandidate
    /** Every feasible host, best first: if one refuses its reservation, try the next. */
    ranked: PlacementCandidate[]
    rejected: PlacementRejection[]
    /** What the chosen host would reserve. */
    resources: Resources
    /** True if the chosen host is a sim host: answers must say so. */
    simulated: boolean
  }
  | {
    placed: false
    /** Why no host can take the VM, in words a user can act on. */
    reason: string
    ranked: []
    rejected: PlacementRejection[]
  }

export type Verification =
  | { ok: true, resources: Resources }
  | { ok: false, reasons: string[], message: string }
