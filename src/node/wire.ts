/**
 * Everything the mesh reads from the network, described once as TypeBox schemas and checked with
 * Ajv, plus the one decoder every channel uses: size limit, then JSON, then schema. Anything that
 * fails is reported with a DropReason and never reaches the mesh logic.
 */
import { Type } from '@sinclair/typebox'
import type { Static, TSchema } from '@sinclair/typebox'
import { Ajv } from 'ajv'
import type { ValidateFunction } from 'ajv'
import { MAX_METHOD_LENGTH, SYNC_CHUNK_ITEMS } from './constants.ts'
import type { DropReason } from './types.ts'

/** Collection names are stored inside one store collection; kept short and path-safe anyway. */
export const COLLECTION_PATTERN = '^[a-z][a-z0-9-]{0,62}$'
export const MAX_ID_LENGTH = 128

const PeerIdString = Type.String({ minLength: 1, maxLength: 128 })
const Collection = Type.String({ pattern: COLLECTION_PATTERN })
const RecordId = Type.String({ minLength: 1, maxLength: MAX_ID_LENGTH })
const Counter = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })
export const FEED_NAME_PATTERN = '^[a-z][a-z0-9-]{0,62}$'

export const TimestampSchema = Type.Object({
  wall: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  counter: Type.Integer({ minimum: 0, maximum: 2 ** 31 }),
  node: PeerIdString
}, { additionalProperties: false })

export const RecordEntrySchema = Type.Object({
  collection: Collection,
  id: RecordId,
  value: Type.Unknown(),
  deleted: Type.Boolean(),
  hlc: TimestampSchema
}, { additionalProperties: false })

export const HeartbeatSchema = Type.Object({
  peerId: PeerIdString,
  nodeName: Type.String({ minLength: 1, maxLength: 128 }),
  apiAddress: Type.Optional(Type.String({ maxLength: 512 })),
  addrs: Type.Array(Type.String({ maxLength: 512 }), { maxItems: 32 }),
  version: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  /** Absent in a light heartbeat: the sender's state is still that of `version`, sent before. */
  state: Type.Optional(Type.Unknown()),
  /** How often the sender heartbeats now (ms): its silence is judged against this. */
  every: Type.Optional(Type.Integer({ minimum: 1, maximum: 3_600_000 })),
  /** Where each of the sender's feeds stands: [epoch, version] (see feeds.ts). */
  feeds: Type.Optional(Type.Record(Type.String({ pattern: FEED_NAME_PATTERN }), Type.Tuple([Counter, Counter]), { maxProperties: 16 })),
  /** Members the sender just lost (connection gone, ping failed): receivers check them with a ping. */
  lost: Type.Optional(Type.Array(PeerIdString, { maxItems: 16 }))
}, { additionalProperties: false })
export type HeartbeatMessage = Static<typeof HeartbeatSchema>

export const FeedDeltaSchema = Type.Object({
  owner: PeerIdString,
  feed: Type.String({ pattern: FEED_NAME_PATTERN }),
  epoch: Counter,
  from: Counter,
  to: Counter,
  upserts: Type.Array(Type.Object({ id: RecordId }), { maxItems: 4096 }),
  removes: Type.Array(RecordId, { maxItems: 4096 })
}, { additionalProperties: false })
export type FeedDeltaMessage = Static<typeof FeedDeltaSchema>

export const FeedSnapshotFrameSchema = Type.Object({
  rows: Type.Array(Type.Object({ id: RecordId }), { maxItems: 4096 })
}, { additionalProperties: false })
export const FeedSnapshotEndSchema = Type.Object({ epoch: Counter, version: Counter }, { additionalProperties: false })

export const RecordsGossipSchema = Type.Object({
  entries: Type.Array(RecordEntrySchema, { minItems: 1, maxItems: 64 })
}, { additionalProperties: false })
export type RecordsGossipMessage = Static<typeof RecordsGossipSchema>

const RecordKeySchema = Type.Object({ collection: Collection, id: RecordId }, { additionalProperties: false })

export const SyncFrameSchema = Type.Union([
  Type.Object({
    t: Type.Literal('digest'),
    items: Type.Array(Type.Object({ collection: Collection, id: RecordId, hlc: TimestampSchema }, { additionalProperties: false }), { minItems: 1, maxItems: SYNC_CHUNK_ITEMS })
  }, { additionalProperties: false }),
  Type.Object({ t: Type.Literal('digest-end'), total: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
  Type.Object({
    t: Type.Literal('records'),
    entries: Type.Array(RecordEntrySchema, { minItems: 1, maxItems: SYNC_CHUNK_ITEMS })
  }, { additionalProperties: false }),
  Type.Object({
    t: Type.Literal('want'),
    keys: Type.Array(RecordKeySchema, { minItems: 1, maxItems: SYNC_CHUNK_ITEMS })
  }, { additionalProperties: false }),
  Type.Object({ t: Type.Literal('end') }, { additionalProperties: false })
])
export type SyncFrame = Static<typeof SyncFrameSchema>

const Method = Type.String({ minLength: 1, maxLength: MAX_METHOD_LENGTH })

export const RpcRequestSchema = Type.Object({
  t: Type.Literal('req'),
  method: Method,
  body: Type.Optional(Type.Unknown())
}, { additionalProperties: false })
export type RpcRequestFrame = Static<typeof RpcRequestSchema>

export const RpcErrorSchema = Type.Object({
  name: Type.String({ maxLength: 128 }),
  message: Type.String({ maxLength: 8192 }),
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown()))
}, { additionalProperties: false })
export type RpcErrorBody = Static<typeof RpcErrorSchema>

