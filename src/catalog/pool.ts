/**
 * At most `limit` async tasks at once. `add` waits for a free slot (backpressure for a producer
 * such as the chunker); the first failure is kept, stops new tasks and is thrown by `add`/`drain`.
 */
export class TaskPool {
  private readonly limit: number
  private readonly running = new Set<Promise<void>>()
  private failure: { error: unknown } | undefined

  constructor (limit: number) {
    this.limit = Math.max(1, Math.floor(limit))
  }

  /** Starts the task once a slot is free; rejects with the first failure seen so far. */
  async add (task: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.limit && this.failure == null) await Promise.race(this.running)
    if (this.failure != null) throw this.failure.error
    const p: Promise<void> = task().catch((error: unknown) => { this.failure ??= { error } }).finally(() => { this.running.delete(p) })
    this.running.add(p)
  }

  /** Waits for every task started; rejects with the first failure. */
  async drain (): Promise<void> {
    while (this.running.size > 0) await Promise.race(this.running)
    if (this.failure != null) throw this.failure.error
  }

  /** Waits for running tasks without throwing (cleanup after a failure elsewhere). */
  async settle (): Promise<void> {
    while (this.running.size > 0) await Promise.race(this.running)
  }
}

/** Runs `fn` over items with at most `limit` at once; rejects with the first failure. */
export async function forEachLimit<T> (items: Iterable<T>, limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const pool = new TaskPool(limit)
  try {
    for (const item of items) await pool.add(async () => await fn(item))
  } catch (err) {
    await pool.settle()
    throw err
  }
  await pool.drain()
}
