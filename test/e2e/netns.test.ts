import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ADMIN_PASSWORD } from '../helpers/node-process.ts'
import { call, createTestNetwork, startNetnsNode, type NetnsNode, type TestNetwork } from '../helpers/netns.ts'
import { generateClusterKey } from '../../src/node/index.ts'
import { eventually } from '../helpers/eventually.ts'

// Real node processes, each in its own network namespace on a private bridge the test builds and
// removes (see test/helpers/netns.ts): mDNS discovery, a node with the wrong cluster key, and a
// partition that heals. Needs root and iproute2; multicast never leaves the test's namespaces.
const fast = { CORRAL_CLUSTER_HEARTBEAT_MS: '200', CORRAL_CLUSTER_SUSPECT_AFTER_MS: '1000', CORRAL_CLUSTER_DEAD_AFTER_MS: '3000' }
const mdnsOn = { CORRAL_MDNS: 'true', CORRAL_CLUSTER_MDNS_INTERVAL_MS: '500' }
const HANDSHAKE_FAILED = /failed the private-network handshake: the cluster keys differ/

const nodes: NetnsNode[] = []
const networks: TestNetwork[] = []
after(async () => {
  await Promise.all(nodes.splice(0).map(async n => await n.destroy()))
  for (const network of networks.splice(0)) await network.destroy()
})


const login = async (node: NetnsNode, username = 'admin', password = ADMIN_PASSWORD): Promise<string> => {
  const res = await call(node, 'POST', '/api/v1/auth/token', { body: { username, password } })
  if (res.status !== 200) throw new Error(`login ${username} on ${node.name}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.token
}

/** Host name -> state (alive, suspect, dead) as one node sees the cluster. */
async function hostStates (node: NetnsNode, token: string): Promise<Record<string, string>> {
  const res = await call(node, 'GET', '/api/v1/hosts', { token })
  if (res.status !== 200) throw new Error(`hosts on ${node.name}: ${res.status} ${JSON.stringify(res.body)}`)
  return Object.fromEntries(res.body.items.map((h: { name: string, state: string }) => [h.name, h.state]))
}

async function everyNodeSeesAllAlive (group: NetnsNode[], token: string, timeoutMs?: number): Promise<void> {
  const expected = Object.fromEntries(group.map(n => [n.name, 'alive']))
  for (const node of group) {
    await eventually(`${node.name} lists ${group.map(n => n.name).join(', ')} alive`, async () => {
      const states = await hostStates(node, token)
      if (JSON.stringify(Object.entries(states).sort()) !== JSON.stringify(Object.entries(expected).sort())) throw new Error(JSON.stringify(states))
      return true
    }, timeoutMs)
  }
}

/** The node's log lines (pino JSON on stderr) whose message matches. */
function logLines (node: NetnsNode, re: RegExp): Array<{ level: number, msg: string }> {
  return node.log().split('\n').filter(line => line.startsWith('{')).map(line => JSON.parse(line)).filter(entry => re.test(entry.msg ?? ''))
}

async function start (network: TestNetwork, index: number, name: string, env: Record<string, string>): Promise<NetnsNode> {
  const node = await startNetnsNode(network.hosts[index]!, name, { ...fast, ...env })
  nodes.push(node)
  return node
}

const clusterKeyOf = async (node: NetnsNode): Promise<string> => (await readFile(join(node.dataDir, 'keys', 'cluster.key'), 'utf8')).trim()

// ---- mDNS -------------------------------------------------------------------------------------

let mdnsNetwork: TestNetwork | undefined
let trio: NetnsNode[] = []

test('mDNS: 3 nodes in 3 namespaces with one cluster key and no bootstrap list find each other', { timeout: 90_000 }, async () => {
  mdnsNetwork = await createTestNetwork('m', 4)
  networks.push(mdnsNetwork)
  const first = await start(mdnsNetwork, 0, 'mdns-1', mdnsOn)
  const key = await clusterKeyOf(first)
  // The joiners are told nothing but the key: no admin password, no bootstrap list, no token.
  const joiners = await Promise.all([1, 2].map(async i => await start(mdnsNetwork!, i, `mdns-${i + 1}`, { ...mdnsOn, CORRAL_CLUSTER_KEY: key, CORRAL_ADMIN_PASSWORD: '' })))
  trio = [first, ...joiners]
  const token = await login(first)
  await everyNodeSeesAllAlive(trio, token)
  for (const node of trio) {
    const cluster = await call(node, 'GET', '/api/v1/cluster', { token })
    assert.equal(cluster.body.members.length, 3)
    // Each member is reached at its own namespace address, not loopback.
    assert.ok(cluster.body.self.multiaddrs.some((m: string) => m.startsWith(`/ip4/${node.host.addr}/tcp/`)), JSON.stringify(cluster.body.self))
  }
  // One cluster, one admin: the joiners found the founder by mDNS before deciding, so they made no
  // admin of their own (the same record id: a later one would replace the founder's password).
  for (const joiner of joiners) assert.deepEqual(logLines(joiner, /created the first admin user/), [], `${joiner.name} created an admin`)
  await eventually('every node holds the same users', async () => {
    const views = await Promise.all(trio.map(async n => JSON.stringify((await call(n, 'GET', '/api/v1/users', { token })).body.items)))
    return views.every(v => v === views[0]) ? true : undefined
  })
  for (const node of trio) {
    const users = await call(node, 'GET', '/api/v1/users', { token })
    assert.deepEqual(users.body.items.map((u: { username: string }) => u.username), ['admin'])
    await login(node)
  }
})

test('a node with another cluster key never joins, and its log says the keys differ', { timeout: 60_000 }, async () => {
  assert.equal(trio.length, 3, 'needs the mDNS cluster of the test before')
  const [first] = trio
  const token = await login(first!)
  const [bootstrap] = (await call(first!, 'GET', '/api/v1/cluster', { token })).body.self.multiaddrs as string[]
  // mDNS service tags are per cluster key, so mDNS alone never brings it near the cluster: it is
  // also given a member's address, so it really dials and fails the private-network handshake.
  const intruder = await start(mdnsNetwork!, 3, 'intruder', { ...mdnsOn, CORRAL_CLUSTER_KEY: generateClusterKey(), CORRAL_BOOTSTRAP: bootstrap! })
  const refused = await eventually('the intruder logs the failed handshake', async () => logLines(intruder, HANDSHAKE_FAILED)[0])
  assert.equal(refused.level, 40, 'a warning')
  assert.match(refused.msg, /same cluster key/)
  // The member it dialled says the same about the intruder's address.
  await eventually('the dialled member logs the refused peer', async () => logLines(first!, new RegExp(`${mdnsNetwork!.hosts[3]!.addr.replaceAll('.', '\\.')}/.*${HANDSHAKE_FAILED.source}`))[0])

  // 25 heartbeats later it is still in nobody's host list, and the cluster is whole.
  const until = Date.now() + 5000
  let rounds = 0
  while (Date.now() < until && rounds < 200) {
    rounds++
    for (const node of trio) {
      const states = await hostStates(node, token)
      assert.deepEqual(Object.keys(states).sort(), ['mdns-1', 'mdns-2', 'mdns-3'], `${node.name}: ${JSON.stringify(states)}`)
    }
    await new Promise(resolve => setTimeout(resolve, 250))
  }
  assert.ok(rounds > 1)
  await everyNodeSeesAllAlive(trio, token)
})

// ---- partition --------------------------------------------------------------------------------

/** Users, roles and API keys as a node serves them, for comparing nodes. */
async function authRecords (node: NetnsNode, token: string): Promise<{ users: any[], roles: any[], apiKeys: any[] }> {
  const get = async (path: string): Promise<any[]> => {
    const res = await call(node, 'GET', path, { token })
    if (res.status !== 200) throw new Error(`${path} on ${node.name}: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body.items
  }
  return { users: await get('/api/v1/users'), roles: await get('/api/v1/roles'), apiKeys: await get('/api/v1/api-keys') }
}

