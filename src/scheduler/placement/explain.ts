/** Turns every host's failures into one sentence a user can act on when nothing fits. */
import type { CheckName, Failure, SimulatedRule } from './feasibility.ts'
import type { MinHost, PlacementHost, PlacementImage, PlacementRequest, Resources } from './types.ts'

export interface HostVerdict {
  host: PlacementHost
  failures: readonly Failure[]
  need: Partial<Resources>
  /** The image as this host knows it, if at all. */
  image?: PlacementImage
}

function hosts (n: number): string {
  return n === 1 ? '1 host' : `${n} hosts`
}

function labelList (labels: Record<string, string> | undefined, op: string): string {
  return Object.entries(labels ?? {}).map(([k, v]) => `${k}${op}${v}`).join(', ')
}

function tally (check: CheckName, n: number, request: PlacementRequest, rule: SimulatedRule): string {
  switch (check) {
    case 'status': return `${hosts(n)} not alive (suspect or dead)`
    case 'draining': return `${hosts(n)} draining`
    case 'driver': return `${hosts(n)} not running ${request.driver ?? ''}`
    case 'simulated': return rule === 'forbidden'
      ? `${hosts(n)} simulated, which the request does not allow`
      : `${hosts(n)} simulated, skipped because real hypervisor hosts exist (set simulated: true to allow them)`
    case 'arch': return `${hosts(n)} not ${request.arch ?? ''}`
    case 'labels': return `${hosts(n)} without labels ${labelList(request.labels, '=')}`
    case 'labelsNot': return `${hosts(n)} with an excluded label (${labelList(request.labelsNot, '!=')})`
    case 'image': return `${hosts(n)} that neither cache nor can pull ${request.image}`
    case 'imageArch': return `${hosts(n)} with ${request.image} only for another arch`
    case 'os': return `${hosts(n)} where ${request.image} is not ${request.os ?? ''}`
    case 'minHost': return `${hosts(n)} smaller than ${request.image}'s minimum host`
    case 'cpus': return `${hosts(n)} with too few CPUs free`
    case 'memory': return `${hosts(n)} with too little memory free`
    case 'disk': return `${hosts(n)} with too little disk free`
  }
}

function minHostText (min: MinHost): string {
  const parts: string[] = []
  if (min.cpus != null) parts.push(`${min.cpus} CPUs`)
  if (min.memoryMiB != null) parts.push(`${min.memoryMiB} MiB memory`)
  if (min.diskMiB != null) parts.push(`${min.diskMiB} MiB disk`)
  return parts.join(', ')
}

function fitsWhenEmpty (verdict: HostVerdict): boolean {
  const { need, host } = verdict
  return (need.cpus ?? 0) <= host.capacity.cpus && (need.memoryMiB ?? 0) <= host.capacity.memoryMiB && (need.diskMiB ?? 0) <= host.capacity.diskMiB
}

/** Why nothing was placed: the most useful thing to do first, then a tally of every filter. */
export function explainUnplaced (request: PlacementRequest, verdicts: readonly HostVerdict[], rule: SimulatedRule, order: readonly CheckName[]): string {
  if (verdicts.length === 0) return 'no hosts are known to the scheduler: start a corral node or wait for hosts to join the mesh'

  const onlyKinds = (kinds: string[]) => verdicts.filter(v => v.failures.every(f => kinds.includes(f.kind)))
  const roomless = onlyKinds(['capacity'])
  const idle = onlyKinds(['state', 'capacity']).filter(v => v.failures.some(f => f.kind === 'state'))
  // Hosts that would do but for their size: the image's minimum host is the one thing in the way.
  const tooSmall = verdicts.filter(v => v.failures.some(f => f.check === 'minHost') && v.failures.every(f => f.check === 'minHost' || f.kind !== 'constraint'))

  let lead: string
  if (roomless.some(fitsWhenEmpty)) {
    lead = `every host that matches is full right now (${hosts(roomless.filter(fitsWhenEmpty).length)} could run it once VMs are deleted): retry later, delete VMs, or ask for fewer CPUs or less memory`
  } else if (roomless.length > 0) {
    const largest = roomless.reduce((best, v) => v.host.capacity.cpus + v.host.capacity.memoryMiB / 1024 > best.capacity.cpus + best.capacity.memoryMiB / 1024 ? v.host : best, roomless[0].host)
    lead = `the request is bigger than any matching host (the largest has ${largest.capacity.cpus} CPUs, ${largest.capacity.memoryMiB} MiB memory, ${largest.capacity.diskMiB} MiB disk in all): ask for less`
  } else if (idle.length > 0) {
    lead = `the only hosts that match are not taking VMs (draining, suspect or dead): wait for them or undrain one`
  } else if (tooSmall.length > 0) {
    const min = tooSmall.find(v => v.image?.minHost != null)?.image?.minHost ?? {}
    const largest = tooSmall.reduce((best, v) => v.host.capacity.cpus + v.host.capacity.memoryMiB / 1024 > best.capacity.cpus + best.capacity.memoryMiB / 1024 ? v.host : best, tooSmall[0].host)
    lead = `${request.image} needs a host with at least ${minHostText(min)} and no host that matches is that big (the largest has ${largest.capacity.cpus} CPUs, ${largest.capacity.memoryMiB} MiB memory, ${largest.capacity.diskMiB} MiB disk): add a bigger host, or lower the image's minimum host if it is wrong (PUT /api/v1/catalog/{id})`
  } else {
    lead = 'no host matches the request: change the request (image, arch, os, driver, labels) or add a host that matches'
  }

  const counts = new Map<CheckName, number>()
  for (const v of verdicts) for (const f of v.failures) counts.set(f.check, (counts.get(f.check) ?? 0) + 1)
  const tallies = order.filter(c => counts.has(c)).map(c => tally(c, counts.get(c) ?? 0, request, rule))
  return `no host can take a VM of ${request.image}: ${lead}. Of ${hosts(verdicts.length)}: ${tallies.join('; ')} (each host's reasons are listed under rejected)`
}
