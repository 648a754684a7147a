import type { ApiComponents, CatalogApi } from '../components.ts'
import type { RouteDef, RouteRequest } from '../route.ts'
import type { CatalogJob, CatalogUser } from '../../catalog/index.ts'
import { missingClaims } from '../../catalog/index.ts'
import { CatalogUnavailableError } from '../errors.ts'
import { Empty, listOf } from '../schemas.ts'
import {
  ArchQuery, CacheSchema, CatalogEntrySchema, CatalogIdParams, CatalogImageSchema, CatalogJobParams, CatalogTagParams, CatalogVersionParams,
  CatalogWaitQuery, GcRequest, GcSchema, ImportRequest, JobSchema, PrefetchRequest, PrefetchSchema, PruneSchema, PullRequest, PushRequest, RestoreRequest, RevokeRequest,
  TagRequest, UpdateImage
} from '../catalog-schemas.ts'

/** The caller as the catalog's claims check sees it. */
export function catalogUser (principal: RouteRequest['principal']): CatalogUser {
  return { subject: principal.subject, claims: principal.claims, roles: principal.roles }
}

/**
 * /api/v1/catalog: versioned images in storage providers, their metadata (cluster-wide), pushes
 * and pulls as jobs on the node asked (202 and a job to poll, or the outcome with ?wait=true).
 */
