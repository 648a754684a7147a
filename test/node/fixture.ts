/**
 * In-process mesh nodes on 127.0.0.1 for tests: fast timings, a temp data dir each, an in-memory
 * Store, silent (or captured) logs. Everything made here is stopped and removed by cleanup().
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import type { Logger } from 'pino'
import { createMeshNode, generateClusterKey } from '../../src/node/index.ts'
import type { MeshNode, MeshNodeInit } from '../../src/node/index.ts'
import { MemoryStore } from '../helpers/memory-store.ts'

export const FAST = {
  heartbeatMs: 100,
  suspectAfterMs: 600,
  deadAfterMs: 1500,
  syncIntervalMs: 2000,
  rpcTimeoutMs: 5000
}

export interface TestNode {
  mesh: MeshNode
  store: MemoryStore
  dataDir: string
  logs: string[]
}

export class MeshFixture {
  readonly clusterKey = generateClusterKey()
  readonly nodes: TestNode[] = []
  private readonly dirs: string[] = []

  async node (overrides: Partial<MeshNodeInit> & { dataDir?: string, store?: MemoryStore } = {}): Promise<TestNode> {
    const dataDir = overrides.dataDir ?? await mkdtemp(join(tmpdir(), 'corral-mesh-'))
    if (overrides.dataDir === undefined) this.dirs.push(dataDir)
    const logs: string[] = []
    const logger: Logger = pino({ level: 'debug' }, new Writable({
      write (chunk: Buffer, _enc, done) {
        if (logs.length < 5000) logs.push(chunk.toString())
        done()
      }
    }))
    const { store: givenStore, ...init } = overrides
    const store = givenStore ?? new MemoryStore()
    await store.start()
    const mesh = await createMeshNode({ logger, store }, {
      dataDir,
      clusterKey: this.clusterKey,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstrap: [],
      mdns: { enabled: false, serviceTag: 'corral-test', intervalMs: 1000 },
      nodeName: `n${this.nodes.length}`,
      gossip: { colocationWeight: 0 },
      allowAddresses: ['/ip4/127.0.0.1'],
      bootstrapRetry: { attempts: 20, initialDelayMs: 50, maxDelayMs: 500 },
      ...FAST,
      ...init
    })
    const node = { mesh, store, dataDir, logs }
    this.nodes.push(node)
    return node
  }

  /** A started node that bootstraps from the first node's addresses. */
  async joined (overrides: Partial<MeshNodeInit> = {}): Promise<TestNode> {
    const first = this.nodes[0]
    const node = await this.node({ bootstrap: first === undefined ? [] : first.mesh.self().multiaddrs, ...overrides })
    await node.mesh.start()
    return node
  }

  async cleanup (): Promise<void> {
    await Promise.all(this.nodes.map(async n => { await n.mesh.stop() }))
    await Promise.all(this.dirs.map(async d => { await rm(d, { recursive: true, force: true }) }))
  }
}

/** Poll until `check` returns true; fails with `what` after the deadline. No timing is asserted. */
export async function eventually (what: string, check: () => boolean | Promise<boolean>, deadlineMs = 15_000): Promise<void> {
  const end = Date.now() + deadlineMs
  for (;;) {
    if (await check()) return
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}
