/**
 * Feasibility checkers: each looks at one host for one request and answers undefined (fits) or a
 * reason that names what is wrong, with the numbers. They never score and never stop at the first
 * failure, so a rejected host lists everything that would have to change.
 */
import type { PlacementHost, PlacementImage, PlacementRequest, Resources } from './types.ts'

/**
 * How sim hosts are treated for this request: 'allowed', 'forbidden' (the request said no), or
 * 'real-hosts-exist' (the request did not say, and sim is never picked silently over a real host).
 */
export type SimulatedRule = 'allowed' | 'forbidden' | 'real-hosts-exist'

/** Everything a checker may look at: the request, one host, and facts resolved once for it. */
export interface HostContext {
  request: PlacementRequest
  host: PlacementHost
  /** The image as this host knows it (cached, else pullable), if at all. */
  image: PlacementImage | undefined
  /** What the VM would reserve here, where known. */
  need: Partial<Resources>
  simulated: SimulatedRule
}

/** 'state': the host takes no VMs now; 'constraint': it never could; 'capacity': it could, with room. */
export type CheckKind = 'state' | 'constraint' | 'capacity'

export type CheckName =
  | 'status' | 'draining' | 'driver' | 'simulated' | 'arch' | 'labels' | 'labelsNot'
  | 'image' | 'imageArch' | 'os' | 'minHost' | 'cpus' | 'memory' | 'disk'

export interface FeasibilityChecker {
  name: CheckName
  kind: CheckKind
  check: (ctx: HostContext) => string | undefined
}

/** Only hosts membership calls alive take VMs: a suspect one may be gone, a dead one is. */
export function hostAlive ({ host }: HostContext): string | undefined {
  return host.status === 'alive' ? undefined : `host is ${host.status}`
}

export function hostNotDraining ({ host }: HostContext): string | undefined {
  return host.draining ? 'host is draining' : undefined
}

export function driverMatches ({ request, host }: HostContext): string | undefined {
  if (request.driver == null || request.driver === host.capacity.driver) return undefined
  return `driver ${request.driver} wanted, host runs ${host.capacity.driver}`
}

export function simulatedAllowed ({ host, simulated }: HostContext): string | undefined {
  if (!host.capacity.simulated || simulated === 'allowed') return undefined
  if (simulated === 'forbidden') return 'host is simulated (sim driver) and the request does not allow simulated hosts'
  return 'host is simulated (sim driver) and real hypervisor hosts exist; set simulated: true to allow sim hosts'
}

export function archMatches ({ request, host }: HostContext): string | undefined {
  if (request.arch == null || request.arch === host.capacity.arch) return undefined
  return `arch ${request.arch} wanted, host is ${host.capacity.arch}`
}

export function labelsMatch ({ request, host }: HostContext): string | undefined {
  let wrong: string | undefined
  for (const key in request.labels) {
    const value = request.labels[key]
    const has = Object.hasOwn(host.capacity.labels, key) ? host.capacity.labels[key] : undefined
    if (has === value) continue
    const reason = has == null ? `label ${key}=${value} wanted, host has no ${key} label` : `label ${key}=${value} wanted, host has ${key}=${has}`
    wrong = wrong == null ? reason : `${wrong}; ${reason}`
  }
  return wrong
}

export function labelsNotMatch ({ request, host }: HostContext): string | undefined {
  let wrong: string | undefined
  for (const key in request.labelsNot) {
    const value = request.labelsNot[key]
    if (!Object.hasOwn(host.capacity.labels, key) || host.capacity.labels[key] !== value) continue
    const reason = `label ${key}!=${value} wanted, host has ${key}=${value}`
    wrong = wrong == null ? reason : `${wrong}; ${reason}`
  }
  return wrong
}

export function imageAvailable ({ request, image }: HostContext): string | undefined {
  return image == null ? `image ${request.image} is neither cached nor pullable here` : undefined
}

/** corral does not emulate: an image built for another arch cannot boot here. */
export function imageArchMatches ({ host, image }: HostContext): string | undefined {
  if (image == null || image.arch === host.capacity.arch) return undefined
  return `image ${image.name} here is ${image.arch}, host is ${host.capacity.arch}`
}

