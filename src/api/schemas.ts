import { Type, type TSchema } from '@sinclair/typebox'

/**
 * Request and response shapes. The same schemas validate requests (validate.ts) and are published in
 * GET /api/openapi.json, so documentation and validation cannot drift apart.
 */
const Name = Type.String({ minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$', description: 'letters, digits, dot, dash, underscore; starts with a letter or digit' })
const Labels = Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,63}$' }), Type.String({ maxLength: 255 }), { maxProperties: 64, additionalProperties: false })

export const Problem = Type.Object({
  type: Type.String(), title: Type.String(), status: Type.Integer(), detail: Type.String()
}, { additionalProperties: true, description: 'application/problem+json (RFC 9457)' })

export const TokenRequest = Type.Object({
  username: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  password: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
  apiKey: Type.Optional(Type.String({ minLength: 1, maxLength: 512 }))
}, { additionalProperties: false, description: 'either username and password, or apiKey' })
export const TokenGrant = Type.Object({ token: Type.String(), expiresAt: Type.String({ format: 'date-time' }) })

export const CreateUser = Type.Object({
  username: Type.String({ minLength: 1, maxLength: 64 }),
  password: Type.String({ minLength: 8, maxLength: 1024 }),
  roles: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32 }))
}, { additionalProperties: false })
export const User = Type.Object({ id: Type.String(), username: Type.String(), roles: Type.Array(Type.String()), createdAt: Type.String(), updatedAt: Type.String() })

export const CreateRole = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 64 }),
  claims: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 64 }),
  description: Type.Optional(Type.String({ maxLength: 500 }))
}, { additionalProperties: false })
export const Role = Type.Object({ name: Type.String(), description: Type.String(), claims: Type.Array(Type.String()), builtin: Type.Boolean() })

export const CreateApiKey = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  username: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'owner; defaults to the caller (another user needs user:write)' })),
  roles: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32 }))
}, { additionalProperties: false })
export const ApiKey = Type.Object({ id: Type.String(), name: Type.String(), username: Type.String(), roles: Type.Array(Type.String()), createdAt: Type.String() })
export const CreatedApiKey = Type.Intersect([ApiKey, Type.Object({ apiKey: Type.String({ description: 'shown only once' }) })])

export const RegisterImage = Type.Object({
  name: Name,
  path: Type.String({ minLength: 1, maxLength: 4096 })
}, { additionalProperties: false })
export const Image = Type.Object({
  name: Type.String(), arch: Type.String(), os: Type.String(), path: Type.String(), source: Type.String(),
  defaultCpus: Type.Integer(), defaultMemoryMiB: Type.Integer(), diskMiB: Type.Integer(), simulated: Type.Boolean()
}, { additionalProperties: true })

export const CreateVm = Type.Object({
  image: Type.String({ minLength: 1, maxLength: 128 }),
  name: Type.Optional(Name),
  cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
  memoryMiB: Type.Optional(Type.Integer({ minimum: 64, maximum: 4_194_304 })),
  labels: Type.Optional(Labels),
  start: Type.Optional(Type.Boolean({ description: 'boot after creating (default true)' })),
  arch: Type.Optional(Type.Union([Type.Literal('x86_64'), Type.Literal('arm64')], { description: 'the host architecture the VM needs' })),
  os: Type.Optional(Type.Union([Type.Literal('linux'), Type.Literal('macos'), Type.Literal('windows')], { description: 'the guest OS the image must have' })),
  driver: Type.Optional(Type.Union([Type.Literal('qemu'), Type.Literal('parallels'), Type.Literal('sim')])),
  hostLabels: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,63}$' }), Type.String({ maxLength: 255 }), { maxProperties: 32, additionalProperties: false, description: 'host labels that must match exactly' })),
  hostLabelsNot: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]{1,63}$' }), Type.String({ maxLength: 255 }), { maxProperties: 32, additionalProperties: false, description: 'host labels the host must not have' })),
  simulated: Type.Optional(Type.Boolean({ description: 'allow (true) or forbid (false) simulated hosts; by default only where no real hypervisor exists' })),
  priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, description: 'queue priority, higher first (default 50)' })),
  queueTimeoutSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 604_800, description: 'how long it may wait for capacity' })),
  dryRun: Type.Optional(Type.Boolean({ description: 'explain where it would go and why, without creating it' }))
}, { additionalProperties: false })
export const WaitQuery = Type.Object({
  wait: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')], { description: 'answer only once the VM is running (or failed)' }))
}, { additionalProperties: false })
export const PortForward = Type.Object({ guestPort: Type.Integer(), hostAddress: Type.String(), hostPort: Type.Integer(), protocol: Type.String() })
export const Vm = Type.Object({
  id: Type.String(), name: Type.String(), image: Type.String(), host: Type.String(), driver: Type.String(),
  simulated: Type.Boolean({ description: 'true when nothing really runs (sim driver)' }),
  state: Type.String(), stateReason: Type.Optional(Type.String()),
  cpus: Type.Integer(), memoryMiB: Type.Integer(), diskMiB: Type.Integer(), labels: Labels,
  ports: Type.Array(PortForward), owner: Type.String(), createdAt: Type.String(), updatedAt: Type.String()
}, { additionalProperties: true })

export const ExecRequest = Type.Object({
  command: Type.Array(Type.String({ maxLength: 65536 }), { minItems: 1, maxItems: 1024, description: 'argv: the program and its arguments' }),
  env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String({ maxLength: 65536 }), { maxProperties: 256, additionalProperties: false })),
  timeoutSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 }))
}, { additionalProperties: false })
export const ExecResult = Type.Object({ exitCode: Type.Integer(), stdout: Type.String(), stderr: Type.String() })

export const Resources = Type.Object({ cpus: Type.Number(), memoryMiB: Type.Number(), diskMiB: Type.Number() })
export const Host = Type.Object({
  name: Type.String(), state: Type.String(), capacity: Type.Object({}, { additionalProperties: true }),
  allocated: Resources, free: Resources, vms: Type.Object({ total: Type.Integer(), running: Type.Integer() })
}, { additionalProperties: true })

export const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) })
export const NameParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 128 }) })
export const UsernameParams = Type.Object({ username: Type.String({ minLength: 1, maxLength: 64 }) })
export const VmActionParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128 }),
  action: Type.Union(['start', 'stop', 'suspend', 'resume', 'restart'].map(a => Type.Literal(a)))
})

export const Empty = Type.Object({}, { additionalProperties: false })
export const listOf = (item: TSchema): TSchema => Type.Object({ items: Type.Array(item) })
