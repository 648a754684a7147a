import { Type, type Static, type TSchema } from '@sinclair/typebox'

/** host:port, IPv4, a name, or [IPv6]. Port 0 asks the OS for a free one (tests). */
const HostPort = Type.String({ pattern: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]+):[0-9]{1,5}$', description: 'host:port, e.g. 127.0.0.1:8080' })
const Millis = Type.Integer({ minimum: 0, maximum: 3_600_000 })
const Labels = Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,63}$' }), Type.String({ maxLength: 255 }), { description: 'key=value pairs, e.g. rack=a,xcode=16' })

/** The node's whole configuration. config/default.yaml holds a value and a comment for every key. */
export const ConfigSchema = Type.Object({
  dataDir: Type.String({ minLength: 1 }),
  node: Type.Object({
    name: Type.String({ maxLength: 63, pattern: '^[A-Za-z0-9._-]*$' }),
    labels: Labels
  }, { additionalProperties: false }),
  api: Type.Object({
    addr: HostPort,
    maxBodyBytes: Type.Integer({ minimum: 1024, maximum: 1_073_741_824 })
  }, { additionalProperties: false }),
  cluster: Type.Object({
    key: Type.String(),
    joinToken: Type.String(),
    listen: Type.Array(Type.String({ pattern: '^/', description: 'a multiaddr such as /ip4/0.0.0.0/tcp/7946' }), { minItems: 1 }),
    bootstrap: Type.Array(Type.String({ pattern: '^/', description: 'a multiaddr such as /ip4/10.0.0.5/tcp/7946/p2p/12D3Koo...' })),
    mdns: Type.Boolean(),
    mdnsIntervalMs: Type.Integer({ minimum: 100, maximum: 600_000 }),
    heartbeatMs: Type.Integer({ minimum: 50, maximum: 60_000 }),
    suspectAfterMs: Type.Integer({ minimum: 100, maximum: 600_000 }),
    deadAfterMs: Type.Integer({ minimum: 200, maximum: 3_600_000 }),
    colocationWeight: Type.Number({ minimum: -100, maximum: 0 })
  }, { additionalProperties: false }),
  scheduler: Type.Object({
    policy: Type.Union([Type.Literal('binpack'), Type.Literal('spread')]),
    leaseMs: Type.Integer({ minimum: 200, maximum: 600_000 }),
    renewMs: Type.Integer({ minimum: 50, maximum: 300_000 }),
    resubmitMs: Type.Integer({ minimum: 50, maximum: 600_000 }),
    queueTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 604_800 })
  }, { additionalProperties: false }),
  driver: Type.Union([Type.Literal('auto'), Type.Literal('qemu'), Type.Literal('parallels'), Type.Literal('sim')]),
  auth: Type.Object({
    adminPassword: Type.String(),
    tokenTtlSeconds: Type.Integer({ minimum: 60, maximum: 31_536_000 }),
    lockout: Type.Object({
      maxFailures: Type.Integer({ minimum: 1, maximum: 1000 }),
      windowSeconds: Type.Integer({ minimum: 1, maximum: 86_400 }),
      lockSeconds: Type.Integer({ minimum: 1, maximum: 86_400 })
    }, { additionalProperties: false })
  }, { additionalProperties: false }),
  vm: Type.Object({
    execTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 86_400 }),
    maxExecTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 86_400 })
  }, { additionalProperties: false }),
  proxy: Type.Object({
    clusterDomain: Type.String({ maxLength: 200, pattern: '^([A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*)?$', description: 'a DNS domain such as vms.example.com, or empty' }),
    tcpPortRange: Type.Object({
      from: Type.Integer({ minimum: 1, maximum: 65535 }),
      to: Type.Integer({ minimum: 1, maximum: 65535 })
    }, { additionalProperties: false }),
    tcpListenHost: Type.String({ maxLength: 255 }),
    connectTimeoutMs: Type.Integer({ minimum: 100, maximum: 600_000 }),
    signedUrlMaxSeconds: Type.Integer({ minimum: 1, maximum: 86_400 }),
    directTunnel: Type.Boolean(),
    tunnelPort: Type.Integer({ minimum: 0, maximum: 65535 })
  }, { additionalProperties: false }),
  log: Type.Object({
    level: Type.Union(['trace', 'debug', 'info', 'warn', 'error', 'fatal'].map(l => Type.Literal(l))),
    format: Type.Union([Type.Literal('auto'), Type.Literal('json'), Type.Literal('pretty')])
  }, { additionalProperties: false }),
  sim: Type.Object({
    cpus: Type.Integer({ minimum: 1, maximum: 4096 }),
    memoryMiB: Type.Integer({ minimum: 256 }),
    diskMiB: Type.Integer({ minimum: 1024 }),
    arch: Type.Union([Type.Literal('x86_64'), Type.Literal('arm64')]),
    timings: Type.Object({
      createMs: Millis,
      startMs: Millis,
      stopMs: Millis,
      deleteMs: Millis,
      execMs: Millis
    }, { additionalProperties: false })
  }, { additionalProperties: false }),
  parallels: Type.Object({
    linkedClones: Type.Boolean(),
    vmDirectory: Type.String(),
    execAsCurrentUser: Type.Boolean(),
    stopTimeoutMs: Type.Integer({ minimum: 1000, maximum: 3_600_000 }),
    watchIntervalMs: Type.Integer({ minimum: 0, maximum: 3_600_000 })
  }, { additionalProperties: false }),
  qemu: Type.Object({
    accelerator: Type.Union([Type.Literal('auto'), Type.Literal('kvm'), Type.Literal('hvf'), Type.Literal('tcg')]),
    binary: Type.String(),
    imageDirs: Type.Array(Type.String({ minLength: 1 })),
    bootTimeoutMs: Type.Integer({ minimum: 1000, maximum: 3_600_000 })
  }, { additionalProperties: false }),
  catalog: Type.Object({
    cacheDir: Type.String(),
    cacheMaxMiB: Type.Integer({ minimum: 64, maximum: 1_073_741_824 }),
    concurrency: Type.Integer({ minimum: 1, maximum: 128 }),
    defaultProvider: Type.Union([Type.Literal(''), Type.Literal('folder'), Type.Literal('s3'), Type.Literal('azure'), Type.Literal('artifactory')]),
    peers: Type.Boolean(),
    zstdLevel: Type.Integer({ minimum: 0, maximum: 19 }),
    folder: Type.Object({
      path: Type.String()
    }, { additionalProperties: false }),
    s3: Type.Object({
      bucket: Type.String(),
      prefix: Type.String(),
      endpoint: Type.String(),
      region: Type.String({ minLength: 1 }),
      forcePathStyle: Type.Boolean(),
      accessKeyId: Type.String(),
      secretAccessKey: Type.String(),
      sessionToken: Type.String(),
      partSizeMiB: Type.Integer({ minimum: 5, maximum: 5120 })
    }, { additionalProperties: false }),
    azure: Type.Object({
      container: Type.String(),
      prefix: Type.String(),
      connectionString: Type.String(),
      accountUrl: Type.String(),
      accountName: Type.String(),
      accountKey: Type.String(),
      sasToken: Type.String()
    }, { additionalProperties: false }),
    artifactory: Type.Object({
      url: Type.String(),
      prefix: Type.String(),
      apiKey: Type.String(),
      accessToken: Type.String()
    }, { additionalProperties: false })
  }, { additionalProperties: false })
}, { additionalProperties: false })