export const RpcResponseSchema = Type.Union([
  Type.Object({ t: Type.Literal('data'), body: Type.Optional(Type.Unknown()) }, { additionalProperties: false }),
  Type.Object({ t: Type.Literal('end'), ok: Type.Literal(true), body: Type.Optional(Type.Unknown()) }, { additionalProperties: false }),
  Type.Object({ t: Type.Literal('end'), ok: Type.Literal(false), error: RpcErrorSchema }, { additionalProperties: false })
])
export type RpcResponseFrame = Static<typeof RpcResponseSchema>

/** A call's id on an rpc channel: chosen by the caller, unique among its calls in flight. */
const CallId = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })

/** Caller -> callee on an rpc channel (RPC_MUX_PROTOCOL): a call, or the end of the caller's interest in one. */
export const RpcChannelRequestSchema = Type.Union([
  Type.Object({ t: Type.Literal('req'), id: CallId, method: Method, body: Type.Optional(Type.Unknown()) }, { additionalProperties: false }),
  Type.Object({ t: Type.Literal('cancel'), id: CallId }, { additionalProperties: false })
])
export type RpcChannelRequestFrame = Static<typeof RpcChannelRequestSchema>

/** Callee -> caller on an rpc channel: a call's one answer. Unary calls have no 'data' frames. */
export const RpcChannelResponseSchema = Type.Union([
  Type.Object({ t: Type.Literal('end'), id: CallId, ok: Type.Literal(true), body: Type.Optional(Type.Unknown()) }, { additionalProperties: false }),
  Type.Object({ t: Type.Literal('end'), id: CallId, ok: Type.Literal(false), error: RpcErrorSchema }, { additionalProperties: false })
])
export type RpcChannelResponseFrame = Static<typeof RpcChannelResponseSchema>

/** A checker for one schema: the typed value, or why it was refused. */
export type Decoder<T> = (bytes: Uint8Array, maxBytes: number) => { ok: true, value: T } | { ok: false, reason: DropReason }

// One Ajv for the module: compiled validators are pure functions and compiling is the slow part.
// validateSchema: false: these are our own TypeBox schemas; checking each against JSON Schema's
// meta-schema first cost more CPU than compiling it.
const ajv = new Ajv({ allErrors: false, strict: false, validateSchema: false })

function decoder<S extends TSchema> (schema: S): Decoder<Static<S>> {
  let validate: ValidateFunction | undefined
  return (bytes, maxBytes) => {
    if (bytes.byteLength > maxBytes) return { ok: false, reason: 'oversized' }
    let value: unknown
    try {
      value = JSON.parse(textDecoder.decode(bytes))
    } catch {
      return { ok: false, reason: 'malformed' }
    }
    validate ??= ajv.compile(schema)
    if (!validate(value)) return { ok: false, reason: 'invalid' }
    return { ok: true, value: value as Static<S> }
  }
}

const textDecoder = new TextDecoder('utf-8', { fatal: true })
const textEncoder = new TextEncoder()

/** A boolean check for values that arrive already parsed (rpc frames). */
function checker<S extends TSchema> (schema: S): (value: unknown) => boolean {
  let validate: ValidateFunction | undefined
  return value => {
    validate ??= ajv.compile(schema)
    return validate(value)
  }
}
export const isFeedSnapshotFrame = checker(FeedSnapshotFrameSchema)
/** A member as a peer describes it (mesh.members frames): the shape of a full heartbeat. */
export const isHeartbeat = checker(HeartbeatSchema)
export const isFeedSnapshotEnd = checker(FeedSnapshotEndSchema)

let recordEntryValidator: ValidateFunction | undefined
/** For entries read back from our own store. */
export function isRecordEntry (value: unknown): boolean {
  recordEntryValidator ??= ajv.compile(RecordEntrySchema)
  return recordEntryValidator(value)
}

export const decodeHeartbeat = decoder(HeartbeatSchema)
export const decodeRecordsGossip = decoder(RecordsGossipSchema)
export const decodeFeedDelta = decoder(FeedDeltaSchema)
export const decodeSyncFrame = decoder(SyncFrameSchema)
export const decodeRpcRequest = decoder(RpcRequestSchema)
export const decodeRpcResponse = decoder(RpcResponseSchema)
export const decodeRpcChannelRequest = decoder(RpcChannelRequestSchema)
export const decodeRpcChannelResponse = decoder(RpcChannelResponseSchema)

export function encodeJson (value: unknown): Uint8Array {
  return textEncoder.encode(JSON.stringify(value))
}

/** Bytes of a value's JSON form; undefined when it has none (functions, undefined, cycles...). */
export function jsonSize (value: unknown): number | undefined {
  try {
    const text = JSON.stringify(value)
    return text === undefined ? undefined : textEncoder.encode(text).byteLength
  } catch {
    return undefined
  }
}
