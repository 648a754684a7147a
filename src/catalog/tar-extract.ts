/**
 * Extracting a tar stream (optionally gzip-compressed, detected by its magic bytes) into a folder:
 * ustar, GNU long names and PAX path/size records, regular files and folders, as Go's archive/tar
 * writes them. Names are made relative and checked, so no member lands outside the folder; links
 * and devices are skipped.
 */
import { createReadStream } from 'node:fs'
import { mkdir, open, type FileHandle } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { createGunzip } from 'node:zlib'
import type { Readable } from 'node:stream'
import { BundleInvalidError } from './errors.ts'

const BLOCK = 512

/** A path inside the target folder, or undefined for `.`-only names; throws on escapes. */
function safeName (name: string, archive: string): string | undefined {
  const parts = name.replace(/\\/g, '/').split('/').filter(p => p !== '' && p !== '.')
  if (parts.includes('..')) throw new BundleInvalidError(`${archive} has a member "${name}" that points outside its folder; refusing to extract it`, { member: name })
  return parts.length === 0 ? undefined : parts.join('/')
}

function field (header: Buffer, start: number, length: number): string {
  const raw = header.subarray(start, start + length)
  const end = raw.indexOf(0)
  return raw.subarray(0, end === -1 ? raw.length : end).toString('utf8')
}

function octal (header: Buffer, start: number, length: number): number {
  // GNU base-256 for sizes beyond 8 GiB: high bit of the first byte set.
  if ((header[start] & 0x80) !== 0) {
    let n = 0
    for (let i = start + 1; i < start + length; i++) n = n * 256 + header[i]
    return n
  }
  const text = field(header, start, length).trim()
  return text === '' ? 0 : parseInt(text, 8)
}

function parsePax (data: Buffer): Record<string, string> {
  const out: Record<string, string> = {}
  let off = 0
  while (off < data.length) {
    const space = data.indexOf(0x20, off)
    if (space === -1) break
    const len = Number(data.subarray(off, space).toString())
    if (!Number.isInteger(len) || len <= 0) break
    const record = data.subarray(space + 1, off + len - 1).toString('utf8')
    const eq = record.indexOf('=')
    if (eq > 0) out[record.slice(0, eq)] = record.slice(eq + 1)
    off += len
  }
  return out
}

/** Opens the archive, ungzipping it if it starts with gzip's magic bytes. */
export async function openArchive (path: string): Promise<Readable> {
  const handle = await open(path, 'r')
  const magic = Buffer.alloc(2)
  await handle.read(magic, 0, 2, 0)
  await handle.close()
  const raw = createReadStream(path, { highWaterMark: 1024 * 1024 })
  return magic[0] === 0x1f && magic[1] === 0x8b ? raw.pipe(createGunzip()) : raw
}

/** Extracts every file and folder of the tar at `archive` into `dest`; returns the files written. */
export async function extractTar (archive: string, dest: string, signal?: AbortSignal): Promise<number> {
  const stream = await openArchive(archive)
  await mkdir(dest, { recursive: true })
  let pending: Buffer = Buffer.alloc(0)
  let files = 0
  // The member being read: bytes left of its data (and of its padding), and where they go.
  let left = 0
  let padding = 0
  let sink: FileHandle | undefined
  let meta: Buffer[] | undefined
  let metaKind = ''
  let longName: string | undefined
  let pax: Record<string, string> = {}
  let ended = false

  const startMember = async (header: Buffer): Promise<void> => {
    const type = String.fromCharCode(header[156] === 0 ? 0x30 : header[156])
    let size = octal(header, 124, 12)
    if (type === 'x' || type === 'g' || type === 'L') {
      // Metadata for the next member (a global PAX header is read and ignored).
      left = size
      padding = (BLOCK - (size % BLOCK)) % BLOCK
      meta = []
      metaKind = type
      return
    }
    let name = field(header, 0, 100)
    if (field(header, 257, 6).startsWith('ustar')) {
      const prefix = field(header, 345, 155)
      if (prefix !== '') name = `${prefix}/${name}`
    }
    if (longName != null) name = longName
    if (pax.path != null) name = pax.path
    if (pax.size != null) size = Number(pax.size)
    longName = undefined
    pax = {}
    left = size
    padding = (BLOCK - (size % BLOCK)) % BLOCK
    const mode = octal(header, 100, 8) & 0o7777
    const rel = safeName(name, archive)
    if (type === '5') {
      if (rel != null) await mkdir(join(dest, ...rel.split('/')), { recursive: true })
    } else if ((type === '0' || type === '7') && rel != null) {
      const target = join(dest, ...rel.split('/'))
      await mkdir(dirname(target), { recursive: true })
      sink = await open(target, 'w', (mode & 0o777) | 0o600)
      files++
    }
  }

  const endMember = async (): Promise<void> => {
    if (sink != null) { await sink.close(); sink = undefined }
    if (meta != null) {
      const data = Buffer.concat(meta)
      if (metaKind === 'L') longName = field(data, 0, data.length)
      else if (metaKind === 'x') pax = parsePax(data)
      meta = undefined
    }
  }

  try {
    for await (const piece of stream as AsyncIterable<Buffer>) {
      signal?.throwIfAborted()
      pending = pending.length === 0 ? piece : Buffer.concat([pending, piece])
      let off = 0
      while (!ended) {
        if (left > 0) {
          const take = Math.min(left, pending.length - off)
          if (take === 0) break
          const data = pending.subarray(off, off + take)
          if (sink != null) {
            let done = 0
            while (done < data.length) done += (await sink.write(data, done, data.length - done)).bytesWritten
          } else if (meta != null) meta.push(Buffer.from(data))
          left -= take
          off += take
          if (left > 0) break
        }
        if (padding > 0) {
          const skip = Math.min(padding, pending.length - off)
          padding -= skip
          off += skip
          if (padding > 0) break
        }
        if (left === 0 && padding === 0 && (sink != null || meta != null)) await endMember()
        if (pending.length - off < BLOCK) break
        const header = pending.subarray(off, off + BLOCK)
        off += BLOCK
        if (header.every(b => b === 0)) { ended = true; break }
        await startMember(header)
        if (left === 0 && padding === 0) await endMember()
      }
      pending = pending.subarray(off)
      if (ended) break
    }
    if (!ended && (left > 0 || sink != null)) throw new BundleInvalidError(`${archive} ends in the middle of a member: the pack is truncated; copy it again`, { archive })
  } finally {
    await sink?.close()
    stream.destroy()
  }
  return files
}
