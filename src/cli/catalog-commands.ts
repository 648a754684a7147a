import { Command } from 'commander'
import { resolve } from 'node:path'
import { CliError } from './errors.ts'
import type { ApiClient } from './client.ts'
import { printObject, printRows } from './output.ts'

interface Progress {
  kind: string
  phase: string
  chunksTotal: number
  chunksDone: number
  bytesTotal: number
  bytesDone: number
  bytesFromPeers: number
  bytesFromProvider: number
  chunksReused: number
  corruptChunks: number
  packs?: { total: number, done: number, current?: string, step?: string }
}

interface Job {
  id: string
  kind: string
  ref: string
  state: 'running' | 'done' | 'failed'
  progress: Progress
  error?: { name: string, message: string }
  result?: any
}

interface Version { version: string, arch: string, size: number, storedSize: number, chunks: number, provider: string, createdAt: string, createdBy: string, revoked?: { reason: string }, guest: { os: string, format: string } }
interface Entry { id: string, description: string, tags: Record<string, string>, requiredClaims: string[], versions: Version[], revoked?: { reason: string }, usable?: boolean }

interface GcResult {
  dryRun: boolean
  providers: Array<{
    provider: string
    graceMinutes: number
    live: { versions: number, manifests: number, packs: number, packBytes: number }
    items: Array<{ key: string, kind: string, bytes: number, ageMinutes?: number, action: string }>
    bytes: number
    pushes: Array<{ id: string, image?: string, version?: string }>
    missingManifests: string[]
  }>
  holders: Array<{ manifest: string, peerId: string, host?: string, state: string, why: string, removed: boolean }>
}

const POLL_MS = 300

