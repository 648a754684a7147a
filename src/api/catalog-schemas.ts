import { Type } from '@sinclair/typebox'

/** Request and response shapes of /api/v1/catalog (validated and published in the OpenAPI document). */
const ImageId = Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$', description: 'catalog image id, e.g. macos-15-xcode-16' })
const Version = Type.String({ minLength: 1, maxLength: 40, pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]*$', description: 'a version or tag, e.g. 16.1 or latest' })
const Arch = Type.String({ minLength: 1, maxLength: 16, description: 'x86_64 (amd64) or arm64 (aarch64)' })
const Claims = Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32, description: 'a user needs each, as a corral claim or a role of that name' })
const Labels = Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,63}$' }), Type.String({ maxLength: 255 }), { maxProperties: 32, additionalProperties: false })
const MinHost = Type.Object({
  cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 4096 })),
  memoryMiB: Type.Optional(Type.Integer({ minimum: 64, maximum: 4_194_304 })),
  diskMiB: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_073_741_824 }))
}, { additionalProperties: false, description: 'the least host a VM from the image needs' })
const Provider = Type.Union([Type.Literal('folder'), Type.Literal('s3'), Type.Literal('azure'), Type.Literal('artifactory')])

export const CatalogIdParams = Type.Object({ id: ImageId })
export const CatalogTagParams = Type.Object({ id: ImageId, tag: Version })
export const CatalogVersionParams = Type.Object({ id: ImageId, version: Version })
export const CatalogJobParams = Type.Object({ job: Type.String({ minLength: 1, maxLength: 64 }) })
export const ArchQuery = Type.Object({ arch: Type.Optional(Arch) }, { additionalProperties: false })
export const CatalogWaitQuery = Type.Object({
  wait: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'answer once the transfer has finished' }))
}, { additionalProperties: false })

export const PushRequest = Type.Object({
  path: Type.String({ minLength: 1, maxLength: 4096, description: 'the bundle folder on the node that runs the push' }),
  id: ImageId,
  version: Version,
  arch: Type.Optional(Arch),
  provider: Type.Optional(Provider),
  tags: Type.Optional(Type.Array(Version, { maxItems: 16, description: 'tags to point at this version; default ["latest"]' })),
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  requiredClaims: Type.Optional(Claims),
  minHost: Type.Optional(MinHost),
  os: Type.Optional(Type.Union([Type.Literal('linux'), Type.Literal('macos'), Type.Literal('windows')])),
  defaultCpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 512 })),
  defaultMemoryMiB: Type.Optional(Type.Integer({ minimum: 16, maximum: 4_194_304 })),
  diskMiB: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_073_741_824 })),
  force: Type.Optional(Type.Boolean({ description: 'replace an existing version of that number' }))
}, { additionalProperties: false })

export const PullRequest = Type.Object({
  version: Type.Optional(Version),
  arch: Type.Optional(Arch)
}, { additionalProperties: false })

export const PrefetchRequest = Type.Object({
  version: Type.Optional(Version),
  arch: Type.Optional(Arch),
  hostLabels: Type.Optional(Labels)
}, { additionalProperties: false })

export const UpdateImage = Type.Object({
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  requiredClaims: Type.Optional(Claims),
  minHost: Type.Optional(MinHost),
  version: Type.Optional(Type.String({ minLength: 1, maxLength: 40, pattern: '^[A-Za-z0-9][A-Za-z0-9._+-]*$', description: 'set minHost on this version (every arch), which wins over the image\'s; VMs are never placed on a smaller host' }))
}, { additionalProperties: false })

export const TagRequest = Type.Object({ tag: Version, version: Version }, { additionalProperties: false })

export const RevokeRequest = Type.Object({
  version: Type.Optional(Version),
  arch: Type.Optional(Arch),
  reason: Type.String({ minLength: 1, maxLength: 500 })
}, { additionalProperties: false })

export const RestoreRequest = Type.Object({
  version: Type.Optional(Version),
  arch: Type.Optional(Arch)
}, { additionalProperties: false })

export const ImportRequest = Type.Object({
  provider: Provider,
  prefix: Type.Optional(Type.String({ maxLength: 1024, description: 'where the .pdpack files are, inside the provider' })),
  to: Type.Optional(Provider),
  only: Type.Optional(Type.Array(ImageId, { maxItems: 256, description: 'import only these catalog ids' }))
}, { additionalProperties: false })

