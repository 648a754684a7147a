import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { ReservationLedger } from '../../src/scheduler/host/reservations.ts'
import {
  place, verifyPlacement, PlacementRequestError,
  type PlacementHost, type PlacementImage, type PlacementRequest, type PlacementResult, type Resources
} from '../../src/scheduler/placement/index.ts'

const ubuntu: PlacementImage = { name: 'ubuntu', arch: 'x86_64', os: 'linux', defaultCpus: 2, defaultMemoryMiB: 2048, diskMiB: 20_000 }
const macos: PlacementImage = { name: 'macos-15', arch: 'arm64', os: 'macos', defaultCpus: 4, defaultMemoryMiB: 8192, diskMiB: 80_000 }

type HostOverrides = Partial<Omit<PlacementHost, 'capacity'>> & { capacity?: Partial<PlacementHost['capacity']> }

function host (name: string, overrides: HostOverrides = {}): PlacementHost {
  const { capacity, ...rest } = overrides
  const cap = { cpus: 8, memoryMiB: 16_384, diskMiB: 500_000, arch: 'x86_64' as const, os: 'linux', driver: 'qemu' as const, labels: {}, simulated: false, ...capacity }
  return {
    name,
    peerId: `peer-${name}`,
    status: 'alive',
    draining: false,
    capacity: cap,
    free: { cpus: cap.cpus, memoryMiB: cap.memoryMiB, diskMiB: cap.diskMiB },
    images: [ubuntu],
    ...rest
  }
}

function placed (result: PlacementResult): Extract<PlacementResult, { placed: true }> {
  assert.ok(result.placed, result.placed ? '' : result.reason)
  return result
}

function reasonsFor (request: PlacementRequest, h: PlacementHost, others: PlacementHost[] = []): string[] {
  const result = place(request, [h, ...others])
  const rejection = result.rejected.find(r => r.host === h.name)
  assert.ok(rejection != null, `${h.name} was not rejected`)
  return rejection.reasons
}