/** `corral catalog ...`: versioned images in storage providers, pushed and pulled through a node. */
export function catalogCommands (client: (cmd: Command) => Promise<ApiClient>, json: (cmd: Command) => boolean): Command[] {
  const catalog = new Command('catalog').description('versioned golden images in S3, Azure Blob, Artifactory or a folder, cached on every host')

  catalog.command('list').description('catalog images, their versions and tags').action(async (_o, cmd: Command) => {
    const res = await (await client(cmd)).request<{ items: Entry[] }>('GET', '/api/v1/catalog')
    const rows = res.items.map(e => ({
      id: e.id,
      versions: [...new Set(e.versions.map(v => v.version))].join(', '),
      arches: [...new Set(e.versions.map(v => v.arch))].join(', '),
      tags: Object.entries(e.tags).map(([t, v]) => `${t}=${v}`).join(', '),
      claims: e.requiredClaims.join(', '),
      state: e.revoked != null ? 'revoked' : e.usable === false ? 'no access' : 'ok'
    }))
    printRows(rows, ['id', 'versions', 'arches', 'tags', 'claims', 'state'], json(cmd), res.items)
  })

  catalog.command('show <id>').description('one image with every version').action(async (id: string, _o, cmd: Command) => {
    const entry = await (await client(cmd)).request<Entry>('GET', `/api/v1/catalog/${encodeURIComponent(id)}`)
    if (json(cmd)) {
      process.stdout.write(JSON.stringify(entry, null, 2) + '\n')
      return
    }
    const { versions, ...image } = entry
    printObject(image as unknown as Record<string, unknown>, false)
    printRows(versions.map(v => ({
      version: v.version, arch: v.arch, os: v.guest.os, format: v.guest.format, size: mib(v.size), stored: mib(v.storedSize), chunks: v.chunks,
      provider: v.provider, created: `${v.createdAt} by ${v.createdBy}`, revoked: v.revoked?.reason ?? ''
    })), ['version', 'arch', 'os', 'format', 'size', 'stored', 'chunks', 'provider', 'created', 'revoked'], false)
  })

  catalog.command('push <path>').description('pack a bundle folder on the node (qemu image folder, .pvm or .macvm) and push it as a new version')
    .requiredOption('--id <id>', 'catalog image id, e.g. macos-15-xcode-16')
    .requiredOption('--version <version>', 'the new version, e.g. 16.1')
    .option('--arch <arch>', 'x86_64 or arm64 (default: what the image says, else the node\'s)')
    .option('--provider <name>', 'folder, s3, azure or artifactory (default: the node\'s default provider)')
    .option('--tag <tag...>', 'tags to point at this version (default: latest)')
    .option('--description <text>', 'what the image is')
    .option('--require-claim <claim...>', 'claims (or role names) a user needs to use the image')
    .option('--os <os>', 'guest OS when the bundle does not say (linux, macos, windows)')
    .option('--force', 'replace an existing version of that number')
    .action(async (path: string, opts: { id: string, version: string, arch?: string, provider?: string, tag?: string[], description?: string, requireClaim?: string[], os?: string, force?: boolean }, cmd: Command) => {
      const api = await client(cmd)
      const job = await api.request<Job>('POST', '/api/v1/catalog/push', {
        path: resolve(path), id: opts.id, version: opts.version, arch: opts.arch, provider: opts.provider, tags: opts.tag,
        description: opts.description, requiredClaims: opts.requireClaim, os: opts.os, force: opts.force
      })
      const done = await follow(api, job, `push ${opts.id}:${opts.version}`, json(cmd))
      if (json(cmd)) process.stdout.write(JSON.stringify(done, null, 2) + '\n')
      else {
        const v = done.result as Version
        process.stdout.write(`pushed ${opts.id}:${v.version} (${v.arch}) to ${v.provider}: ${mib(v.size)} in ${v.chunks} chunks, ${mib(done.progress.bytesFromProvider)} uploaded (${done.progress.chunksReused} chunks already stored)\n`)
      }
    })

  catalog.command('pull <ref>').description('pull an image (id, id:version or id:tag) into the node\'s cache')
    .option('--arch <arch>', 'x86_64 or arm64 (default: the node\'s)')
    .action(async (ref: string, opts: { arch?: string }, cmd: Command) => {
      const api = await client(cmd)
      const [id, version] = splitRef(ref)
      const job = await api.request<Job>('POST', `/api/v1/catalog/${encodeURIComponent(id)}/pull`, { version, arch: opts.arch })
      const done = await follow(api, job, `pull ${ref}`, json(cmd))
      if (json(cmd)) process.stdout.write(JSON.stringify(done, null, 2) + '\n')
      else {
        const p = done.progress
        process.stdout.write(`${String(done.result?.name)} (${String(done.result?.arch)}) is in the cache at ${String(done.result?.path)}: ${mib(p.bytesFromProvider)} from storage, ${mib(p.bytesFromPeers)} from peers, ${p.chunksReused} chunks were cached${p.corruptChunks > 0 ? `, ${p.corruptChunks} corrupt chunks fetched again` : ''}\n`)
      }
    })

  catalog.command('prefetch <ref>').description('warm the caches of hosts matching labels: each pulls the image now')
    .option('--host-label <key=value...>', 'only hosts with these labels')
    .option('--arch <arch>', 'x86_64 or arm64')
    .action(async (ref: string, opts: { hostLabel?: string[], arch?: string }, cmd: Command) => {
      const [id, version] = splitRef(ref)
      const res = await (await client(cmd)).request<{ hosts: Array<Record<string, unknown>> }>('POST', `/api/v1/catalog/${encodeURIComponent(id)}/prefetch`, { version, arch: opts.arch, hostLabels: pairs(opts.hostLabel) })
      printRows(res.hosts, ['host', 'status', 'job', 'error'], json(cmd), res)
    })

  catalog.command('import').description('import Parallels DevOps Service catalog packs (.pdpack with .meta) from a provider')
    .requiredOption('--provider <name>', 'where the packs are: folder, s3, azure or artifactory')
    .option('--prefix <path>', 'folder inside the provider', '')
    .option('--to <name>', 'push the imported versions to this provider (default: the same)')
    .option('--only <id...>', 'only these catalog ids')
    .action(async (opts: { provider: string, prefix: string, to?: string, only?: string[] }, cmd: Command) => {
      const api = await client(cmd)
      const job = await api.request<Job>('POST', '/api/v1/catalog/import', { provider: opts.provider, prefix: opts.prefix, to: opts.to, only: opts.only })
      const done = await follow(api, job, `import from ${opts.provider}`, json(cmd))
      if (json(cmd)) process.stdout.write(JSON.stringify(done, null, 2) + '\n')
      else {
        const r = done.result as { imported: Array<{ id: string, version: string, arch: string }>, skipped: Array<{ meta: string, reason: string }>, failed: Array<{ meta: string, error: string }> }
        printRows([
          ...r.imported.map(i => ({ pack: `${i.id}:${i.version} (${i.arch})`, outcome: 'imported' })),
          ...r.skipped.map(s => ({ pack: s.meta, outcome: `skipped: ${s.reason}` })),
          ...r.failed.map(f => ({ pack: f.meta, outcome: `failed: ${f.error}` }))
        ], ['pack', 'outcome'], false)
        if (r.failed.length > 0) process.exitCode = 1
      }
    })

  catalog.command('tag <id> <tag> [version]').description('point a tag at a version, or remove it with --delete')
    .option('--delete', 'remove the tag')
    .action(async (id: string, tag: string, version: string | undefined, opts: { delete?: boolean }, cmd: Command) => {
      const api = await client(cmd)
      if (opts.delete !== true && version == null) throw new CliError('give the version the tag should point at, or --delete', 2)
      const res = opts.delete === true
        ? await api.request<Entry>('DELETE', `/api/v1/catalog/${encodeURIComponent(id)}/tags/${encodeURIComponent(tag)}`)
        : await api.request<Entry>('POST', `/api/v1/catalog/${encodeURIComponent(id)}/tags`, { tag, version })
      if (json(cmd)) process.stdout.write(JSON.stringify(res, null, 2) + '\n')
      else process.stdout.write(`${id}: ${Object.entries(res.tags).map(([t, v]) => `${t}=${v}`).join(', ') || 'no tags'}\n`)
    })

  catalog.command('revoke <ref>').description('stop new pulls and VMs from an image (id) or one version (id:version)')
    .requiredOption('--reason <text>', 'why (shown to those refused)')
    .option('--arch <arch>', 'only this arch of the version')
    .action(async (ref: string, opts: { reason: string, arch?: string }, cmd: Command) => {
      const [id, version] = splitRef(ref)
      await (await client(cmd)).request('POST', `/api/v1/catalog/${encodeURIComponent(id)}/revoke`, { version, arch: opts.arch, reason: opts.reason })
      process.stdout.write(`${ref} revoked\n`)
    })

  catalog.command('restore <ref>').description('lift a revocation').option('--arch <arch>', 'only this arch of the version')
    .action(async (ref: string, opts: { arch?: string }, cmd: Command) => {
      const [id, version] = splitRef(ref)
      await (await client(cmd)).request('POST', `/api/v1/catalog/${encodeURIComponent(id)}/restore`, { version, arch: opts.arch })
      process.stdout.write(`${ref} restored\n`)
    })

  catalog.command('delete <ref>').description('remove an image (id) or a version (id:version) from the catalog; stored chunks stay until `corral catalog gc`')
    .option('--arch <arch>', 'only this arch of the version')
    .action(async (ref: string, opts: { arch?: string }, cmd: Command) => {
      const [id, version] = splitRef(ref)
      const api = await client(cmd)
      if (version == null) await api.request('DELETE', `/api/v1/catalog/${encodeURIComponent(id)}`)
      else await api.request('DELETE', `/api/v1/catalog/${encodeURIComponent(id)}/versions/${encodeURIComponent(version)}${opts.arch != null ? `?arch=${encodeURIComponent(opts.arch)}` : ''}`)
      process.stdout.write(`${ref} deleted\n`)
    })

  catalog.command('cache').description('this node\'s cache: size, limit and images').option('--prune', 'first evict every chunk and image no VM uses').action(async (opts: { prune?: boolean }, cmd: Command) => {
    const api = await client(cmd)
    if (opts.prune === true) {
      const pruned = await api.request<{ evictedChunks: number, evictedImages: string[] }>('POST', '/api/v1/catalog/cache/prune', {})
      if (!json(cmd)) process.stdout.write(`evicted ${pruned.evictedChunks} chunks and ${pruned.evictedImages.length} images${pruned.evictedImages.length > 0 ? `: ${pruned.evictedImages.join(', ')}` : ''}\n`)
    }
    const res = await api.request<{ usedBytes: number, maxBytes: number, chunks: number, images: Array<Record<string, unknown>>, providers: string[] }>('GET', '/api/v1/catalog/cache')
    if (json(cmd)) {
      process.stdout.write(JSON.stringify(res, null, 2) + '\n')
      return
    }
    process.stdout.write(`cache: ${mib(res.usedBytes)} of ${mib(res.maxBytes)}, ${res.chunks} chunks; providers: ${res.providers.join(', ') || 'none'}\n`)
    printRows(res.images, ['name', 'arch', 'diskBytes', 'lastUsed', 'path'], false)
  })

  catalog.command('gc').description('garbage-collect catalog storage (packs, chunks and manifests no version uses, older than the grace period) and holder records of hosts gone or versions deleted')
    .option('--provider <kind>', 'only this provider: folder, s3, azure or artifactory (default every one the node has)')
    .option('--dry-run', 'list what would go, remove nothing')
    .option('--grace <minutes>', 'keep what was written less than this many minutes ago (default 1440: a push writes its packs before its version)', (v: string) => Number.parseInt(v, 10))
    .option('--forget-orphans', 'also remove version documents in storage that no catalog record names')
    .action(async (opts: { provider?: string, dryRun?: boolean, grace?: number, forgetOrphans?: boolean }, cmd: Command) => {
      if (opts.grace != null && (!Number.isSafeInteger(opts.grace) || opts.grace < 0)) throw new CliError(`--grace must be a whole number of minutes (0 or more), got ${String(opts.grace)}`)
      const res = await (await client(cmd)).request<GcResult>('POST', '/api/v1/catalog/gc', {
        dryRun: opts.dryRun === true, ...(opts.provider != null ? { provider: opts.provider } : {}), ...(opts.grace != null ? { graceMinutes: opts.grace } : {}), ...(opts.forgetOrphans === true ? { forgetOrphans: true } : {})
      })
      if (json(cmd)) {
        process.stdout.write(JSON.stringify(res, null, 2) + '\n')
        return
      }
      for (const p of res.providers) {
        const gone = p.items.filter(i => i.action === 'removed' || i.action === 'would-remove')
        process.stdout.write(`${p.provider}: ${res.dryRun ? 'would remove' : 'removed'} ${gone.length} objects, ${mib(p.bytes)} (live: ${p.live.versions} versions, ${p.live.manifests} manifests, ${p.live.packs} packs, ${mib(p.live.packBytes)}; grace ${p.graceMinutes} min)\n`)
        if (p.pushes.length > 0) process.stdout.write(`  ${p.pushes.length} push(es) under way: no pack removed (${p.pushes.map(l => `${String(l.image ?? '?')}:${String(l.version ?? '?')}`).join(', ')}); run again later\n`)
        if (p.missingManifests.length > 0) process.stdout.write(`  live versions whose manifest is missing from storage: ${p.missingManifests.join(', ')}\n`)
        printRows(p.items.map(i => ({ action: i.action, kind: i.kind, key: i.key, bytes: i.bytes, age: i.ageMinutes != null ? `${i.ageMinutes} min` : '' })), ['action', 'kind', 'key', 'bytes', 'age'], false)
      }
      if (res.holders.length > 0) {
        process.stdout.write(`holder records ${res.dryRun ? 'that would go' : 'removed'}: ${res.holders.length}\n`)
        printRows(res.holders.map(h => ({ host: h.host ?? h.peerId, manifest: h.manifest.slice(0, 12), state: h.state, why: h.why })), ['host', 'manifest', 'state', 'why'], false)
      }
    })

  catalog.command('jobs').description('pushes, pulls and imports on this node').action(async (_o, cmd: Command) => {
    const res = await (await client(cmd)).request<{ items: Job[] }>('GET', '/api/v1/catalog/jobs')
    printRows(res.items.map(j => ({ id: j.id, kind: j.kind, ref: j.ref, state: j.state, progress: describe(j.progress), error: j.error?.message ?? '' })), ['id', 'kind', 'ref', 'state', 'progress', 'error'], json(cmd), res.items)
  })

  return [catalog]
}

