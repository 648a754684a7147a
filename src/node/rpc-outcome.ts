/**
 * How a call's outcome crosses the wire, for both rpc protocols (a stream per call, and the
 * channel): a handler's result or error becomes an end frame, a remote error becomes a typed one.
 */
import { MAX_RPC_FRAME_BYTES } from './constants.ts'
import { RpcBodyTooLargeError, RpcBusyError, RpcMethodNotFoundError, RpcRemoteError, RpcStreamRequiredError } from './errors.ts'
import type { RpcContext, RpcHandler } from './types.ts'
import { encodeJson } from './wire.ts'
import type { RpcErrorBody } from './wire.ts'

/**
 * Run a handler and encode its outcome as the end frame (an error frame if it threw, or if its
 * result is over the frame limit). `id` is the call's id on a channel, absent on a stream per call.
 */
export async function runHandler (handler: RpcHandler<any, any>, body: unknown, ctx: RpcContext, method: string, id?: number): Promise<Uint8Array> {
  try {
    const result: unknown = await handler(body, ctx)
    return encodeFrame(id === undefined ? { t: 'end', ok: true, body: result } : { t: 'end', id, ok: true, body: result }, method)
  } catch (err) {
    return errorFrame(serializeError(err), id)
  }
}

/** An end frame carrying an error (always small: name and message are cut to the schema's limits). */
export function errorFrame (error: RpcErrorBody, id?: number): Uint8Array {
  return encodeJson(id === undefined ? { t: 'end', ok: false, error } : { t: 'end', id, ok: false, error })
}

export function encodeFrame (frame: object, method: string): Uint8Array {
  const bytes = encodeJson(frame)
  if (bytes.byteLength > MAX_RPC_FRAME_BYTES) {
    throw new RpcBodyTooLargeError(`A frame of ${method} is ${bytes.byteLength} bytes, over the ${MAX_RPC_FRAME_BYTES}-byte limit; ` +
      'split it into several frames with a streaming call.', { method, size: bytes.byteLength })
  }
  return bytes
}

export function serializeError (err: unknown): RpcErrorBody {
  const e = err as { name?: unknown, message?: unknown, details?: unknown }
  const out: RpcErrorBody = {
    name: typeof e?.name === 'string' ? e.name.slice(0, 128) : 'Error',
    message: (typeof e?.message === 'string' ? e.message : String(err)).slice(0, 8192)
  }
  if (e?.details !== null && typeof e?.details === 'object' && !Array.isArray(e.details)) {
    try {
      out.details = JSON.parse(JSON.stringify(e.details)) as Record<string, unknown>
    } catch {}
  }
  return out
}

/** The caller's error for a remote one: the rpc layer's own refusals keep their names, handler errors become RpcRemoteError. */
export function remoteError (error: RpcErrorBody, node: string, method: string): Error {
  if (error.name === 'RpcMethodNotFoundError') {
    return new RpcMethodNotFoundError(`${node} has no handler for ${method}; it may run another corral version.`, { method })
  }
  if (error.name === 'RpcBusyError') {
    return new RpcBusyError(`${node} did not run ${method}: ${error.message}`, { method, ...(error.details ?? {}) })
  }
  return new RpcRemoteError(`${node} failed ${method}: ${error.message}`, { method, remote: error })
}

/** What ctx.send() throws in a handler called through request(). */
export function streamRequired (method: string): RpcStreamRequiredError {
  return new RpcStreamRequiredError(`${method} sends frames (ctx.send), but it was called with request(), which takes one answer; ` +
    'call it with requestStream().', { method })
}
