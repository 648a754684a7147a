/**
 * Peer-to-peer chunk distribution over the mesh, so many hosts pulling one new image read it from
 * the bucket about once.
 *
 * Every pull announces itself in the cluster-wide `catalog-holders` records (pulling, then
 * complete). The unit of transfer is a segment (neighbouring chunks of one pack, about 8 MiB). A
 * node looks for each segment's chunks it lacks:
 *   1. at a peer that holds the whole image (complete), chosen per segment so the load spreads;
 *   2. at the segment's owner among the nodes pulling the same image now (rendezvous hashing over
 *      that swarm, so every node agrees without talking): the owner reads it from storage once, as
 *      one ranged read, on demand, and serves it to the others;
 *   3. at the provider, only once peers had two tries.
 * Chunks travel over `/corral/catalog-chunks/1.0.0` byte streams in stored form (compressed from
 * a chunk store, uncompressed from an unpacked image); the receiver checks each against its id,
 * so a peer can never hand over bad bytes.
 *
 * Prefetch sends `catalog.prefetch` to every alive host matching labels, with the whole swarm
 * named, so they split the provider reads from the first segment on.
 */
import { createHash } from 'node:crypto'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { MeshNode } from '../node/index.ts'
import type { CatalogService, PeerRouting } from './catalog-service.ts'
import type { BlobSource, Segment } from './transfer.ts'
import { ChunkNotFoundError } from './errors.ts'
import type { CatalogUser, PrefetchResult } from './types.ts'

export const CHUNK_PROTOCOL = '/corral/catalog-chunks/1.0.0'
export const HOLDERS = 'catalog-holders'
const PREFETCH_METHOD = 'catalog.prefetch'

const MAX_REQUEST_BYTES = 64 * 1024
/** One request asks for the chunks of one segment (about 8 MiB), never more than this. */
const MAX_IDS = 1024
const MAX_RESPONSE_BYTES = 256 * 1024 * 1024
const STATUS_OK = 0
const STATUS_NOT_FOUND = 1
const STATUS_ERROR = 2

export interface HolderRecord {
  manifest: string
  peerId: string
  state: 'pulling' | 'complete'
  at: number
}

/** A holder record garbage collection found useless. */
export interface HolderGarbage {
  manifest: string
  peerId: string
  host?: string
  state: HolderRecord['state']
  why: string
  removed: boolean
}

export interface CatalogPeersComponents {
  mesh: Pick<MeshNode, 'self' | 'members' | 'records' | 'handleStream' | 'unhandleStream' | 'openStream' | 'handleRpc' | 'unhandleRpc' | 'request'>
  service: CatalogService
  logger: Logger
  clock: () => number
  /** Alive hosts with their labels and arch, for prefetch. */
  hosts: () => Array<{ peerId: string, name: string, labels: Record<string, string>, arch?: string }>
}

export interface CatalogPeersInit {
  /** Longest wait for a segment from a peer, including its own fetch from the provider. */
  fetchTimeoutMs?: number
  /**
   * How long a pull that was not told its swarm waits after announcing itself, so that nodes
   * starting the same pull at the same moment see each other and split the work.
   */
  gatherMs?: number
  /** Serve and fetch chunks between nodes (catalog.peers); prefetch works either way. */
  shareChunks?: boolean
}

export class CatalogPeers implements PeerRouting {
  private readonly c: CatalogPeersComponents
  private readonly fetchTimeoutMs: number
  private readonly gatherMs: number
  private readonly shareChunks: boolean
  /** Swarms a prefetch named, by manifest. */
  private readonly hints = new Map<string, Set<string>>()
  private readonly abort = new AbortController()
  private started = false
  private readonly onChanged = (event: Event): void => {
    if ((event as CustomEvent<{ reason: string }>).detail.reason === 'evicted') void this.withdrawStale()
  }

  constructor (components: CatalogPeersComponents, init: CatalogPeersInit = {}) {
    this.c = components
    this.fetchTimeoutMs = init.fetchTimeoutMs ?? 120_000
    this.gatherMs = init.gatherMs ?? 500
    this.shareChunks = init.shareChunks ?? true
  }

  private get self (): string {
    return this.c.mesh.self().peerId
  }

