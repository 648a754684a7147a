/**
 * Rank stage: scores hosts that passed every filter and orders them. Scores are pure functions
 * of the host's numbers, so two schedulers with the same snapshot rank the same way.
 */
import type { PlacementCandidate, PlacementHost, PlacementPolicy, Resources } from './types.ts'

/** Cached image outranks any fit difference unless the caller says otherwise. */
export const DEFAULT_CACHED_IMAGE_BONUS = 1
/** Scores are compared at this precision, so float noise does not decide between equal hosts. */
const SCORE_PRECISION = 1e9

/**
 * How full the host would be after placement, 0..1: the mean of its CPU and memory use. Disk is
 * left out on purpose; it is usually plentiful and would dilute the resources that run out.
 */
export function fullnessAfter (host: PlacementHost, need: Resources): number {
  const share = (key: 'cpus' | 'memoryMiB'): number => {
    const capacity = host.capacity[key]
    if (capacity <= 0) return 1
    return Math.min(1, Math.max(0, (capacity - host.free[key] + need[key]) / capacity))
  }
  return (share('cpus') + share('memoryMiB')) / 2
}

/** binpack: fill the fullest host first, keeping whole hosts free for big VMs. */
export function binpackFit (host: PlacementHost, need: Resources): number {
  return fullnessAfter(host, need)
}

/** spread: use the emptiest host first, so one host's failure takes fewer VMs with it. */
export function spreadFit (host: PlacementHost, need: Resources): number {
  return 1 - fullnessAfter(host, need)
}

export const policyFits: Record<PlacementPolicy, (host: PlacementHost, need: Resources) => number> = {
  binpack: binpackFit,
  spread: spreadFit
}

/** A host that already has the image saves a pull (minutes for a macOS image) before boot. */
export function cachedImageScore (cached: boolean, bonus: number): number {
  return cached ? bonus : 0
}

/** FNV-1a over the seed and the host's identity: a stable, seedable shuffle of equal hosts. */
export function tieBreakKey (seed: number, name: string, peerId: string): number {
  let hash = (0x811c9dc5 ^ (seed >>> 0)) >>> 0
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193)
  hash = Math.imul(hash, 0x01000193) // the separator: ("ab", "c") and ("a", "bc") differ
  for (let i = 0; i < peerId.length; i++) hash = Math.imul(hash ^ peerId.charCodeAt(i), 0x01000193)
  return hash >>> 0
}

/** A candidate with its sort keys, computed once rather than on every comparison. */
export interface Scored {
  candidate: PlacementCandidate
  /** The score at comparison precision. */
  rank: number
  /** Comparison key for equal scores when a seed is given. */
  tieKey: number
}

export function scored (candidate: PlacementCandidate, tieKey: number): Scored {
  return { candidate, rank: Math.round(candidate.score * SCORE_PRECISION), tieKey }
}

function compareText (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** Best first: score, then the seeded key, then name, then peer id (total, so fully deterministic). */
export function compareCandidates (a: Scored, b: Scored): number {
  if (a.rank !== b.rank) return b.rank - a.rank
  if (a.tieKey !== b.tieKey) return a.tieKey - b.tieKey
  return compareText(a.candidate.name, b.candidate.name) || compareText(a.candidate.peerId, b.candidate.peerId)
}
