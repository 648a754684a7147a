/**
 * The placement stack: resolve the request per host, filter (feasibility.ts), rank (rank.ts),
 * explain what was left out (explain.ts). Pure: a snapshot in, a ranked plan out. The caller
 * offers the VM to ranked[0], and to the next host when one refuses its reservation.
 */
import { checkHost, feasibilityCheckers, simulatedRule } from './feasibility.ts'
import { explainUnplaced, type HostVerdict } from './explain.ts'
import { cachedImageScore, compareCandidates, DEFAULT_CACHED_IMAGE_BONUS, policyFits, scored, tieBreakKey, type Scored } from './rank.ts'
import { checkRequest, imageOnHost, resolveResources } from './request.ts'
import type { PlacementHost, PlacementOptions, PlacementPolicy, PlacementRejection, PlacementRequest, PlacementResult, Resources, Verification } from './types.ts'

const checkOrder = feasibilityCheckers.map(c => c.name)

/**
 * Ranks every host that can take the VM, best first, and gives every other host's reasons.
 * Each host appears exactly once, in `ranked` or in `rejected`. Throws PlacementRequestError
 * for a request no host could be judged against (such as 0 CPUs).
 */
export function place (request: PlacementRequest, hosts: readonly PlacementHost[], policy: PlacementPolicy = 'binpack', options: PlacementOptions = {}): PlacementResult {
  checkRequest(request)
  const rule = simulatedRule(request, hosts)
  const fit = policyFits[policy]
  const bonus = options.cachedImageBonus ?? DEFAULT_CACHED_IMAGE_BONUS
  const seed = options.tieBreakSeed

  const candidates: Scored[] = []
  const verdicts: HostVerdict[] = []
  for (const host of hosts) {
    const found = imageOnHost(host, request.image)
    const need = resolveResources(request, found?.image)
    const failures = checkHost({ request, host, image: found?.image, need, simulated: rule })
    if (failures.length > 0 || found == null) {
      verdicts.push({ host, failures, need, image: found?.image })
      continue
    }
    // Passing every filter means the image was found, so every resource is known.
    const resources = need as Resources
    const fitScore = fit(host, resources)
    candidates.push(scored({
      name: host.name,
      peerId: host.peerId,
      score: fitScore + cachedImageScore(found.cached, bonus),
      fit: fitScore,
      cachedImage: found.cached,
      simulated: host.capacity.simulated,
      resources
    }, seed == null ? 0 : tieBreakKey(seed, host.name, host.peerId)))
  }

  const rejected: PlacementRejection[] = verdicts.map(v => ({ host: v.host.name, peerId: v.host.peerId, reasons: v.failures.map(f => f.reason) }))
  if (candidates.length === 0) {
    return { placed: false, reason: explainUnplaced(request, verdicts, rule, checkOrder), ranked: [], rejected }
  }
  candidates.sort(compareCandidates)
  const ranked = candidates.map(c => c.candidate)
  const best = ranked[0]
  return { placed: true, host: best, ranked, rejected, resources: { ...best.resources }, simulated: best.simulated }
}

/**
 * The host's own re-check before it admits a planned VM, against its fresh state (the leader's
 * snapshot may be stale). The cluster-wide sim rule was the leader's to apply; only a request's
 * explicit `simulated: false` is checked again here. Admission itself is the ledger's reserve,
 * called right after with the returned resources and no await between.
 */
export function verifyPlacement (request: PlacementRequest, host: PlacementHost): Verification {
  checkRequest(request)
  const found = imageOnHost(host, request.image)
  const need = resolveResources(request, found?.image)
  const failures = checkHost({ request, host, image: found?.image, need, simulated: request.simulated === false ? 'forbidden' : 'allowed' })
  if (failures.length === 0 && found != null) return { ok: true, resources: need as Resources }
  const reasons = failures.map(f => f.reason)
  return { ok: false, reasons, message: `host ${host.name} cannot take this VM of ${request.image} now: ${reasons.join('; ')}; the scheduler will try the next host` }
}
