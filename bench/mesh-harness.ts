/**
 * Starts a mesh of N real `corral node` processes (sim driver, 127.0.0.1) for the mesh benches: the
 * first founds the cluster, the others join with its token a few at a time (start-up is CPU-bound),
 * and it returns once every node sees every other alive. Nodes are pushed into `nodes` as they
 * start, so the caller can stop them whatever happens.
 */
import { startNodeProcess, call, ADMIN_PASSWORD, type NodeProcess } from '../test/helpers/node-process.ts'

export interface Mesh {
  token: string
  /** Env for another node that joins this mesh. */
  joiner: (name: string) => Record<string, string>
  /** Each node's peer id, in the order of `nodes`. */
  peerIds: string[]
}

export async function startMesh (count: number, env: Record<string, string>, nodes: NodeProcess[], limitMs: number): Promise<Mesh> {
  nodes.push(await startNodeProcess({ ...env, CORRAL_NODE_NAME: 'n00' }, { readyTimeoutMs: 120_000 }))
  const token = (await call(nodes[0]!.url, 'POST', '/api/v1/auth/token', { body: { username: 'admin', password: ADMIN_PASSWORD } })).body.token as string
  const joinToken = (await call(nodes[0]!.url, 'GET', '/api/v1/cluster/join-token', { token })).body.token as string
  // BENCH_PROFILE_NODES=N: only the N nodes after the first get BENCH_PROFILE_OPTIONS (e.g.
  // '--cpu-prof --cpu-prof-dir=DIR'): profiling every node of a large mesh doubles its CPU and skews it.
  const profiled = Number(process.env.BENCH_PROFILE_NODES ?? 0)
  const joiner = (name: string): Record<string, string> => ({
    ...env, CORRAL_NODE_NAME: name, CORRAL_JOIN_TOKEN: joinToken, CORRAL_ADMIN_PASSWORD: '',
    ...(Number(name.slice(1)) <= profiled && process.env.BENCH_PROFILE_OPTIONS != null ? { NODE_OPTIONS: process.env.BENCH_PROFILE_OPTIONS } : {})
  })
  for (let i = 1; i < count; i += 4) {
    const batch = Array.from({ length: Math.min(4, count - i) }, (_, k) => i + k)
    nodes.push(...await Promise.all(batch.map(async j => await startNodeProcess(joiner(`n${String(j).padStart(2, '0')}`), { readyTimeoutMs: 120_000 }))))
  }
  const deadline = performance.now() + limitMs
  for (;;) {
    failIfExited(nodes)
    const views = await Promise.all(nodes.map(async n => (await call(n.url, 'GET', '/api/v1/cluster', { token })).body))
      .catch((err: unknown) => { failIfExited(nodes); throw err })
    if (views.every(v => v.members?.filter((m: { status: string }) => m.status === 'alive').length === count && v.leader != null)) {
      return { token, joiner, peerIds: views.map(v => v.self.peerId as string) }
    }
    if (performance.now() > deadline) throw new Error(`the ${count} nodes did not all see each other alive within ${limitMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 500))
  }
}

/** Throws, with the end of its log, if a node process has exited: a bench must not report figures of a mesh that lost a node. */
export function failIfExited (nodes: NodeProcess[]): void {
  const gone = nodes.find(n => n.child.exitCode != null || n.child.signalCode != null)
  if (gone !== undefined) throw new Error(`a node process exited (code ${gone.child.exitCode}, signal ${gone.child.signalCode}); the end of its log:\n${gone.log().slice(-4000)}`)
}

/** The nodes' mesh counters (GET /api/v1/cluster's metrics), flattened and summed over the cluster. */
export async function meshCounts (nodes: NodeProcess[], token: string): Promise<Map<string, number>> {
  const sum = new Map<string, number>()
  failIfExited(nodes)
  for (const n of nodes) {
    const m = (await call(n.url, 'GET', '/api/v1/cluster', { token }).catch((err: unknown) => { failIfExited(nodes); throw err })).body.metrics as Record<string, unknown>
    const flat: Array<[string, unknown]> = Object.entries(m).flatMap(([k, v]) => typeof v === 'object' && v !== null ? Object.entries(v).map(([k2, v2]) => [`${k}.${k2}`, v2] as [string, unknown]) : [[k, v] as [string, unknown]])
    for (const [k, v] of flat) if (typeof v === 'number') sum.set(k, (sum.get(k) ?? 0) + v)
  }
  return sum
}