/** Polls a job to its end, drawing a progress bar for people; a failed job becomes a CliError. */
async function follow (api: ApiClient, job: Job, label: string, quiet: boolean): Promise<Job> {
  // Loaded here, not at start-up: a long-running node never needs it.
  const { default: ora } = await import('ora')
  const spinner = quiet ? undefined : ora({ text: `${label}: starting`, stream: process.stderr }).start()
  let current = job
  // Bounded by the job itself: it ends (done or failed) or the node goes away (request fails).
  for (let i = 0; current.state === 'running' && i < 10_000_000; i++) {
    await new Promise(resolve => setTimeout(resolve, POLL_MS))
    current = await api.request<Job>('GET', `/api/v1/catalog/jobs/${encodeURIComponent(job.id)}`)
    if (spinner != null) spinner.text = `${label}: ${describe(current.progress)}`
  }
  if (current.state === 'failed') {
    spinner?.fail(`${label}: failed`)
    throw new CliError(`${label} failed: ${current.error?.message ?? 'no reason given'}`)
  }
  spinner?.succeed(`${label}: done`)
  return current
}

/** `[#####-----]  45% 120/260 MiB, chunks 30/70 (12 cached), 80 MiB from storage, 40 MiB from peers`. */
export function describe (p: Progress): string {
  if (p.packs != null) return `${p.phase}: pack ${p.packs.done + 1}${p.packs.total > 0 ? `/${p.packs.total}` : ''} ${p.packs.current ?? ''} ${p.packs.step ?? ''}`.trim()
  if (p.bytesTotal === 0) return p.phase
  const ratio = Math.min(1, p.bytesDone / p.bytesTotal)
  const width = 24
  const bar = '#'.repeat(Math.round(ratio * width)).padEnd(width, '-')
  const moved = p.kind === 'push'
    ? `${mib(p.bytesFromProvider)} uploaded`
    : `${mib(p.bytesFromProvider)} from storage, ${mib(p.bytesFromPeers)} from peers`
  return `${p.phase} [${bar}] ${(ratio * 100).toFixed(0).padStart(3)}% ${mib(p.bytesDone)}/${mib(p.bytesTotal)}, chunks ${p.chunksDone}/${p.chunksTotal} (${p.chunksReused} ${p.kind === 'push' ? 'already stored' : 'cached'}), ${moved}${p.corruptChunks > 0 ? `, ${p.corruptChunks} corrupt refetched` : ''}`
}

function splitRef (ref: string): [string, string | undefined] {
  const i = ref.indexOf(':')
  return i === -1 ? [ref, undefined] : [ref.slice(0, i), ref.slice(i + 1)]
}

function pairs (list: string[] | undefined): Record<string, string> | undefined {
  if (list == null) return undefined
  return Object.fromEntries(list.map(pair => {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new CliError(`"${pair}" must be key=value`, 2)
    return [pair.slice(0, eq), pair.slice(eq + 1)]
  }))
}

function mib (bytes: number): string {
  return bytes >= 1073741824 ? `${(bytes / 1073741824).toFixed(1)} GiB` : `${(bytes / 1048576).toFixed(1)} MiB`
}
