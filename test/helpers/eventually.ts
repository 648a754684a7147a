/**
 * Polls until check() returns something other than undefined, within a bound; the last error it
 * threw explains a timeout. For conditions that converge (gossip, elections), never for timings.
 */
export async function eventually<T> (what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const result = await check()
      if (result !== undefined) return result
    } catch (err) { last = err }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new Error(`${what} did not happen within ${timeoutMs} ms${last != null ? `: ${String(last)}` : ''}`)
}
