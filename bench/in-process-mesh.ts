/**
 * Mesh nodes inside the bench's own process, on 127.0.0.1, with records kept in a Map: for benches
 * of the mesh alone (bench/mesh-join, bench/rpc-calls). startInProcessNode makes a data folder for
 * each node under the OS temp folder; removeNodeFolders deletes them.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { createMeshNode, generateClusterKey } from '../src/node/index.ts'
import type { MeshNode } from '../src/node/index.ts'
import type { Store } from '../src/store/types.ts'

const clusterKey = generateClusterKey()
const logger = pino({ level: 'silent' })
const dirs: string[] = []

/** The mesh only needs get/list/put/delete; the bench keeps records in a Map. */
function memoryStore (): Store {
  const data = new Map<string, Map<string, unknown>>()
  return {
    start: async () => {},
    stop: async () => {},
    get: <T>(c: string, id: string) => data.get(c)?.get(id) as T | undefined,
    list: <T>(c: string) => [...(data.get(c)?.values() ?? [])] as T[],
    put: async (c, id, v) => { if (!data.has(c)) data.set(c, new Map()); data.get(c)!.set(id, v) },
    delete: async (c, id) => data.get(c)?.delete(id) ?? false
  }
}

/** A started node of one cluster (one key per bench process), bootstrapping from `bootstrap`. */
export async function startInProcessNode (name: string, bootstrap: string[], heartbeatMs = 1000): Promise<MeshNode> {
  const dataDir = await mkdtemp(join(tmpdir(), 'corral-bench-mesh-'))
  dirs.push(dataDir)
  const mesh = await createMeshNode({ logger, store: memoryStore() }, {
    dataDir,
    clusterKey,
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstrap,
    mdns: { enabled: false, serviceTag: 'corral-bench', intervalMs: 10_000 },
    nodeName: name,
    gossip: { colocationWeight: 0 },
    allowAddresses: ['/ip4/127.0.0.1'],
    heartbeatMs,
    suspectAfterMs: heartbeatMs * 5,
    deadAfterMs: heartbeatMs * 15
  })
  await mesh.start()
  return mesh
}

export async function removeNodeFolders (): Promise<void> {
  await Promise.all(dirs.splice(0).map(async dir => await rm(dir, { recursive: true, force: true })))
}
