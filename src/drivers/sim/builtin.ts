import type { Arch, DriverImage } from '../types.ts'

/** Images every sim host has, so a fresh sim node can create VMs at once. They take the host's arch. */
export function builtinSimImages (arch: Arch): DriverImage[] {
  const image = (name: string, os: DriverImage['os'], cpus: number, memoryMiB: number, diskMiB: number): DriverImage => ({
    name, os, arch, path: `sim:${name}`, defaultCpus: cpus, defaultMemoryMiB: memoryMiB, diskMiB, simulated: true, ports: [22, 80]
  })
  return [
    image('sim-macos-15', 'macos', 4, 8192, 81920),
    image('sim-windows-11', 'windows', 4, 8192, 65536),
    image('sim-ubuntu-24.04', 'linux', 2, 2048, 20480)
  ]
}