  async start (): Promise<void> {
    if (this.started) return
    this.started = true
    this.c.mesh.handleRpc<{ ref: string, arch?: string, swarm?: string[] }, PrefetchResult['hosts'][number]>(PREFETCH_METHOD, async body => await this.prefetchHere(body))
    if (!this.shareChunks) return
    await this.c.mesh.handleStream(CHUNK_PROTOCOL, (stream, peerId) => { void this.serve(stream, peerId) }, { maxStreams: 256 })
    this.c.service.setPeerRouting(this)
    this.c.service.addEventListener('changed', this.onChanged)
    // Announcements this node left behind when it stopped (or crashed) mid-pull.
    for (const r of this.c.mesh.records.list<HolderRecord>(HOLDERS)) {
      if (r.value.peerId === this.self && r.value.state === 'pulling') await this.c.mesh.records.delete(HOLDERS, r.id).catch(() => false)
    }
    await this.withdrawStale()
  }

  /** Withdraws this node's `complete` announcements for images whose chunks it no longer all holds. */
  async withdrawStale (): Promise<void> {
    const service = this.c.service
    for (const r of this.c.mesh.records.list<HolderRecord>(HOLDERS)) {
      if (r.value.peerId !== this.self || r.value.state !== 'complete') continue
      if (await service.holds(r.value.manifest)) continue
      await this.c.mesh.records.delete(HOLDERS, r.id).catch(() => false)
    }
  }

  /**
   * Holder records nobody can use: of hosts that are gone (dead, or no longer members), of
   * manifests no catalog version names any more, and this node's own for images it no longer
   * holds. Removed unless dryRun; the list says which and why.
   */
  async collectHolders (dryRun: boolean): Promise<HolderGarbage[]> {
    const members = new Map(this.c.mesh.members().map(m => [m.peerId, m]))
    const manifests = new Set(this.c.service.records.allVersions().map(v => v.manifest))
    const out: HolderGarbage[] = []
    for (const r of this.c.mesh.records.list<HolderRecord>(HOLDERS)) {
      const h = r.value
      const member = members.get(h.peerId)
      let why: string | undefined
      if (h.peerId !== this.self && member == null) why = 'host is no longer a member of the cluster'
      else if (h.peerId !== this.self && member?.status === 'dead') why = 'host is dead'
      else if (!manifests.has(h.manifest)) why = 'no catalog version uses this manifest any more'
      else if (h.peerId === this.self && h.state === 'complete' && !await this.c.service.holds(h.manifest)) why = 'this host no longer holds the image (evicted)'
      if (why == null) continue
      out.push({ manifest: h.manifest, peerId: h.peerId, host: member?.nodeName ?? (h.peerId === this.self ? this.c.mesh.self().nodeName : undefined), state: h.state, why, removed: !dryRun })
      if (!dryRun) await this.c.mesh.records.delete(HOLDERS, r.id).catch(() => false)
    }
    return out
  }

  async stop (): Promise<void> {
    if (!this.started) return
    this.started = false
    this.abort.abort()
    this.c.service.setPeerRouting(undefined)
    this.c.service.removeEventListener('changed', this.onChanged)
    this.c.mesh.unhandleRpc(PREFETCH_METHOD)
    if (this.shareChunks) await this.c.mesh.unhandleStream(CHUNK_PROTOCOL).catch(() => undefined)
  }

  // ---- routing (PeerRouting) ----

  async begin (manifest: string, swarm?: string[]): Promise<void> {
    if (swarm != null) this.hints.set(manifest, new Set(swarm))
    await this.announce(manifest, 'pulling')
    const others = this.alivePeers().size > 0
    if (swarm == null && others && this.gatherMs > 0) await sleep(this.gatherMs, this.abort.signal)
  }

  async end (manifest: string, ok: boolean): Promise<void> {
    this.hints.delete(manifest)
    if (ok) await this.announce(manifest, 'complete')
    else await this.c.mesh.records.delete(HOLDERS, holderId(manifest, this.self)).catch(() => false)
  }

  sources (segment: Segment, round: number, manifest: string): BlobSource[] {
    if (round >= 2) return []
    const { holders, pulling } = this.swarm(manifest)
    const out: BlobSource[] = []
    // Holders first: they have it. Round 1 asks a different one than round 0 did.
    const rankedHolders = rank(holders, segment.key)
    const holder = rankedHolders[Math.min(round, rankedHolders.length - 1)]
    if (holder != null) out.push(this.peerSource(holder, manifest, false))
    if (round <= 1) {
      const owner = rank([...pulling], segment.key)[0]
      if (owner != null && owner !== this.self && owner !== holder) out.push(this.peerSource(owner, manifest, true))
    }
    return out
  }