describe('filters: every rejected host says why, with the numbers', () => {
  const cases: Array<{ what: string, request: PlacementRequest, host: PlacementHost, others?: PlacementHost[], reasons: string[] }> = [
    { what: 'suspect host', request: { image: 'ubuntu' }, host: host('a', { status: 'suspect' }), reasons: ['host is suspect'] },
    { what: 'dead host', request: { image: 'ubuntu' }, host: host('a', { status: 'dead' }), reasons: ['host is dead'] },
    { what: 'draining host', request: { image: 'ubuntu' }, host: host('a', { draining: true }), reasons: ['host is draining'] },
    { what: 'driver', request: { image: 'ubuntu', driver: 'parallels' }, host: host('a'), reasons: ['driver parallels wanted, host runs qemu'] },
    { what: 'arch', request: { image: 'ubuntu', arch: 'arm64' }, host: host('a'), reasons: ['arch arm64 wanted, host is x86_64'] },
    { what: 'label with another value', request: { image: 'ubuntu', labels: { xcode: '16' } }, host: host('a', { capacity: { labels: { xcode: '15' } } }), reasons: ['label xcode=16 wanted, host has xcode=15'] },
    { what: 'label missing', request: { image: 'ubuntu', labels: { rack: 'a' } }, host: host('a'), reasons: ['label rack=a wanted, host has no rack label'] },
    { what: 'every label wrong', request: { image: 'ubuntu', labels: { rack: 'a', xcode: '16' } }, host: host('a', { capacity: { labels: { xcode: '15' } } }), reasons: ['label rack=a wanted, host has no rack label; label xcode=16 wanted, host has xcode=15'] },
    { what: 'excluded label', request: { image: 'ubuntu', labelsNot: { xcode: '15' } }, host: host('a', { capacity: { labels: { xcode: '15' } } }), reasons: ['label xcode!=15 wanted, host has xcode=15'] },
    { what: 'image nowhere', request: { image: 'macos-15' }, host: host('a'), reasons: ['image macos-15 is neither cached nor pullable here'] },
    { what: 'image for another arch', request: { image: 'macos-15' }, host: host('a', { images: [macos] }), reasons: ['image macos-15 here is arm64, host is x86_64'] },
    { what: 'image is another os', request: { image: 'ubuntu', os: 'windows' }, host: host('a'), reasons: ['os windows wanted, image ubuntu here is linux'] },
    { what: 'minimum host (total capacity, not what is free)', request: { image: 'ubuntu' }, host: host('a', { images: [{ ...ubuntu, minHost: { cpus: 16, memoryMiB: 8192, diskMiB: 1_000_000 } }] }), reasons: ['image ubuntu needs a host with at least 16 CPUs (host has 8), 1000000 MiB disk (host has 500000)'] },
    { what: 'cpus', request: { image: 'ubuntu', cpus: 4 }, host: host('a', { free: { cpus: 2, memoryMiB: 16_384, diskMiB: 500_000 } }), reasons: ['needs 4 CPUs, 2 free of 8'] },
    { what: 'memory (image default)', request: { image: 'ubuntu' }, host: host('a', { free: { cpus: 8, memoryMiB: 1024, diskMiB: 500_000 } }), reasons: ['needs 2048 MiB memory, 1024 MiB free of 16384'] },
    { what: 'disk (from the image)', request: { image: 'ubuntu' }, host: host('a', { free: { cpus: 8, memoryMiB: 16_384, diskMiB: 10_000 } }), reasons: ['needs 20000 MiB disk, 10000 MiB free of 500000'] },
    { what: 'sim refused by the request', request: { image: 'ubuntu', simulated: false }, host: host('a', { capacity: { driver: 'sim', simulated: true } }), reasons: ['host is simulated (sim driver) and the request does not allow simulated hosts'] },
    {
      what: 'sim not picked silently beside a real host',
      request: { image: 'ubuntu' },
      host: host('sim', { capacity: { driver: 'sim', simulated: true } }),
      others: [host('real', { free: { cpus: 0, memoryMiB: 0, diskMiB: 0 } })],
      reasons: ['host is simulated (sim driver) and real hypervisor hosts exist; set simulated: true to allow sim hosts']
    },
    {
      what: 'all reasons, not the first',
      request: { image: 'ubuntu', cpus: 16, arch: 'arm64', driver: 'parallels' },
      host: host('a', { status: 'suspect', draining: true }),
      reasons: ['host is suspect', 'host is draining', 'driver parallels wanted, host runs qemu', 'arch arm64 wanted, host is x86_64', 'needs 16 CPUs, 8 free of 8']
    }
  ]
  for (const c of cases) {
    test(c.what, () => {
      assert.deepEqual(reasonsFor(c.request, c.host, c.others), c.reasons)
    })
  }

  test('an image the host can only pull still places, marked as not cached', () => {
    const result = placed(place({ image: 'macos-15' }, [host('mac', { images: [], pullable: [macos], capacity: { arch: 'arm64' } })]))
    assert.equal(result.host.cachedImage, false)
    assert.deepEqual(result.resources, { cpus: 4, memoryMiB: 8192, diskMiB: 80_000 })
  })

  test('a host without a label passes a label exclusion', () => {
    placed(place({ image: 'ubuntu', labelsNot: { xcode: '15' } }, [host('a')]))
  })
})

describe('sim hosts', () => {
  const sim = host('sim', { capacity: { driver: 'sim', simulated: true, os: 'simulated' } })
  test('a cluster of only sim hosts places on sim, and says so', () => {
    const result = placed(place({ image: 'ubuntu' }, [sim]))
    assert.equal(result.simulated, true)
    assert.equal(result.host.simulated, true)
  })
  test('a dead real host does not keep sim out', () => {
    placed(place({ image: 'ubuntu' }, [sim, host('real', { status: 'dead' })]))
  })
  test('simulated: true or driver sim allows sim beside real hosts', () => {
    const full = host('real', { free: { cpus: 0, memoryMiB: 0, diskMiB: 0 } })
    assert.equal(placed(place({ image: 'ubuntu', simulated: true }, [sim, full])).host.name, 'sim')
    assert.equal(placed(place({ image: 'ubuntu', driver: 'sim' }, [sim, full])).host.name, 'sim')
  })
  test('a real host wins by default, and a full real host leaves the request unplaced with a hint', () => {
    assert.equal(placed(place({ image: 'ubuntu' }, [sim, host('real')])).host.name, 'real')
    const result = place({ image: 'ubuntu' }, [sim, host('real', { free: { cpus: 0, memoryMiB: 0, diskMiB: 0 } })])
    assert.equal(result.placed, false)
    assert.match(!result.placed ? result.reason : '', /set simulated: true to allow them/)
  })
})

