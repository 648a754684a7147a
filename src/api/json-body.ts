import { Stream } from 'node:stream'
import type { Context } from 'koa'

/**
 * Sets a JSON answer as Koa would (same bytes, Content-Type and Content-Length), but as a string.
 * Koa's body setter tests an object against the globals ReadableStream, Blob and Response before
 * it calls it JSON, and Node defines those lazily: the first JSON answer a node gave loaded undici,
 * http2 and web streams (~3 MB it then kept for good). A string body skips those tests.
 */
export function setJsonBody (ctx: Context, body: unknown): void {
  if (body == null || typeof body === 'string' || Buffer.isBuffer(body) || body instanceof Stream) {
    ctx.body = body
    return
  }
  // Koa sets the type only when none is set yet (the problem middleware sets its own).
  if (ctx.response.type === '') ctx.type = 'json'
  ctx.body = JSON.stringify(body)
}