  /** No other alive host holds this manifest or is pulling it now (that this node knows of). */
  alone (manifest: string): boolean {
    const { holders, pulling } = this.swarm(manifest)
    return holders.length === 0 && pulling.size <= 1
  }

  /** Alive hosts that hold the manifest, and those pulling it now (this node included). */
  private swarm (manifest: string): { holders: string[], pulling: Set<string> } {
    const alive = this.alivePeers()
    const holders: string[] = []
    const pulling = new Set<string>([this.self, ...[...(this.hints.get(manifest) ?? [])].filter(p => alive.has(p))])
    for (const r of this.c.mesh.records.list<HolderRecord>(HOLDERS)) {
      const h = r.value
      if (h.manifest !== manifest || h.peerId === this.self || !alive.has(h.peerId)) continue
      if (h.state === 'complete') holders.push(h.peerId)
      else pulling.add(h.peerId)
    }
    return { holders, pulling }
  }

  private alivePeers (): Set<string> {
    return new Set(this.c.mesh.members().filter(m => !m.self && m.status === 'alive').map(m => m.peerId))
  }

  private async announce (manifest: string, state: HolderRecord['state']): Promise<void> {
    const record: HolderRecord = { manifest, peerId: this.self, state, at: this.c.clock() }
    await this.c.mesh.records.put(HOLDERS, holderId(manifest, this.self), record).catch((err: Error) => {
      this.c.logger.warn({ err: err.message }, 'could not announce a catalog pull to the cluster')
    })
  }

  private peerSource (peerId: string, manifest: string, fetch: boolean): BlobSource {
    return {
      kind: 'peer',
      label: `peer ${peerId}${fetch ? ' (owner)' : ''}`,
      owner: fetch,
      fetch: async (ids, signal) => await this.fetchFromPeer(peerId, { ids, manifest, fetch }, signal)
    }
  }

  // ---- the wire ----

  /**
   * Chunks from a peer: write the request, half-close, then read one answer per chunk asked
   * (status byte, 4-byte length, bytes). What the peer lacks is left out of the result.
   */
  async fetchFromPeer (peerId: string, request: { ids: string[], manifest: string, fetch: boolean }, signal: AbortSignal): Promise<Map<string, Buffer>> {
    const bounded = AbortSignal.any([signal, this.abort.signal, AbortSignal.timeout(this.fetchTimeoutMs)])
    const stream = await this.c.mesh.openStream(peerId, CHUNK_PROTOCOL, { signal: bounded })
    // A peer that goes away mid-answer errors the stream; readAll reports it, this keeps it handled.
    stream.on('error', () => {})
    try {
      const body = Buffer.from(JSON.stringify({ op: 'chunks', ...request }))
      const head = Buffer.alloc(4)
      head.writeUInt32BE(body.length)
      stream.end(Buffer.concat([head, body]))
      const reply = await readAll(stream, MAX_RESPONSE_BYTES, bounded)
      const out = new Map<string, Buffer>()
      let off = 0
      for (const id of request.ids) {
        if (reply.length - off < 5) break
        const status = reply[off]
        const length = reply.readUInt32BE(off + 1)
        const payload = reply.subarray(off + 5, off + 5 + length)
        if (payload.length !== length) break
        if (status === STATUS_OK) out.set(id, payload)
        off += 5 + length
      }
      return out
    } finally {
      stream.destroy()
    }
  }