describe('scoring', () => {
  const half = { cpus: 4, memoryMiB: 8192, diskMiB: 500_000 }
  test('binpack picks the host that is fullest after placement; spread the emptiest', () => {
    const hosts = [host('empty'), host('half', { free: half })]
    assert.deepEqual(placed(place({ image: 'ubuntu' }, hosts, 'binpack')).ranked.map(c => c.name), ['half', 'empty'])
    assert.deepEqual(placed(place({ image: 'ubuntu' }, hosts, 'spread')).ranked.map(c => c.name), ['empty', 'half'])
  })
  test('binpack fills a host to the brim when the VM fits exactly', () => {
    const result = placed(place({ image: 'ubuntu', cpus: 4, memoryMiB: 8192 }, [host('empty'), host('half', { free: half })], 'binpack'))
    assert.equal(result.host.name, 'half')
    assert.equal(result.host.fit, 1)
  })
  test('a host that caches the image outranks one that must pull it, under either policy', () => {
    const pulls = host('pulls', { images: [], pullable: [ubuntu] })
    const caches = host('caches', { free: half })
    for (const policy of ['binpack', 'spread'] as const) {
      const result = placed(place({ image: 'ubuntu' }, [pulls, caches], policy))
      assert.equal(result.host.name, 'caches', policy)
      assert.equal(result.host.cachedImage, true)
    }
    // With the bonus off, spread goes back to the emptier host.
    assert.equal(placed(place({ image: 'ubuntu' }, [pulls, caches], 'spread', { cachedImageBonus: 0 })).host.name, 'pulls')
  })
  test('equal hosts are ordered by name, or by a seed passed in', () => {
    const hosts = ['c', 'a', 'b'].map(n => host(n))
    assert.deepEqual(placed(place({ image: 'ubuntu' }, hosts)).ranked.map(c => c.name), ['a', 'b', 'c'])
    const firsts = new Set<string>()
    for (let seed = 0; seed < 50; seed++) {
      const once = placed(place({ image: 'ubuntu' }, hosts, 'spread', { tieBreakSeed: seed })).ranked.map(c => c.name)
      assert.deepEqual(placed(place({ image: 'ubuntu' }, hosts, 'spread', { tieBreakSeed: seed })).ranked.map(c => c.name), once)
      firsts.add(once[0])
    }
    assert.equal(firsts.size, 3, 'seeds spread first picks over every equal host')
  })
  test('a seed never overrides a better score', () => {
    for (let seed = 0; seed < 50; seed++) {
      assert.equal(placed(place({ image: 'ubuntu' }, [host('empty'), host('half', { free: half })], 'binpack', { tieBreakSeed: seed })).host.name, 'half')
    }
  })
  test('resources: CPUs and memory as asked, else the image defaults of the chosen host; disk from the image', () => {
    assert.deepEqual(placed(place({ image: 'ubuntu' }, [host('a')])).resources, { cpus: 2, memoryMiB: 2048, diskMiB: 20_000 })
    assert.deepEqual(placed(place({ image: 'ubuntu', cpus: 6, memoryMiB: 4096 }, [host('a')])).resources, { cpus: 6, memoryMiB: 4096, diskMiB: 20_000 })
  })
})

