import { createHash } from 'node:crypto'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { Config } from '../config/index.ts'
import { decodeJoinToken, generateClusterKey, normalizeClusterKey, type MeshNode } from '../node/index.ts'

export interface ClusterIdentity {
  key: string
  bootstrap: string[]
  /** This node starts a new cluster (so it creates the admin user) rather than joining one. */
  founding: boolean
  /** A short, non-secret id derived from the key: mDNS service tag, admin record id. */
  fingerprint: string
}

export const clusterKeyFile = (dataDir: string): string => join(dataDir, 'keys', 'cluster.key')

/**
 * Where the cluster key comes from: config, a join token, the data folder (a restart), or a new
 * key (a new cluster). Whatever is used is kept in the data folder, 0600, so a restart needs nothing.
 */
export async function resolveClusterIdentity (config: Config, dataDir: string): Promise<ClusterIdentity> {
  const file = clusterKeyFile(dataDir)
  const saved = await readFile(file, 'utf8').then(normalizeClusterKey, () => undefined)
  let key: string
  let bootstrap = [...config.cluster.bootstrap]
  let founding = false
  if (config.cluster.key !== '') {
    key = normalizeClusterKey(config.cluster.key)
  } else if (config.cluster.joinToken !== '') {
    const token = decodeJoinToken(config.cluster.joinToken)
    key = normalizeClusterKey(token.clusterKey)
    bootstrap = [...new Set([...bootstrap, ...token.bootstrap])]
  } else if (saved != null) {
    key = saved
  } else {
    key = generateClusterKey()
  }
  if (saved == null) {
    await writeKey(file, key)
    // First start of this node: it founds the cluster unless it was told where or how to join.
    founding = config.cluster.joinToken === '' && bootstrap.length === 0
  }
  const fingerprint = createHash('sha256').update(key).digest('hex').slice(0, 16)
  return { key, bootstrap, founding, fingerprint }
}

export async function writeKey (file: string, key: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  await writeFile(file, key + '\n', { mode: 0o600 })
  await chmod(file, 0o600)
}

/**
 * A node given the cluster key with neither bootstrap list nor join token is either the first node
 * or a newcomer that finds the others by mDNS. A newcomer must not create the first admin: the
 * record id is the same cluster-wide, so its later write would replace the cluster's admin (and its
 * password). With mDNS on, such a node listens for a member for a bounded time before it decides:
 * true if one was heard (join), false if none (found the cluster).
 */
export async function memberAppears (mesh: Pick<MeshNode, 'on' | 'off' | 'members'>, waitMs: number): Promise<boolean> {
  if (mesh.members().some(m => !m.self)) return true
  return await new Promise(resolve => {
    const done = (found: boolean): void => {
      clearTimeout(timer)
      mesh.off('member:join', onJoin)
      resolve(found)
    }
    const onJoin = (): void => { done(true) }
    const timer = setTimeout(() => { done(false) }, waitMs)
    mesh.on('member:join', onJoin)
  })
}