  private async serve (stream: Duplex, peerId: string): Promise<void> {
    // The asking peer may vanish at any time (killed, partitioned): that must never throw here.
    stream.on('error', (err: Error) => { this.c.logger.debug({ peer: peerId, err: err.message }, 'a chunk stream to a peer broke') })
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.fetchTimeoutMs)])
    const frame = (status: number, payload: Buffer): Buffer => {
      const head = Buffer.alloc(5)
      head[0] = status
      head.writeUInt32BE(payload.length, 1)
      return Buffer.concat([head, payload])
    }
    try {
      const raw = await readAll(stream, MAX_REQUEST_BYTES, signal)
      const length = raw.length >= 4 ? raw.readUInt32BE(0) : -1
      const request = length > 0 && raw.length >= 4 + length ? JSON.parse(raw.subarray(4, 4 + length).toString('utf8')) as { op?: string, ids?: unknown, manifest?: unknown, fetch?: unknown } : undefined
      const ids = request?.ids
      if (request?.op !== 'chunks' || !Array.isArray(ids) || ids.length > MAX_IDS || !ids.every(id => typeof id === 'string' && /^[0-9a-f]{64}$/.test(id)) || typeof request.manifest !== 'string') {
        stream.end(frame(STATUS_ERROR, Buffer.from('malformed request')))
        return
      }
      const got = await this.c.service.blobsForPeer(ids as string[], request.manifest, request.fetch === true, signal)
      let sent = 0
      for (const id of ids as string[]) {
        const stored = got.get(id)
        if (stored != null) sent += stored.length
        const piece = stored != null ? frame(STATUS_OK, stored) : frame(STATUS_NOT_FOUND, Buffer.alloc(0))
        if (stream.destroyed) return
        if (!stream.write(piece)) await drained(stream)
      }
      stream.end()
      this.c.service.countServed(sent)
    } catch (err) {
      this.c.logger.debug({ peer: peerId, err: (err as Error).message }, 'could not serve chunks to a peer')
      if (!stream.destroyed && stream.writable) stream.end(frame(STATUS_ERROR, Buffer.from((err as Error).message.slice(0, 500))))
    }
  }

  // ---- prefetch ----

  /** Starts a pull of `ref` (already resolved and authorised) on every alive host matching labels. */
  async prefetch (ref: string, options: { hostLabels?: Record<string, string>, arch?: string }, _user: CatalogUser): Promise<PrefetchResult> {
    const wanted = Object.entries(options.hostLabels ?? {})
    const hosts = this.c.hosts().filter(h => wanted.every(([k, v]) => h.labels[k] === v) && (options.arch == null || h.arch == null || h.arch === options.arch))
    const swarm = hosts.map(h => h.peerId)
    const results = await Promise.all(hosts.map(async h => {
      try {
        const r = await this.c.mesh.request<PrefetchResult['hosts'][number]>(h.peerId, PREFETCH_METHOD, { ref, arch: options.arch, swarm }, { timeoutMs: 30_000 })
        return { ...r, host: h.name, peerId: h.peerId }
      } catch (err) {
        return { host: h.name, peerId: h.peerId, status: 'failed' as const, error: (err as Error).message }
      }
    }))
    return { ref, hosts: results }
  }

  private async prefetchHere (body: { ref: string, arch?: string, swarm?: string[] }): Promise<PrefetchResult['hosts'][number]> {
    const self = this.c.mesh.self()
    const service = this.c.service
    const { version } = await service.resolveFor(body.ref, undefined, body.arch)
    if (service.cache.get(version.image, version.version, version.arch) != null) return { host: self.nodeName, peerId: self.peerId, status: 'cached' }
    const job = service.startPullFor(version, 'prefetch', body.swarm)
    return { host: self.nodeName, peerId: self.peerId, status: 'started', job: job.id }
  }
}

function holderId (manifest: string, peerId: string): string {
  return `${manifest}:${peerId}`
}

/** Peers ordered by rendezvous score for a segment: every node computes the same order. */
function rank (peers: string[], id: string): string[] {
  return peers
    .map(p => ({ p, score: createHash('sha256').update(p).update(id).digest().readUIntBE(0, 6) }))
    .sort((a, b) => b.score - a.score || (a.p < b.p ? -1 : 1))
    .map(x => x.p)
}

async function readAll (stream: Duplex, max: number, signal: AbortSignal): Promise<Buffer> {
  const parts: Buffer[] = []
  let total = 0
  const onAbort = (): void => { stream.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted')) }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    for await (const piece of stream as AsyncIterable<Buffer>) {
      total += piece.length
      if (total > max) throw new Error(`more than ${max} bytes on a catalog chunk stream`)
      parts.push(piece)
    }
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
  return Buffer.concat(parts)
}

/** Resolves when a stream can take more, or when it closes (the next write then fails or is skipped). */
async function drained (stream: Duplex): Promise<void> {
  await new Promise<void>(resolve => {
    const done = (): void => {
      stream.off('drain', done)
      stream.off('close', done)
      resolve()
    }
    stream.once('drain', done)
    stream.once('close', done)
  })
}

async function sleep (ms: number, signal: AbortSignal): Promise<void> {
  await new Promise<void>(resolve => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
  })
}
