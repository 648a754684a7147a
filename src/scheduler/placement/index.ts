export { place, verifyPlacement } from './plan.ts'
export {
  feasibilityCheckers, checkHost, simulatedRule,
  hostAlive, hostNotDraining, driverMatches, simulatedAllowed, archMatches, labelsMatch, labelsNotMatch,
  imageAvailable, imageArchMatches, osMatches, hostBigEnough, cpusFit, memoryFits, diskFits,
  type FeasibilityChecker, type HostContext, type CheckName, type CheckKind, type Failure, type SimulatedRule
} from './feasibility.ts'
export { binpackFit, spreadFit, fullnessAfter, policyFits, cachedImageScore, tieBreakKey, DEFAULT_CACHED_IMAGE_BONUS } from './rank.ts'
export { checkRequest, imageOnHost, resolveResources } from './request.ts'
export { PlacementRequestError } from './errors.ts'
export type {
  PlacementRequest, PlacementHost, PlacementImage, MinHost, PlacementPolicy, PlacementOptions, PlacementCandidate,
  PlacementRejection, PlacementResult, HostStatus, Verification, Resources
} from './types.ts'
