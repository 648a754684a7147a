/**
 * What a bundle folder is, for its catalog record: a qemu image folder (image.json names arch, OS
 * and defaults), a Parallels .pvm/.macvm bundle, or something else. The pusher can override any
 * field; what cannot be read falls back to stated defaults.
 */
import { readFile, stat } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { BundleInvalidError } from './errors.ts'
import type { CatalogArch, GuestInfo } from './types.ts'
import { normaliseArch } from './records.ts'

export interface GuestOverrides {
  os?: GuestInfo['os']
  defaultCpus?: number
  defaultMemoryMiB?: number
  diskMiB?: number
}

export interface DescribedBundle {
  guest: GuestInfo
  /** The arch the bundle says it is for, if it says. */
  arch?: CatalogArch
}

export async function describeBundle (path: string, overrides: GuestOverrides = {}, totalBytes = 0): Promise<DescribedBundle> {
  const name = basename(path)
  let qemu: Record<string, unknown> | undefined
  try {
    qemu = JSON.parse(await readFile(join(path, 'image.json'), 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new BundleInvalidError(`${join(path, 'image.json')} is not readable JSON: ${(err as Error).message}`, { path })
  }
  const fromBytes = Math.max(1, Math.ceil(totalBytes / 1048576))
  if (qemu != null) {
    const num = (key: string, fallback: number): number => (typeof qemu[key] === 'number' && Number.isInteger(qemu[key]) ? qemu[key] as number : fallback)
    let diskMiB = num('diskMiB', 0)
    if (diskMiB === 0 && typeof qemu.disk === 'string') diskMiB = Math.ceil(((await stat(join(path, qemu.disk)).catch(() => undefined))?.size ?? 0) / 1048576)
    const os = qemu.os === 'macos' || qemu.os === 'windows' ? qemu.os : 'linux'
    return {
      arch: typeof qemu.arch === 'string' ? normaliseArch(qemu.arch) : undefined,
      guest: {
        format: 'qemu',
        os: overrides.os ?? os,
        defaultCpus: overrides.defaultCpus ?? num('defaultCpus', 1),
        defaultMemoryMiB: overrides.defaultMemoryMiB ?? num('defaultMemoryMiB', 1024),
        diskMiB: overrides.diskMiB ?? Math.max(1, diskMiB),
        ports: Array.isArray(qemu.ports) ? (qemu.ports as unknown[]).filter((p): p is number => Number.isInteger(p)) : []
      }
    }
  }
  const parallels = /\.(pvm|macvm)$/i.test(name)
  return {
    guest: {
      format: parallels ? 'parallels' : 'other',
      os: overrides.os ?? (parallels ? 'macos' : 'linux'),
      defaultCpus: overrides.defaultCpus ?? 2,
      defaultMemoryMiB: overrides.defaultMemoryMiB ?? 4096,
      diskMiB: overrides.diskMiB ?? fromBytes
    }
  }
}