/** The request's os is the guest's, so it is the image's os that must match. */
export function osMatches ({ request, image }: HostContext): string | undefined {
  if (request.os == null || image == null || image.os === request.os) return undefined
  return `os ${request.os} wanted, image ${image.name} here is ${image.os}`
}

/**
 * An image's minimum host (its catalog version's) against the host's total capacity: a host
 * smaller than that never runs it, however empty.
 */
export function hostBigEnough ({ host, image }: HostContext): string | undefined {
  const min = image?.minHost
  if (min == null) return undefined
  const short: string[] = []
  if (min.cpus != null && host.capacity.cpus < min.cpus) short.push(`${min.cpus} CPUs (host has ${host.capacity.cpus})`)
  if (min.memoryMiB != null && host.capacity.memoryMiB < min.memoryMiB) short.push(`${min.memoryMiB} MiB memory (host has ${host.capacity.memoryMiB})`)
  if (min.diskMiB != null && host.capacity.diskMiB < min.diskMiB) short.push(`${min.diskMiB} MiB disk (host has ${host.capacity.diskMiB})`)
  return short.length === 0 ? undefined : `image ${image?.name ?? ''} needs a host with at least ${short.join(', ')}`
}

export function cpusFit ({ host, need }: HostContext): string | undefined {
  if (need.cpus == null || need.cpus <= host.free.cpus) return undefined
  return `needs ${need.cpus} CPUs, ${host.free.cpus} free of ${host.capacity.cpus}`
}

export function memoryFits ({ host, need }: HostContext): string | undefined {
  if (need.memoryMiB == null || need.memoryMiB <= host.free.memoryMiB) return undefined
  return `needs ${need.memoryMiB} MiB memory, ${host.free.memoryMiB} MiB free of ${host.capacity.memoryMiB}`
}

export function diskFits ({ host, need }: HostContext): string | undefined {
  if (need.diskMiB == null || need.diskMiB <= host.free.diskMiB) return undefined
  return `needs ${need.diskMiB} MiB disk, ${host.free.diskMiB} MiB free of ${host.capacity.diskMiB}`
}

/** The filter stage, in the order reasons are listed. Every checker runs on every host. */
export const feasibilityCheckers: readonly FeasibilityChecker[] = [
  // Is the host taking VMs at all?
  { name: 'status', kind: 'state', check: hostAlive },
  { name: 'draining', kind: 'state', check: hostNotDraining },
  // Is it the kind of host asked for?
  { name: 'driver', kind: 'constraint', check: driverMatches },
  { name: 'simulated', kind: 'constraint', check: simulatedAllowed },
  { name: 'arch', kind: 'constraint', check: archMatches },
  { name: 'labels', kind: 'constraint', check: labelsMatch },
  { name: 'labelsNot', kind: 'constraint', check: labelsNotMatch },
  // Can it get the image, and is that image the one asked for?
  { name: 'image', kind: 'constraint', check: imageAvailable },
  { name: 'imageArch', kind: 'constraint', check: imageArchMatches },
  { name: 'os', kind: 'constraint', check: osMatches },
  { name: 'minHost', kind: 'constraint', check: hostBigEnough },
  // Does it have room now?
  { name: 'cpus', kind: 'capacity', check: cpusFit },
  { name: 'memory', kind: 'capacity', check: memoryFits },
  { name: 'disk', kind: 'capacity', check: diskFits }
]

export interface Failure {
  check: CheckName
  kind: CheckKind
  reason: string
}

const none: readonly Failure[] = Object.freeze([])

/** Runs every checker on one host and collects every failure (a shared empty list when it fits). */
export function checkHost (ctx: HostContext, checkers: readonly FeasibilityChecker[] = feasibilityCheckers): readonly Failure[] {
  let failures: Failure[] | undefined
  for (const checker of checkers) {
    const reason = checker.check(ctx)
    if (reason != null) (failures ??= []).push({ check: checker.name, kind: checker.kind, reason })
  }
  return failures ?? none
}

/** The cluster-wide half of the sim rule: decided once per placement, from the whole snapshot. */
export function simulatedRule (request: PlacementRequest, hosts: readonly PlacementHost[]): SimulatedRule {
  if (request.simulated === false) return 'forbidden'
  if (request.simulated === true || request.driver === 'sim') return 'allowed'
  return hosts.some(h => !h.capacity.simulated && h.status !== 'dead') ? 'real-hosts-exist' : 'allowed'
}