export function catalogRoutes ({ catalog }: ApiComponents): RouteDef[] {
  const api = (): CatalogApi => {
    if (catalog == null) throw new CatalogUnavailableError('this node runs without a catalog; start it with corral node (catalog.* in its config)')
    return catalog
  }
  /** 202 with the job, or with ?wait=true the finished job (a failure answers as its error). */
  const answer = async (job: CatalogJob, wait: boolean, ctx: RouteRequest['ctx'], signal: AbortSignal): Promise<{ status: number, body: CatalogJob }> => {
    ctx.set('location', `/api/v1/catalog/jobs/${job.id}`)
    if (!wait) return { status: 202, body: job }
    return { status: 200, body: await api().service.waitForJob(job.id, { signal, rethrow: true }) }
  }
  const closed = (ctx: RouteRequest['ctx']): AbortSignal => {
    const abort = new AbortController()
    ctx.req.once('close', () => { if (!ctx.res.writableEnded) abort.abort() })
    return abort.signal
  }
  return [
    {
      method: 'get', path: '/api/v1/catalog', claim: 'catalog:read', tag: 'catalog', summary: 'List catalog images with their versions and tags',
      success: { status: 200, schema: listOf(CatalogEntrySchema), description: 'every image of the cluster\'s catalog; usable says whether the caller may use it' },
      handler: ({ principal }) => {
        const user = catalogUser(principal)
        return { body: { items: api().service.list().map(e => ({ ...e, usable: missingClaims(user, e).length === 0 && e.revoked == null })) } }
      }
    },
    {
      method: 'get', path: '/api/v1/catalog/jobs', claim: 'catalog:read', tag: 'catalog', summary: 'Pushes and pulls run by this node, newest first',
      success: { status: 200, schema: listOf(JobSchema), description: 'jobs kept in this node\'s memory' },
      handler: () => ({ body: { items: api().service.listJobs() } })
    },
    {
      method: 'get', path: '/api/v1/catalog/jobs/:job', claim: 'catalog:read', tag: 'catalog', summary: 'A push or pull job with its progress',
      params: CatalogJobParams, success: { status: 200, schema: JobSchema, description: 'the job' },
      handler: ({ params }) => ({ body: api().service.job(params.job) })
    },
    {
      method: 'get', path: '/api/v1/catalog/cache', claim: 'catalog:read', tag: 'catalog', summary: 'This node\'s image cache: size, limit and images',
      success: { status: 200, schema: CacheSchema, description: 'what the node holds' },
      handler: () => {
        const s = api().service
        return {
          body: {
            usedBytes: s.cache.usedBytes(), maxBytes: s.cache.maxBytes, chunks: s.store.count(), chunkBytes: s.store.totalBytes(),
            images: s.cache.list().map(i => ({ name: i.name, arch: i.version.arch, path: i.path, diskBytes: i.diskBytes, unpackedAt: i.unpackedAt, lastUsed: new Date(i.lastUsed).toISOString() })),
            providers: s.providerNames(),
            metrics: s.metrics()
          }
        }
      }
    },
    {
      method: 'post', path: '/api/v1/catalog/cache/prune', claim: 'catalog:write', tag: 'catalog', summary: 'Empty this node\'s cache of every chunk and image no VM uses',
      body: Empty, success: { status: 200, schema: PruneSchema, description: 'what was evicted' },
      handler: async () => ({ body: await api().service.pruneCache() })
    },
    {
      method: 'post', path: '/api/v1/catalog/gc', claim: 'catalog:admin', tag: 'catalog',
      summary: 'Garbage-collect catalog storage (packs, chunks and manifests no version uses, older than the grace period) and holder records of hosts gone or versions deleted; dryRun lists only',
      body: GcRequest, success: { status: 200, schema: GcSchema, description: 'every unreferenced object with what was (or would be) done with it, per provider, and the holder records removed' },
      handler: async ({ body }) => {
        const dryRun = body.dryRun === true
        const providers = await api().service.collectGarbage({ provider: body.provider, dryRun, graceMs: body.graceMinutes != null ? body.graceMinutes * 60_000 : undefined, forgetOrphans: body.forgetOrphans })
        const holders = await api().collectHolders?.(dryRun) ?? []
        return { body: { dryRun, providers, holders } }
      }
    },
    {
      method: 'post', path: '/api/v1/catalog/push', claim: 'catalog:write', tag: 'catalog',
      summary: 'Push a bundle folder on this node to a storage provider as a new version',
      body: PushRequest, query: CatalogWaitQuery,
      success: { status: 202, schema: JobSchema, description: 'the push job (Location: its URL); with ?wait=true 200 and the finished job' },
      handler: async ({ body, query, principal, ctx }) => {
        const { id, os, defaultCpus, defaultMemoryMiB, diskMiB, ...rest } = body
        const job = api().service.startPush({ ...rest, image: id, guest: { os, defaultCpus, defaultMemoryMiB, diskMiB } }, principal.subject)
        return await answer(job, query.wait === 'true', ctx, closed(ctx))
      }
    },
    {
      method: 'post', path: '/api/v1/catalog/import', claim: 'catalog:write', tag: 'catalog',
      summary: 'Import Parallels DevOps Service catalog packs (.pdpack + .meta) from a provider',
      body: ImportRequest, query: CatalogWaitQuery,
      success: { status: 202, schema: JobSchema, description: 'the import job; with ?wait=true 200 and the finished job' },
      handler: async ({ body, query, principal, ctx }) => {
        const job = api().service.startImport({ provider: body.provider, prefix: body.prefix ?? '', to: body.to, only: body.only }, principal.subject)
        return await answer(job, query.wait === 'true', ctx, closed(ctx))
      }
    },
    {
      method: 'get', path: '/api/v1/catalog/:id', claim: 'catalog:read', tag: 'catalog', summary: 'One catalog image with its versions',
      params: CatalogIdParams, success: { status: 200, schema: CatalogEntrySchema, description: 'the image' },
      handler: ({ params, principal }) => {
        const entry = api().service.show(params.id)
        return { body: { ...entry, usable: missingClaims(catalogUser(principal), entry).length === 0 && entry.revoked == null } }
      }
    },
    {
      method: 'put', path: '/api/v1/catalog/:id', claim: 'catalog:write', tag: 'catalog', summary: 'Change an image\'s description, required claims or minimum host (or, with version, that version\'s minimum host)',
      params: CatalogIdParams, body: UpdateImage, success: { status: 200, schema: CatalogImageSchema, description: 'the image' },
      handler: async ({ params, body }) => ({ body: await api().service.update(params.id, body) })
    },
    {
      method: 'delete', path: '/api/v1/catalog/:id', claim: 'catalog:write', tag: 'catalog', summary: 'Remove an image and its versions from the catalog (stored chunks stay)',
      params: CatalogIdParams, success: { status: 204, description: 'removed' },
      handler: async ({ params }) => { api().service.show(params.id); await api().service.remove(params.id); return { status: 204 } }
    },
    {
      method: 'delete', path: '/api/v1/catalog/:id/versions/:version', claim: 'catalog:write', tag: 'catalog', summary: 'Remove one version (all arches unless ?arch=)',
      params: CatalogVersionParams, query: ArchQuery, success: { status: 204, description: 'removed' },
      handler: async ({ params, query }) => { await api().service.remove(params.id, params.version, query.arch); return { status: 204 } }
    },
    {
      method: 'post', path: '/api/v1/catalog/:id/tags', claim: 'catalog:write', tag: 'catalog', summary: 'Point a tag (latest, stable...) at a version, creating or moving it',
      params: CatalogIdParams, body: TagRequest, success: { status: 200, schema: CatalogImageSchema, description: 'the image' },
      handler: async ({ params, body }) => ({ body: await api().service.setTag(params.id, body.tag, body.version) })
    },
    {
      method: 'delete', path: '/api/v1/catalog/:id/tags/:tag', claim: 'catalog:write', tag: 'catalog', summary: 'Remove a tag',
      params: CatalogTagParams, success: { status: 200, schema: CatalogImageSchema, description: 'the image' },
      handler: async ({ params }) => ({ body: await api().service.setTag(params.id, params.tag, null) })
    },
    {
      method: 'post', path: '/api/v1/catalog/:id/revoke', claim: 'catalog:write', tag: 'catalog',
      summary: 'Revoke (taint) an image or one version: no new pulls or VMs from it',
      params: CatalogIdParams, body: RevokeRequest, success: { status: 200, schema: CatalogEntrySchema, description: 'the image' },
      handler: async ({ params, body, principal }) => ({ body: await api().service.setRevoked(params.id, { version: body.version, arch: body.arch }, body.reason, principal.subject) })
    },
    {
      method: 'post', path: '/api/v1/catalog/:id/restore', claim: 'catalog:write', tag: 'catalog', summary: 'Lift a revocation',
      params: CatalogIdParams, body: RestoreRequest, success: { status: 200, schema: CatalogEntrySchema, description: 'the image' },
      handler: async ({ params, body, principal }) => ({ body: await api().service.setRevoked(params.id, { version: body.version, arch: body.arch }, null, principal.subject) })
    },
    {
      method: 'post', path: '/api/v1/catalog/:id/pull', claim: 'catalog:read', tag: 'catalog',
      summary: 'Pull an image into this node\'s cache (the caller needs the claims it requires)',
      params: CatalogIdParams, body: PullRequest, query: CatalogWaitQuery,
      success: { status: 202, schema: JobSchema, description: 'the pull job; with ?wait=true 200 and the finished job' },
      handler: async ({ params, body, query, principal, ctx }) => {
        const ref = body.version != null ? `${params.id}:${body.version as string}` : params.id
        const job = api().service.startPull(ref, catalogUser(principal), body.arch)
        return await answer(job, query.wait === 'true', ctx, closed(ctx))
      }
    },
    {
      method: 'post', path: '/api/v1/catalog/:id/prefetch', claim: 'catalog:write', tag: 'catalog',
      summary: 'Warm the caches of the alive hosts matching labels: each pulls the image now',
      params: CatalogIdParams, body: PrefetchRequest, success: { status: 202, schema: PrefetchSchema, description: 'what each host started' },
      handler: async ({ params, body, principal }) => {
        const c = api()
        c.service.show(params.id)
        const ref = body.version != null ? `${params.id}:${body.version as string}` : params.id
        // Checked here, with the caller's claims: the hosts pull on the cluster's behalf.
        const pinned = c.service.imageForVm(ref, catalogUser(principal), body.arch)
        if (c.prefetch == null) throw new CatalogUnavailableError('prefetch needs the mesh, which this node does not run')
        return { status: 202, body: await c.prefetch(pinned, { hostLabels: body.hostLabels, arch: body.arch }, catalogUser(principal)) }
      }
    }
  ]
}