export const CatalogVersionSchema = Type.Object({
  image: Type.String(), version: Type.String(), arch: Type.String(), manifest: Type.String(), provider: Type.String(),
  size: Type.Integer(), storedSize: Type.Integer(), chunks: Type.Integer(), guest: Type.Object({}, { additionalProperties: true }),
  createdBy: Type.String(), createdAt: Type.String()
}, { additionalProperties: true })

export const CatalogEntrySchema = Type.Object({
  id: Type.String(), description: Type.String(), tags: Type.Record(Type.String(), Type.String()), requiredClaims: Type.Array(Type.String()),
  createdBy: Type.String(), createdAt: Type.String(), updatedAt: Type.String(), versions: Type.Array(CatalogVersionSchema),
  usable: Type.Optional(Type.Boolean({ description: 'whether the caller holds the claims it requires' }))
}, { additionalProperties: true })

export const CatalogImageSchema = Type.Object({
  id: Type.String(), description: Type.String(), tags: Type.Record(Type.String(), Type.String()), requiredClaims: Type.Array(Type.String())
}, { additionalProperties: true })

export const JobSchema = Type.Object({
  id: Type.String(), kind: Type.String(), ref: Type.String(), by: Type.String(), state: Type.String(),
  progress: Type.Object({}, { additionalProperties: true }), startedAt: Type.String()
}, { additionalProperties: true })

export const CacheSchema = Type.Object({
  usedBytes: Type.Integer(), maxBytes: Type.Integer(), chunks: Type.Integer(), chunkBytes: Type.Integer(),
  images: Type.Array(Type.Object({}, { additionalProperties: true })),
  providers: Type.Array(Type.String()),
  metrics: Type.Object({}, { additionalProperties: true, description: 'bytes moved since the node started: from providers, from and to peers' })
})

export const PrefetchSchema = Type.Object({
  ref: Type.String(),
  hosts: Type.Array(Type.Object({ host: Type.String(), peerId: Type.String(), status: Type.String() }, { additionalProperties: true }))
})

export const PruneSchema = Type.Object({ evictedChunks: Type.Integer(), evictedImages: Type.Array(Type.String()) })

export const GcRequest = Type.Object({
  provider: Type.Optional(Provider),
  dryRun: Type.Optional(Type.Boolean({ description: 'list what would go, remove nothing' })),
  graceMinutes: Type.Optional(Type.Integer({ minimum: 0, maximum: 525_600, description: 'keep anything written less than this long ago (default 1440): a push writes its packs before its manifest and version' })),
  forgetOrphans: Type.Optional(Type.Boolean({ description: 'also remove version documents in storage that no catalog record names' }))
}, { additionalProperties: false })

const GarbageItemSchema = Type.Object({
  key: Type.String(),
  kind: Type.Union([Type.Literal('pack'), Type.Literal('chunk'), Type.Literal('manifest'), Type.Literal('version-doc')]),
  bytes: Type.Integer(),
  ageMinutes: Type.Optional(Type.Integer()),
  action: Type.Union([Type.Literal('removed'), Type.Literal('would-remove'), Type.Literal('kept-young'), Type.Literal('kept-push'), Type.Literal('kept-orphan')]),
  version: Type.Optional(Type.String())
})

export const GcSchema = Type.Object({
  dryRun: Type.Boolean(),
  providers: Type.Array(Type.Object({
    provider: Type.String(),
    dryRun: Type.Boolean(),
    graceMinutes: Type.Integer(),
    live: Type.Object({ versions: Type.Integer(), manifests: Type.Integer(), packs: Type.Integer(), packBytes: Type.Integer() }),
    items: Type.Array(GarbageItemSchema),
    bytes: Type.Integer({ description: 'bytes removed, or that would be' }),
    pushes: Type.Array(Type.Object({ id: Type.String() }, { additionalProperties: true }), { description: 'pushes under way: while one runs, no pack is removed' }),
    missingManifests: Type.Array(Type.String(), { description: 'live versions whose manifest is missing from storage' })
  })),
  holders: Type.Array(Type.Object({
    manifest: Type.String(), peerId: Type.String(), host: Type.Optional(Type.String()), state: Type.String(), why: Type.String(), removed: Type.Boolean()
  }), { description: 'catalog-holders records of hosts gone, deleted versions and evicted images' })
})
