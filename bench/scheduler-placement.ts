/**
 * bench/scheduler-placement: how many placements per second the pure placement function makes,
 * on clusters of 50 and 500 hosts (a mix of drivers, arches, labels, cached and pullable images,
 * a few suspect or draining hosts), with both policies. Each scenario runs a fixed number of
 * placements on one snapshot after a warm-up; prints figures and asserts nothing.
 *
 *   node bench/scheduler-placement.ts [--placements 20000]
 */
import { parseArgs } from 'node:util'
import { place, type PlacementHost, type PlacementImage, type PlacementPolicy, type PlacementRequest } from '../src/scheduler/placement/index.ts'

const { values } = parseArgs({ options: { placements: { type: 'string', default: '20000' } } })
const placements = Math.max(100, Math.min(1_000_000, Number(values.placements)))

/** mulberry32: the bench's own seeded randomness, so every run measures the same clusters. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const images: Array<Omit<PlacementImage, 'arch'>> = [
  { name: 'ubuntu-24.04', os: 'linux', defaultCpus: 2, defaultMemoryMiB: 2048, diskMiB: 20_480 },
  { name: 'debian-12', os: 'linux', defaultCpus: 2, defaultMemoryMiB: 2048, diskMiB: 16_384 },
  { name: 'windows-11', os: 'windows', defaultCpus: 4, defaultMemoryMiB: 8192, diskMiB: 65_536 },
  { name: 'macos-15', os: 'macos', defaultCpus: 4, defaultMemoryMiB: 8192, diskMiB: 81_920 },
  { name: 'macos-14', os: 'macos', defaultCpus: 4, defaultMemoryMiB: 8192, diskMiB: 81_920 }
]

function cluster (size: number, random: () => number): PlacementHost[] {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]
  return Array.from({ length: size }, (_, i): PlacementHost => {
    const mac = random() < 0.4
    const arch = mac ? 'arm64' : pick(['x86_64', 'x86_64', 'arm64'] as const)
    const cpus = pick([8, 16, 32, 64])
    const memoryMiB = cpus * pick([2048, 4096])
    const diskMiB = pick([500_000, 1_000_000, 2_000_000])
    const used = random()
    const runnable = images.filter(img => mac || img.os !== 'macos').map(img => ({ ...img, arch }))
    const cached = runnable.filter(() => random() < 0.6)
    return {
      name: `host-${String(i).padStart(3, '0')}`,
      peerId: `12D3KooW${i.toString(36).padStart(8, '0')}`,
      status: random() < 0.04 ? 'suspect' : 'alive',
      draining: random() < 0.04,
      capacity: { cpus, memoryMiB, diskMiB, arch, os: mac ? 'macos' : 'linux', driver: mac ? 'parallels' : 'qemu', labels: { rack: pick(['a', 'b', 'c']), ...(mac ? { xcode: pick(['15', '16']) } : {}) }, simulated: false },
      free: { cpus: Math.floor(cpus * (1 - used)), memoryMiB: Math.floor(memoryMiB * (1 - used)), diskMiB: Math.floor(diskMiB * (1 - used / 2)) },
      images: cached,
      pullable: runnable.filter(img => !cached.includes(img))
    }
  })
}

function requests (count: number, random: () => number): PlacementRequest[] {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]
  return Array.from({ length: count }, (): PlacementRequest => {
    const image = pick(images)
    const request: PlacementRequest = { image: image.name }
    if (random() < 0.5) request.cpus = pick([1, 2, 4, 8])
    if (random() < 0.3) request.memoryMiB = pick([2048, 4096, 8192, 16_384])
    if (image.os === 'macos' && random() < 0.5) request.labels = { xcode: pick(['15', '16']) }
    if (random() < 0.2) request.arch = pick(['x86_64', 'arm64'] as const)
    return request
  })
}

const random = prng(0xc0442a1)
const batch = requests(1000, random)
console.log(`placement bench: ${placements} placements per scenario, node ${process.version}`)
for (const size of [50, 500]) {
  const hosts = cluster(size, random)
  for (const policy of ['binpack', 'spread'] as PlacementPolicy[]) {
    const count = size >= 500 ? Math.max(100, Math.floor(placements / 5)) : placements
    let placed = 0
    for (let i = 0; i < Math.min(count, 500); i++) place(batch[i % batch.length], hosts, policy) // warm-up
    const started = performance.now()
    for (let i = 0; i < count; i++) {
      if (place(batch[i % batch.length], hosts, policy, { tieBreakSeed: i }).placed) placed++
    }
    const seconds = (performance.now() - started) / 1000
    console.log(`${String(size).padStart(3)} hosts, ${policy.padEnd(7)}: ${Math.round(count / seconds).toLocaleString('en')} placements/s ` +
      `(${(seconds * 1e6 / count).toFixed(1)} µs each, ${count} placements, ${Math.round(100 * placed / count)}% placed)`)
  }
}
