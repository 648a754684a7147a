import type { IncomingMessage } from 'node:http'

/**
 * The credential a request carries: `Authorization: Bearer <token or API key>`, `X-Api-Key`, or, for
 * websockets from browsers (which cannot set headers), an `access_token` query parameter.
 */
export function credentialOf (req: Pick<IncomingMessage, 'headers'>, url: URL | undefined, allowQuery: boolean): string | undefined {
  const header = req.headers.authorization
  if (typeof header === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (match != null) return match[1]
  }
  const apiKey = req.headers['x-api-key']
  if (typeof apiKey === 'string' && apiKey !== '') return apiKey
  if (allowQuery && url != null) return url.searchParams.get('access_token') ?? undefined
  return undefined
}
