/**
 * How many durable puts per second the JSON store takes, one at a time and with 100 callers at
 * once (where group commit should turn many puts into one write). Bounded: a fixed number of puts.
 * Run: node bench/store-writes.ts   (prints one line per scenario; writes under os.tmpdir())
 */
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { createJsonStore } from '../src/store/index.ts'

/** Ids cycle over this many records, so the file stays the size of a busy VMs collection. */
const RECORDS = 1000
const SEQUENTIAL_PUTS = 500
const CONCURRENT_PUTS = 20_000
const CONCURRENCY = 100

function vm (n: number): unknown {
  return { id: `vm-${n % RECORDS}`, state: n % 3 === 0 ? 'running' : 'stopped', host: `host-${n % 17}`, cpus: 4, memoryMiB: 8192, updatedAt: n }
}

const dataDir = await mkdtemp(join(tmpdir(), 'corral-bench-store-'))
let commits = 0
// Counts commits from the store's debug log, to show how many puts each write carried.
const logger = pino({ level: 'debug' }, { write: (line: string) => { if (line.includes('state file committed')) commits++ } })
const store = createJsonStore({ logger }, { dataDir })
try {
  await store.start()
  // Fill first, so every scenario rewrites a full-size file.
  await Promise.all(Array.from({ length: RECORDS }, async (_, n) => { await store.put('seq', `vm-${n}`, vm(n)) }))
  await Promise.all(Array.from({ length: RECORDS }, async (_, n) => { await store.put('conc', `vm-${n}`, vm(n)) }))

  const report = async (label: string, collection: string, puts: number, run: () => Promise<void>): Promise<void> => {
    commits = 0
    const started = performance.now()
    await run()
    const seconds = (performance.now() - started) / 1000
    const size = (await stat(join(dataDir, 'state', `${collection}.json`))).size
    console.log(`${label}: ${Math.round(puts / seconds)} puts/s (${puts} puts in ${seconds.toFixed(2)} s, ` +
      `${commits} file writes, ${(puts / commits).toFixed(1)} puts per write, file ${Math.round(size / 1024)} KiB)`)
  }

  await report('sequential', 'seq', SEQUENTIAL_PUTS, async () => {
    for (let n = 0; n < SEQUENTIAL_PUTS; n++) await store.put('seq', `vm-${n % RECORDS}`, vm(n))
  })

  await report(`${CONCURRENCY} concurrent`, 'conc', CONCURRENT_PUTS, async () => {
    // 100 callers, each putting one after another: puts keep arriving while a write is in flight.
    let next = 0
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < CONCURRENT_PUTS) {
        const n = next++
        await store.put('conc', `vm-${n % RECORDS}`, vm(n))
      }
    }))
  })
} finally {
  await store.stop()
  await rm(dataDir, { recursive: true, force: true })
}