describe('when nothing fits, the reason says what to do', () => {
  const unplaced = (request: PlacementRequest, hosts: PlacementHost[]): string => {
    const result = place(request, hosts)
    assert.equal(result.placed, false)
    return result.placed ? '' : result.reason
  }
  test('no hosts', () => {
    assert.match(unplaced({ image: 'ubuntu' }, []), /no hosts are known/)
  })
  test('full now', () => {
    const reason = unplaced({ image: 'ubuntu', cpus: 4, arch: 'x86_64' }, [host('a', { free: { cpus: 2, memoryMiB: 16_384, diskMiB: 500_000 } }), host('b', { capacity: { arch: 'arm64' } })])
    assert.match(reason, /every host that matches is full right now \(1 host could run it once VMs are deleted\)/)
    assert.match(reason, /Of 2 hosts: 1 host not x86_64; 1 host with ubuntu only for another arch; 1 host with too few CPUs free \(each host.s reasons are listed under rejected\)$/)
  })
  test('bigger than any host', () => {
    assert.match(unplaced({ image: 'ubuntu', cpus: 64 }, [host('a')]), /bigger than any matching host \(the largest has 8 CPUs, 16384 MiB memory, 500000 MiB disk in all\): ask for less/)
  })
  test('only draining or suspect hosts match', () => {
    assert.match(unplaced({ image: 'ubuntu' }, [host('a', { draining: true }), host('b', { status: 'suspect' })]), /not taking VMs .*1 host not alive \(suspect or dead\); 1 host draining/)
  })
  test('smaller than the image\'s minimum host: add a bigger host, or fix the minimum', () => {
    const big = { ...ubuntu, minHost: { cpus: 12, memoryMiB: 32_768 } }
    const reason = unplaced({ image: 'ubuntu' }, [host('a', { images: [big] }), host('b', { images: [], pullable: [big], free: { cpus: 0, memoryMiB: 0, diskMiB: 0 } }), host('c', { status: 'dead', images: [big] })])
    assert.match(reason, /ubuntu needs a host with at least 12 CPUs, 32768 MiB memory and no host that matches is that big \(the largest has 8 CPUs, 16384 MiB memory, 500000 MiB disk\): add a bigger host/)
    assert.match(reason, /Of 3 hosts: 1 host not alive \(suspect or dead\); 3 hosts smaller than ubuntu's minimum host; 1 host with too few CPUs free/)
    // A host big enough takes it, even when others that cache it are too small.
    assert.equal(placed(place({ image: 'ubuntu' }, [host('a', { images: [big] }), host('big', { images: [], pullable: [big], capacity: { cpus: 16, memoryMiB: 65_536 } })])).host.name, 'big')
  })
  test('nothing matches: a tally of every filter', () => {
    const reason = unplaced({ image: 'macos-15', arch: 'arm64' }, [host('a'), host('b')])
    assert.match(reason, /no host matches the request/)
    assert.match(reason, /Of 2 hosts: 2 hosts not arm64; 2 hosts that neither cache nor can pull macos-15/)
  })
  test('a request no host can be judged against is an error', () => {
    assert.throws(() => place({ image: 'ubuntu', cpus: 0 }, [host('a')]), PlacementRequestError)
    assert.throws(() => place({ image: '' }, [host('a')]), PlacementRequestError)
    assert.throws(() => place({ image: 'ubuntu', memoryMiB: 1.5 }, [host('a')]), PlacementRequestError)
  })
})

describe('verifyPlacement: the host re-checks against its own fresh state', () => {
  test('admits what fits and returns what to reserve', () => {
    assert.deepEqual(verifyPlacement({ image: 'ubuntu' }, host('a')), { ok: true, resources: { cpus: 2, memoryMiB: 2048, diskMiB: 20_000 } })
  })
  test('refuses what no longer fits, naming it', () => {
    const v = verifyPlacement({ image: 'ubuntu', cpus: 4 }, host('a', { free: { cpus: 1, memoryMiB: 16_384, diskMiB: 500_000 }, draining: true }))
    assert.equal(v.ok, false)
    assert.deepEqual(!v.ok && v.reasons, ['host is draining', 'needs 4 CPUs, 1 free of 8'])
  })
  test('a sim host admits unless the request refused sim outright', () => {
    const sim = host('sim', { capacity: { driver: 'sim', simulated: true } })
    assert.equal(verifyPlacement({ image: 'ubuntu' }, sim).ok, true)
    assert.equal(verifyPlacement({ image: 'ubuntu', simulated: false }, sim).ok, false)
  })
})

// ---------------------------------------------------------------------------------------------
// Properties under random clusters and requests.

const imageNames = ['ubuntu', 'macos-15', 'windows-11', 'alpine'] as const
const arches = ['x86_64', 'arm64'] as const
const oses = ['linux', 'macos', 'windows'] as const
const drivers = ['qemu', 'parallels', 'sim'] as const

const imageArb: fc.Arbitrary<PlacementImage> = fc.record({
  name: fc.constantFrom(...imageNames),
  arch: fc.constantFrom(...arches),
  os: fc.constantFrom(...oses),
  defaultCpus: fc.integer({ min: 1, max: 6 }),
  defaultMemoryMiB: fc.integer({ min: 256, max: 12_288 }),
  diskMiB: fc.integer({ min: 1000, max: 100_000 })
})
const labelsArb = fc.record({ rack: fc.constantFrom('a', 'b'), xcode: fc.constantFrom('15', '16'), gpu: fc.constant('yes') }, { requiredKeys: [] }) as fc.Arbitrary<Record<string, string>>

/** Free is a share of capacity, now and then below zero (reservations restored past capacity). */
const freeOf = (capacity: number, percent: number): number => Math.floor(capacity * percent / 100)

/** `weight` parts of `common`, one part of anything in `rare`: mostly healthy hosts, some not. */
function mostly<T> (common: T, weight: number, ...rare: T[]): fc.Arbitrary<T> {
  return fc.oneof({ arbitrary: fc.constant(common), weight }, { arbitrary: fc.constantFrom(...rare), weight: 1 })
}

const freePercentArb = mostly(100, 4, 75, 50, 25, 10, 0, -5)

const hostArb = fc.record({
  status: mostly<PlacementHost['status']>('alive', 6, 'suspect', 'dead'),
  draining: mostly(false, 8, true),
  cpus: fc.constantFrom(16, 8, 32, 64, 4, 1),
  memoryMiB: fc.constantFrom(32_768, 16_384, 65_536, 131_072, 8192, 2048),
  diskMiB: fc.constantFrom(500_000, 2_000_000, 200_000, 50_000),
  freePercent: fc.tuple(freePercentArb, freePercentArb, freePercentArb),
  arch: fc.constantFrom(...arches),
  driver: fc.constantFrom(...drivers),
  labels: labelsArb,
  images: fc.uniqueArray(imageArb, { selector: i => i.name, maxLength: 4 }),
  /** Which cached image, if any, is built for the other arch (the rest match the host). */
  foreignImage: fc.integer({ min: -4, max: 3 }),
  pullable: fc.option(fc.uniqueArray(imageArb, { selector: i => i.name, maxLength: 3 }), { nil: undefined })
})

const clusterArb: fc.Arbitrary<PlacementHost[]> = fc.array(hostArb, { minLength: 1, maxLength: 60, size: 'max' }).map(specs => specs.map((s, i): PlacementHost => ({
  name: `host-${String(i).padStart(2, '0')}`,
  peerId: `peer-${i}`,
  status: s.status,
  draining: s.draining,
  capacity: { cpus: s.cpus, memoryMiB: s.memoryMiB, diskMiB: s.diskMiB, arch: s.arch, os: s.driver === 'sim' ? 'simulated' : s.driver === 'parallels' ? 'macos' : 'linux', driver: s.driver, labels: s.labels, simulated: s.driver === 'sim' },
  free: { cpus: freeOf(s.cpus, s.freePercent[0]), memoryMiB: freeOf(s.memoryMiB, s.freePercent[1]), diskMiB: freeOf(s.diskMiB, s.freePercent[2]) },
  images: s.images.map((image, j) => ({ ...image, arch: j === s.foreignImage ? (s.arch === 'x86_64' ? 'arm64' : 'x86_64') : s.arch })),
  ...(s.pullable != null ? { pullable: s.pullable } : {})
})))

/**
 * Requests aimed at one host of the cluster field by field (left out, copied from the target, or
 * random), so that placements, near misses and hopeless requests all turn up often.
 */
const mode = fc.constantFrom('absent', 'absent', 'target', 'target', 'random')
const requestSpecArb = fc.record({
  target: fc.nat(),
  imagePick: fc.nat(),
  image: fc.constantFrom('target', 'target', 'target', 'random'),
  randomImage: fc.constantFrom(...imageNames),
  cpus: fc.option(fc.integer({ min: 1, max: 16 }), { nil: undefined, freq: 2 }),
  memoryMiB: fc.option(fc.constantFrom(2048, 1024, 4096, 512, 8192, 16_384, 32_768), { nil: undefined, freq: 2 }),
  arch: mode,
  randomArch: fc.constantFrom(...arches),
  os: mode,
  randomOs: fc.constantFrom(...oses),
  driver: mode,
  randomDriver: fc.constantFrom(...drivers),
  labels: mode,
  randomLabels: labelsArb,
  labelsNot: fc.oneof({ arbitrary: fc.constant(undefined), weight: 4 }, { arbitrary: labelsArb, weight: 1 }),
  simulated: fc.constantFrom(undefined, undefined, true, false)
})

type RequestSpec = typeof requestSpecArb extends fc.Arbitrary<infer T> ? T : never

function aimRequest (cluster: PlacementHost[], spec: RequestSpec): PlacementRequest {
  const target = cluster[spec.target % cluster.length]
  const known = [...target.images, ...(target.pullable ?? [])]
  const image = spec.image === 'target' && known.length > 0 ? known[spec.imagePick % known.length] : undefined
  const request: PlacementRequest = { image: image?.name ?? spec.randomImage }
  const pick = <T>(m: string, fromTarget: T | undefined, random: T): T | undefined => m === 'target' ? fromTarget : m === 'random' ? random : undefined
  const arch = pick(spec.arch, target.capacity.arch, spec.randomArch)
  const os = pick(spec.os, image?.os, spec.randomOs)
  const driver = pick(spec.driver, target.capacity.driver, spec.randomDriver)
  const labels = pick(spec.labels, target.capacity.labels, spec.randomLabels)
  if (spec.cpus != null) request.cpus = spec.cpus
  if (spec.memoryMiB != null) request.memoryMiB = spec.memoryMiB
  if (arch != null) request.arch = arch
  if (os != null) request.os = os
  if (driver != null) request.driver = driver
  if (labels != null) request.labels = { ...labels }
  if (spec.labelsNot != null) request.labelsNot = spec.labelsNot
  if (spec.simulated != null) request.simulated = spec.simulated
  return request
}

const scenarioArb: fc.Arbitrary<[PlacementHost[], PlacementRequest]> = fc.tuple(clusterArb, requestSpecArb).map(([cluster, spec]) => [cluster, aimRequest(cluster, spec)])

/** The spec, written out again without the implementation's filters: can this host take it? */
function oracle (request: PlacementRequest, h: PlacementHost, cluster: PlacementHost[]): Resources | undefined {
  if (h.status !== 'alive' || h.draining) return undefined
  const image = h.images.find(i => i.name === request.image) ?? (h.pullable ?? []).find(i => i.name === request.image)
  if (image == null || image.arch !== h.capacity.arch) return undefined
  if (request.arch != null && request.arch !== h.capacity.arch) return undefined
  if (request.os != null && request.os !== image.os) return undefined
  if (request.driver != null && request.driver !== h.capacity.driver) return undefined
  for (const [k, v] of Object.entries(request.labels ?? {})) if (h.capacity.labels[k] !== v) return undefined
  for (const [k, v] of Object.entries(request.labelsNot ?? {})) if (h.capacity.labels[k] === v) return undefined
  if (h.capacity.simulated) {
    const realExists = cluster.some(o => !o.capacity.simulated && o.status !== 'dead')
    const allowed = request.simulated === true || (request.simulated == null && (request.driver === 'sim' || !realExists))
    if (!allowed) return undefined
  }
  const want = { cpus: request.cpus ?? image.defaultCpus, memoryMiB: request.memoryMiB ?? image.defaultMemoryMiB, diskMiB: image.diskMiB }
  if (want.cpus > h.free.cpus || want.memoryMiB > h.free.memoryMiB || want.diskMiB > h.free.diskMiB) return undefined
  return want
}

function deepFreeze<T> (value: T): T {
  if (value != null && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}

describe('properties', () => {
  const policyArb = fc.constantFrom('binpack' as const, 'spread' as const)

  test('a placement never breaks a constraint, and a request some host fits is always placed', () => {
    fc.assert(fc.property(scenarioArb, policyArb, ([cluster, request], policy) => {
      const result = place(request, deepFreeze(cluster), policy)
      const fitting = cluster.filter(h => oracle(request, h, cluster) != null)
      // (a) every ranked host, the chosen one first, meets every constraint with the resources named
      for (const candidate of result.ranked) {
        const h = cluster.find(x => x.name === candidate.name)
        assert.ok(h != null)
        assert.deepEqual(oracle(request, h, cluster), candidate.resources, `${candidate.name} was ranked but breaks a constraint`)
      }
      // (b) some host fits: placed, and no fitting host is missing from the ranking
      assert.equal(result.placed, fitting.length > 0, result.placed ? 'placed with no fitting host' : result.reason)
      assert.deepEqual(result.ranked.map(c => c.name).sort(), fitting.map(h => h.name).sort())
      if (result.placed) {
        assert.equal(result.host, result.ranked[0])
        assert.deepEqual(result.resources, result.host.resources)
        assert.equal(result.simulated, cluster.find(h => h.name === result.host.name)?.capacity.simulated)
      }
    }), { numRuns: 500 })
  })

  test('every host is ranked or rejected exactly once, and every rejection has a reason', () => {
    fc.assert(fc.property(scenarioArb, policyArb, ([cluster, request], policy) => {
      const result = place(request, cluster, policy)
      const seen = [...result.ranked.map(c => c.name), ...result.rejected.map(r => r.host)].sort()
      assert.deepEqual(seen, cluster.map(h => h.name).sort())
      for (const r of result.rejected) {
        assert.ok(r.reasons.length > 0, `${r.host} rejected without a reason`)
        assert.equal(r.peerId, cluster.find(h => h.name === r.host)?.peerId)
      }
    }), { numRuns: 300 })
  })

  test('the same inputs give the same plan, whatever order hosts arrive in', () => {
    fc.assert(fc.property(scenarioArb, policyArb, fc.option(fc.integer(), { nil: undefined }), fc.func(fc.integer()), ([cluster, request], policy, seed, shuffleKey) => {
      const options = seed == null ? {} : { tieBreakSeed: seed }
      const first = place(request, cluster, policy, options)
      assert.deepEqual(place(structuredClone(request), structuredClone(cluster), policy, options), first)
      const shuffled = [...cluster].sort((a, b) => shuffleKey(a.name) - shuffleKey(b.name))
      const again = place(request, shuffled, policy, options)
      assert.deepEqual(again.ranked, first.ranked)
      assert.deepEqual([...again.rejected].sort((a, b) => a.host.localeCompare(b.host)), [...first.rejected].sort((a, b) => a.host.localeCompare(b.host)))
    }), { numRuns: 200 })
  })

  test('ranked is best first, and with the default bonus every caching host comes before every pulling one', () => {
    fc.assert(fc.property(scenarioArb, policyArb, ([cluster, request], policy) => {
      const { ranked } = place(request, cluster, policy)
      for (let i = 1; i < ranked.length; i++) {
        assert.ok(ranked[i - 1].score >= ranked[i].score - 1e-9)
        assert.ok(ranked[i - 1].cachedImage || !ranked[i].cachedImage)
        assert.ok(ranked[i].fit >= 0 && ranked[i].fit <= 1)
      }
    }), { numRuns: 200 })
  })

  test('verifyPlacement agrees with place on the chosen host', () => {
    fc.assert(fc.property(scenarioArb, policyArb, ([cluster, request], policy) => {
      const result = place(request, cluster, policy)
      for (const candidate of result.ranked) {
        const h = cluster.find(x => x.name === candidate.name) as PlacementHost
        assert.deepEqual(verifyPlacement(request, h), { ok: true, resources: candidate.resources })
      }
    }), { numRuns: 200 })
  })
})

// ---------------------------------------------------------------------------------------------
// Two leaders in a partition: each places from its own stale view; each host's ledger is the
// authority, re-checks with verifyPlacement and admits atomically. A conflict costs a retry down
// the ranked list, never an over-committed host.

interface Authority { spec: PlacementHost, ledger: ReservationLedger }

function hostFromLedger ({ spec, ledger }: Authority): PlacementHost {
  return { ...spec, free: ledger.free() }
}

/** Offers the VM down the ranked list; returns the host that admitted it and how many refused. */
function submit (request: PlacementRequest, result: PlacementResult, authorities: Map<string, Authority>, id: string): { admittedBy?: string, resources?: Resources, refusals: number } {
  let refusals = 0
  for (const candidate of result.ranked) {
    const authority = authorities.get(candidate.name) as Authority
    // The host's side: verify against fresh state and reserve, with nothing in between.
    const verdict = verifyPlacement(request, hostFromLedger(authority))
    if (verdict.ok && authority.ledger.reserve(id, verdict.resources).ok) return { admittedBy: candidate.name, resources: verdict.resources, refusals }
    refusals++
  }
  return { refusals }
}

function assertNoOvercommit (authorities: Map<string, Authority>): void {
  for (const [name, { ledger }] of authorities) {
    const used = ledger.used()
    const cap = ledger.capacity
    assert.ok(used.cpus <= cap.cpus && used.memoryMiB <= cap.memoryMiB && used.diskMiB <= cap.diskMiB, `${name} over-committed: ${JSON.stringify(used)} of ${JSON.stringify(cap)}`)
  }
}

class Leader {
  /** What this leader believes each host has free: its snapshot, updated only by its own admissions. */
  readonly view: Map<string, PlacementHost>
  constructor (snapshot: PlacementHost[]) {
    this.view = new Map(snapshot.map(h => [h.name, structuredClone(h)]))
  }

  admitted (name: string, r: Resources): void {
    const h = this.view.get(name) as PlacementHost
    h.free = { cpus: h.free.cpus - r.cpus, memoryMiB: h.free.memoryMiB - r.memoryMiB, diskMiB: h.free.diskMiB - r.diskMiB }
  }
}

describe('two leaders in a partition', () => {
  test('both pick the same host; the loser is refused and retries the next one', () => {
    const specs = [host('a'), host('b')].map(h => ({ ...h, capacity: { ...h.capacity, cpus: 4 }, free: { ...h.free, cpus: 4 } }))
    const authorities = new Map(specs.map(spec => [spec.name, { spec, ledger: new ReservationLedger(spec.capacity) }]))
    const leaders = [new Leader(specs), new Leader(specs)]
    const request: PlacementRequest = { image: 'ubuntu', cpus: 4 }
    const plans = leaders.map(l => place(request, [...l.view.values()], 'binpack'))
    assert.equal(placed(plans[0]).host.name, placed(plans[1]).host.name, 'same snapshot, same first choice')
    const first = submit(request, plans[0], authorities, 'vm-1')
    const second = submit(request, plans[1], authorities, 'vm-2')
    assert.deepEqual([first.admittedBy, first.refusals], ['a', 0])
    assert.deepEqual([second.admittedBy, second.refusals], ['b', 1])
    leaders[0].admitted('a', first.resources as Resources)
    // Leader 0 still believes b is empty: b refuses, and nothing is over-committed.
    const third = submit(request, place(request, [...leaders[0].view.values()], 'binpack'), authorities, 'vm-3')
    assert.deepEqual(third, { refusals: 1 })
    assertNoOvercommit(authorities)
  })

  test('random interleavings of two leaders and deletions never over-commit a host', () => {
    const step = fc.oneof(
      fc.record({ kind: fc.constant('place' as const), leader: fc.integer({ min: 0, max: 1 }), cpus: fc.integer({ min: 1, max: 8 }), memoryMiB: fc.integer({ min: 512, max: 16_384 }), policy: policyArbFor() }),
      fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() })
    )
    const aliveCluster = clusterArb.map(hosts => hosts.slice(0, 12).map(h => ({
      ...h,
      status: 'alive' as const,
      draining: false,
      capacity: { ...h.capacity, driver: 'qemu' as const, simulated: false },
      images: [ubuntu],
      free: { cpus: h.capacity.cpus, memoryMiB: h.capacity.memoryMiB, diskMiB: h.capacity.diskMiB }
    })))
    let totalRefusals = 0
    fc.assert(fc.property(aliveCluster, fc.array(step, { minLength: 1, maxLength: 80 }), fc.integer(), (specs, steps, seed) => {
      const authorities = new Map(specs.map(spec => [spec.name, { spec, ledger: new ReservationLedger(spec.capacity) }]))
      const leaders = [new Leader(specs), new Leader(specs)]
      const live: Array<{ id: string, host: string }> = []
      let n = 0
      for (const s of steps) {
        if (s.kind === 'delete') {
          if (live.length === 0) continue
          const [gone] = live.splice(s.pick % live.length, 1)
          authorities.get(gone.host)?.ledger.release(gone.id)
          continue
        }
        const leader = leaders[s.leader]
        const request: PlacementRequest = { image: 'ubuntu', cpus: s.cpus, memoryMiB: s.memoryMiB }
        const id = `vm-${n++}`
        const outcome = submit(request, place(request, [...leader.view.values()], s.policy, { tieBreakSeed: seed + n }), authorities, id)
        totalRefusals += outcome.refusals
        if (outcome.admittedBy != null) {
          leader.admitted(outcome.admittedBy, outcome.resources as Resources)
          live.push({ id, host: outcome.admittedBy })
        }
        assertNoOvercommit(authorities)
      }
    }), { numRuns: 200 })
    assert.ok(totalRefusals > 0, 'the runs included conflicts between the leaders')
  })
})

function policyArbFor (): fc.Arbitrary<'binpack' | 'spread'> {
  return fc.constantFrom('binpack' as const, 'spread' as const)
}