export type Config = Static<typeof ConfigSchema>

/** Short environment names the documentation promises, beside the derived CORRAL_<PATH> ones. */
const envAliases: Record<string, string> = {
  'auth.adminPassword': 'CORRAL_ADMIN_PASSWORD',
  'cluster.joinToken': 'CORRAL_JOIN_TOKEN',
  'cluster.listen': 'CORRAL_P2P_ADDR',
  'cluster.bootstrap': 'CORRAL_BOOTSTRAP',
  'cluster.mdns': 'CORRAL_MDNS',
  'catalog.s3.accessKeyId': 'AWS_ACCESS_KEY_ID',
  'catalog.s3.secretAccessKey': 'AWS_SECRET_ACCESS_KEY',
  'catalog.s3.sessionToken': 'AWS_SESSION_TOKEN',
  'catalog.azure.connectionString': 'AZURE_STORAGE_CONNECTION_STRING',
  'catalog.artifactory.apiKey': 'ARTIFACTORY_API_KEY'
}

/** One overridable key: its dotted path, env variable, flag and schema. */
export interface ConfigKey {
  path: string[]
  dotted: string
  env: string
  /** A shorter env name that also sets this key (the derived one wins if both are set). */
  envAlias?: string
  flag: string
  schema: TSchema
}

const snake = (s: string): string => s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()
const kebab = (s: string): string => s.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase()

/** Every leaf key of the schema (records and arrays are leaves), for env and flag overrides. */
export function configKeys (schema: TSchema = ConfigSchema, prefix: string[] = []): ConfigKey[] {
  if (schema.type === 'object' && schema.properties != null) {
    return Object.entries(schema.properties as Record<string, TSchema>)
      .flatMap(([name, child]) => configKeys(child, [...prefix, name]))
  }
  return [{
    path: prefix,
    dotted: prefix.join('.'),
    env: 'CORRAL_' + prefix.map(snake).join('_'),
    envAlias: envAliases[prefix.join('.')],
    flag: prefix.map(kebab).join('-'),
    schema
  }]
}