const usernames = (records: { users: Array<{ username: string }> }): string[] => records.users.map(u => u.username)

test('partition: both halves keep serving and writing; after the heal all 4 nodes agree and see each other alive', { timeout: 120_000 }, async () => {
  const network = await createTestNetwork('p', 4)
  networks.push(network)
  const p1 = await start(network, 0, 'p1', {})
  const key = await clusterKeyOf(p1)
  const adminP1 = await login(p1)
  const [bootstrap] = (await call(p1, 'GET', '/api/v1/cluster', { token: adminP1 })).body.self.multiaddrs as string[]
  const rest = await Promise.all([1, 2, 3].map(async i => await start(network, i, `p${i + 1}`, { CORRAL_CLUSTER_KEY: key, CORRAL_BOOTSTRAP: bootstrap!, CORRAL_ADMIN_PASSWORD: '' })))
  const all = [p1, ...rest]
  const [, p2, p3, p4] = all as [NetnsNode, NetnsNode, NetnsNode, NetnsNode]
  const left = [p1, p2]
  const right = [p3, p4]
  await everyNodeSeesAllAlive(all, adminP1)
  // Each node's token-signing key, written as it joined, reached every other node: a token from
  // any node works on all of them.
  for (const issuer of all) {
    const token = await login(issuer)
    for (const node of all) {
      await eventually(`a token from ${issuer.name} works on ${node.name}`, async () => (await call(node, 'GET', '/api/v1/hosts', { token })).status === 200 ? true : undefined)
    }
  }

  // Before the cut: a user everyone knows, which the two sides will then treat differently.
  assert.equal((await call(p1, 'POST', '/api/v1/users', { token: adminP1, body: { username: 'shared', password: 'shared-pass', roles: ['viewer'] } })).status, 201)
  for (const node of all) await eventually(`${node.name} knows user shared`, async () => usernames(await authRecords(node, adminP1)).includes('shared') ? true : undefined)

  // The cut: p3 and p4 move to a second bridge. Packets between the halves are dropped silently.
  await network.partition(right.map(n => n.host))
  for (const [side, other] of [[left, right], [right, left]] as const) {
    for (const node of side) {
      await eventually(`${node.name} sees its side alive and the other side suspect or dead`, async () => {
        const states = await hostStates(node, adminP1)
        const ok = side.every(n => states[n.name] === 'alive') && other.every(n => states[n.name] === 'suspect' || states[n.name] === 'dead')
        if (!ok) throw new Error(JSON.stringify(states))
        return true
      })
    }
  }

  // Both sides keep serving: fresh logins, new users and API keys on each side.
  const adminLeft = await login(p2)
  const adminRight = await login(p4)
  const lu = await call(p1, 'POST', '/api/v1/users', { token: adminLeft, body: { username: 'left-user', password: 'left-pass', roles: ['ci'] } })
  assert.equal(lu.status, 201, JSON.stringify(lu.body) + p1.log().slice(-3000))
  assert.equal((await call(p3, 'POST', '/api/v1/users', { token: adminRight, body: { username: 'right-user', password: 'right-pass', roles: ['ci'] } })).status, 201)
  const leftKey = await call(p2, 'POST', '/api/v1/api-keys', { token: adminLeft, body: { name: 'left-key' } })
  const rightKey = await call(p4, 'POST', '/api/v1/api-keys', { token: adminRight, body: { name: 'right-key' } })
  assert.equal(leftKey.status, 201)
  assert.equal(rightKey.status, 201)
  // Conflicts: the same role created with different claims on each side (the right side writes
  // last), and user "shared" deleted on the left while the right gives it an API key.
  const leftRole = await call(p1, 'POST', '/api/v1/roles', { token: adminLeft, body: { name: 'release', claims: ['vm:read'], description: 'left' } })
  assert.equal(leftRole.status, 201)
  assert.equal((await call(p2, 'DELETE', '/api/v1/users/shared', { token: adminLeft })).status, 204)
  const sharedKey = await call(p3, 'POST', '/api/v1/api-keys', { token: adminRight, body: { name: 'shared-key', username: 'shared' } })
  assert.equal(sharedKey.status, 201)
  const rightRole = await call(p4, 'POST', '/api/v1/roles', { token: adminRight, body: { name: 'release', claims: ['vm:read', 'host:read'], description: 'right' } })
  assert.equal(rightRole.status, 201)

  // Each side spreads its own writes within itself, and only there.
  await eventually('p2 has the left side\'s writes', async () => {
    const r = await authRecords(p2, adminLeft)
    return usernames(r).includes('left-user') && !usernames(r).includes('shared') && r.roles.some(x => x.description === 'left') ? true : undefined
  })
  await eventually('p3 has the right side\'s writes', async () => {
    const r = await authRecords(p3, adminRight)
    return usernames(r).includes('right-user') && r.apiKeys.some(k => k.name === 'shared-key') && r.roles.some(x => x.description === 'right') ? true : undefined
  })
  assert.ok(!usernames(await authRecords(p2, adminLeft)).includes('right-user'), 'the cut is real: the left side has not seen the right side\'s user')
  const sharedToken = await login(p4, 'shared', 'shared-pass')
  assert.equal((await call(p4, 'GET', '/api/v1/hosts', { token: sharedToken })).status, 200, 'user shared still works on the right side while cut')

  // The heal: every node sees every host alive again and all 4 hold the same records. The bound
  // (20 s) is under the 30 s periodic sync, so the records must come across because of the heal.
  await network.heal()
  await everyNodeSeesAllAlive(all, adminP1)
  const agreed = await eventually('all 4 nodes hold the same users, roles and API keys', async () => {
    const views = await Promise.all(all.map(async n => await authRecords(n, adminP1)))
    const first = JSON.stringify(views[0])
    const differ = views.findIndex(v => JSON.stringify(v) !== first)
    if (differ !== -1) throw new Error(`p1 and ${all[differ]!.name} differ:\n${first}\n${JSON.stringify(views[differ])}`)
    return views[0]!
  })
  assert.deepEqual(usernames(agreed), ['admin', 'left-user', 'right-user'], 'writes of both sides kept; the left side\'s delete of "shared" holds')
  const release = agreed.roles.find(r => r.name === 'release')
  assert.deepEqual({ claims: release.claims, description: release.description }, { claims: ['vm:read', 'host:read'], description: 'right' }, 'the later write wins')
  assert.deepEqual(agreed.apiKeys.map(k => k.name).sort(), ['left-key', 'right-key', 'shared-key'])
  // The key made for "shared" on the right side outlived its user but opens nothing anywhere; the
  // other keys work on every node.
  for (const node of all) {
    assert.equal((await call(node, 'POST', '/api/v1/auth/token', { body: { apiKey: sharedKey.body.apiKey } })).status, 401, `shared-key on ${node.name}`)
    assert.equal((await call(node, 'POST', '/api/v1/auth/token', { body: { apiKey: leftKey.body.apiKey } })).status, 200, `left-key on ${node.name}`)
    assert.equal((await call(node, 'POST', '/api/v1/auth/token', { body: { apiKey: rightKey.body.apiKey } })).status, 200, `right-key on ${node.name}`)
    await login(node, 'right-user', 'right-pass')
  }
})
