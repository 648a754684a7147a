import { readFile, stat } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, resolve } from 'node:path'
import type { Arch, GuestOs } from '../types.ts'
import { ImageInvalidError } from '../errors.ts'

export const MANIFEST_FILE = 'image.json'

/**
 * `image.json`, the manifest of a qemu image folder. File names are relative to the folder. An image
 * is a qcow2 disk (cloned as a linked overlay), a kernel + initrd, or both (the test guest).
 */
export interface QemuImageManifest {
  name: string
  arch: Arch
  os: GuestOs
  /** qcow2 base disk; VMs get an overlay backed by it and never write to it. */
  disk?: string
  kernel?: string
  initrd?: string
  cmdline?: string
  defaultCpus: number
  defaultMemoryMiB: number
  /** Disk a clone reserves; defaults to the base disk's virtual size. */
  diskMiB?: number
  /** How corral reaches the guest: `qemu-ga` on virtio-serial, or `none` (no exec). */
  agent: 'qemu-ga' | 'none'
  /** Guest TCP ports forwarded to loopback when the VM starts. */
  ports: number[]
  /** QEMU machine type; `pc` unless the image needs `q35`. microvm hangs under TCG, so it is refused. */
  machine?: 'pc' | 'q35'
}

/** A manifest with its folder and absolute file paths, checked to exist. */
export interface QemuImage {
  folder: string
  manifest: QemuImageManifest
  diskPath?: string
  kernelPath?: string
  initrdPath?: string
}

/** Accepts the image folder or its image.json. */
export async function readImageFolder (path: string): Promise<QemuImage> {
  if (path.trim() === '') throw new ImageInvalidError('the image path is empty: give the folder that holds image.json')
  const absolute = resolve(path)
  const folder = basename(absolute) === MANIFEST_FILE ? dirname(absolute) : absolute
  const manifestPath = join(folder, MANIFEST_FILE)
  let text: string
  try {
    text = await readFile(manifestPath, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new ImageInvalidError(code === 'ENOENT'
      ? `${folder} is not a qemu image: it has no ${MANIFEST_FILE} (a folder with image.json naming its qcow2 disk or kernel and initrd)`
      : `cannot read ${manifestPath}: ${(err as Error).message}`, { path: folder })
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ImageInvalidError(`${manifestPath} is not valid JSON: ${(err as Error).message}`, { path: folder })
  }
  const manifest = parseManifest(raw, manifestPath)
  const image: QemuImage = { folder, manifest }
  if (manifest.disk != null) image.diskPath = await requireFile(folder, manifest.disk, 'disk', manifestPath)
  if (manifest.kernel != null) image.kernelPath = await requireFile(folder, manifest.kernel, 'kernel', manifestPath)
  if (manifest.initrd != null) image.initrdPath = await requireFile(folder, manifest.initrd, 'initrd', manifestPath)
  return image
}

/** Validates a parsed image.json; every message names the file, the field and what is allowed. */
export function parseManifest (raw: unknown, where: string): QemuImageManifest {
  const fail = (message: string): never => { throw new ImageInvalidError(`${where}: ${message}`, { path: where }) }
  if (typeof raw !== 'object' || raw == null || Array.isArray(raw)) fail('must be a JSON object')
  const m = raw as Record<string, unknown>
  const str = (key: string, required: boolean): string | undefined => {
    const value = m[key]
    if (value === undefined && !required) return undefined
    if (typeof value !== 'string' || value.trim() === '') fail(`"${key}" must be a non-empty string`)
    return value as string
  }
  const int = (key: string, min: number, max: number, required: boolean): number | undefined => {
    const value = m[key]
    if (value === undefined && !required) return undefined
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) fail(`"${key}" must be an integer from ${min} to ${max}`)
    return value as number
  }
  const name = str('name', true) as string
  const arch = m.arch
  if (arch !== 'x86_64' && arch !== 'arm64') fail('"arch" must be "x86_64" or "arm64"')
  const os = m.os
  if (os !== 'linux' && os !== 'windows' && os !== 'macos') fail('"os" must be "linux", "windows" or "macos"')
  const disk = str('disk', false)
  const kernel = str('kernel', false)
  const initrd = str('initrd', false)
  const cmdline = m.cmdline === undefined ? undefined : typeof m.cmdline === 'string' ? m.cmdline : fail('"cmdline" must be a string')
  if (disk == null && kernel == null) fail('needs "disk" (a qcow2 file) or "kernel" (with "initrd"), or both')
  if (initrd != null && kernel == null) fail('"initrd" needs "kernel"')
  if (cmdline != null && kernel == null) fail('"cmdline" needs "kernel"')
  for (const [key, file] of [['disk', disk], ['kernel', kernel], ['initrd', initrd]] as const) {
    if (file != null && (isAbsolute(file) || file.split(/[\\/]/).includes('..'))) fail(`"${key}" must be a file name inside the image folder, not "${file}"`)
  }
  const agent = m.agent ?? 'none'
  if (agent !== 'qemu-ga' && agent !== 'none') fail('"agent" must be "qemu-ga" (QEMU guest agent on virtio-serial) or "none"')
  const ports = m.ports ?? []
  if (!Array.isArray(ports) || !ports.every(p => Number.isInteger(p) && p >= 1 && p <= 65535)) fail('"ports" must be a list of TCP port numbers (1-65535)')
  const machine = m.machine
  if (machine !== undefined && machine !== 'pc' && machine !== 'q35') fail('"machine" must be "pc" or "q35" (microvm does not boot under TCG)')
  const manifest: QemuImageManifest = {
    name,
    arch: arch as Arch,
    os: os as GuestOs,
    defaultCpus: int('defaultCpus', 1, 512, true) as number,
    defaultMemoryMiB: int('defaultMemoryMiB', 16, 4_194_304, true) as number,
    agent: agent as QemuImageManifest['agent'],
    ports: [...new Set(ports as number[])]
  }
  const diskMiB = int('diskMiB', 1, 1_073_741_824, false)
  if (disk != null) manifest.disk = disk
  if (kernel != null) manifest.kernel = kernel
  if (initrd != null) manifest.initrd = initrd
  if (cmdline != null) manifest.cmdline = cmdline
  if (diskMiB != null) manifest.diskMiB = diskMiB
  if (machine != null) manifest.machine = machine as 'pc' | 'q35'
  return manifest
}

async function requireFile (folder: string, file: string, key: string, manifestPath: string): Promise<string> {
  const path = join(folder, file)
  try {
    if ((await stat(path)).isFile()) return path
  } catch {}
  throw new ImageInvalidError(`${manifestPath}: "${key}" names ${file}, which is not a file in ${folder}`, { path: folder })
}
