import type { Logger } from 'pino'
import type { ExecResult, PortForward } from '../../drivers/types.ts'
import type { Member, MeshNode } from '../../node/index.ts'
import { CorralError } from '../../errors.ts'
import type { CreateVmRequest, ExecOptions, HostAgent } from '../host/host-agent.ts'
import type { VmEvent, VmRecord } from '../host/vm-record.ts'
import type { LocalImages } from '../../catalog/index.ts'
import { VmNotFoundError } from '../errors.ts'
import type { HostView, LifecycleAction, VmService } from '../types.ts'
import { asHostState } from './published-state.ts'
import { VM_RPC, type ExecFrame } from './rpc-handlers.ts'

/** How long a gateway asks around for a VM gossip has not told it about yet. */
const LOOKUP_TIMEOUT_MS = 5_000

/**
 * An error the owning host raised, re-raised here under the host's own error name, so the API maps
 * it exactly as if the VM were local (404, 409...).
 */
export class ForwardedError extends CorralError {
  constructor (name: string, message: string, details: Record<string, unknown>) {
    super(message, details)
    this.name = name
  }
}

export interface ClusterVmsComponents {
  host: HostAgent
  images: LocalImages
  mesh: MeshNode
  logger: Logger
}

type Owner = { local: true } | { local: false, member: Member }

/**
 * The VM service of a node in a mesh: every VM route works on every node. VMs on this host go to
 * the host agent; others are forwarded over libp2p to the host that owns them, with the caller's
 * identity, and their events are relayed from the owners' gossiped state.
 */
export class ClusterVms extends EventTarget implements VmService {
  private readonly c: ClusterVmsComponents
  /** Last VM states seen per remote host, to turn gossip updates into events. */
  private readonly seen = new Map<string, Map<string, VmRecord>>()
  private readonly relayLocal = (event: Event): void => { this.dispatchEvent(new CustomEvent('vm', { detail: (event as CustomEvent<VmEvent>).detail })) }
  private readonly onMember = (member: Member): void => { this.relayRemote(member) }

  constructor (components: ClusterVmsComponents) {
    super()
    this.c = components
  }

  start (): void {
    this.c.host.addEventListener('vm', this.relayLocal)
    this.c.mesh.on('member:join', this.onMember)
    this.c.mesh.on('member:update', this.onMember)
  }

  stop (): void {
    this.c.host.removeEventListener('vm', this.relayLocal)
    this.c.mesh.off('member:join', this.onMember)
    this.c.mesh.off('member:update', this.onMember)
  }

  list (): VmRecord[] {
    const all = [...this.c.host.list()]
    for (const member of this.remoteMembers()) {
      if (member.status === 'dead') continue
      all.push(...(asHostState(member.state)?.vms ?? []))
    }
    return all.sort((a, b) => a.createdAt.localeCompare(b.createdAt))
  }

  async get (id: string): Promise<VmRecord> {
    const owner = await this.owner(id)
    if (owner.local) return this.c.host.get(id)
    return await this.call<VmRecord>(owner.member, VM_RPC.get, { id })
  }

  async create (request: CreateVmRequest): Promise<{ vm: VmRecord, done: Promise<VmRecord> }> {
    // Placement across hosts comes with the scheduler; until then the gateway's own host runs it.
    return await this.c.host.create(request)
  }

  async act (id: string, action: LifecycleAction, caller = ''): Promise<VmRecord> {
    const owner = await this.owner(id)
    if (owner.local) return await this.c.host.act(id, action)
    return await this.call<VmRecord>(owner.member, VM_RPC.act, { id, action, caller })
  }

  async delete (id: string, caller = ''): Promise<void> {
    const owner = await this.owner(id)
    if (owner.local) return await this.c.host.delete(id)
    await this.call(owner.member, VM_RPC.delete, { id, caller })
  }

  async forwardPort (id: string, guestPort: number): Promise<PortForward> {
    const owner = await this.owner(id)
    if (owner.local) return await this.c.host.forwardPort(id, guestPort)
    return await this.call<PortForward>(owner.member, VM_RPC.forwardPort, { id, guestPort })
  }

  async exec (id: string, options: ExecOptions & { caller?: string }): Promise<ExecResult> {
    const owner = await this.owner(id)
    if (owner.local) return await this.c.host.exec(id, options)
    const body = { id, command: options.command, env: options.env, timeoutSeconds: options.timeoutSeconds, caller: options.caller ?? '' }
    const timeoutMs = ((options.timeoutSeconds ?? 3600) + 30) * 1000
    try {
      const frames = this.c.mesh.requestStream<ExecFrame, ExecResult>(owner.member.peerId, VM_RPC.exec, body, { signal: options.signal, timeoutMs })
      while (true) {
        const next = await frames.next()
        if (next.done === true) return next.value
        options.onOutput?.(next.value.stream, Buffer.from(next.value.data, 'base64'))
      }
    } catch (err) {
      throw this.translate(err, owner.member)
    }
  }

  async hosts (): Promise<HostView[]> {
    const ownImages = (await this.c.images.list()).map(i => i.name)
    const views: HostView[] = []
    for (const member of this.c.mesh.members()) {
      const published = member.self ? undefined : asHostState(member.state)
      const info = member.self ? this.c.host.info() : published?.host
      if (info == null) continue
      views.push({
        ...info,
        name: member.nodeName !== '' ? member.nodeName : info.name,
        state: member.status,
        peerId: member.peerId,
        images: member.self ? ownImages : published?.images ?? [],
        self: member.self,
        lastSeen: new Date(member.lastSeen).toISOString()
      })
    }
    return views.sort((a, b) => a.name.localeCompare(b.name))
  }

  /** This host, a member whose gossip lists the VM, or (gossip lagging) whoever answers for it. */
  private async owner (id: string): Promise<Owner> {
    if (this.c.host.list().some(v => v.id === id)) return { local: true }
    const remote = this.remoteMembers()
    const gossiped = remote.find(m => asHostState(m.state)?.vms.some(v => v.id === id) === true)
    if (gossiped != null) return { local: false, member: gossiped }
    const asked = remote.filter(m => m.status !== 'dead').map(async member => {
      await this.c.mesh.request(member.peerId, VM_RPC.get, { id }, { timeoutMs: LOOKUP_TIMEOUT_MS })
      return member
    })
    try {
      return { local: false, member: await Promise.any(asked) }
    } catch {
      throw new VmNotFoundError(`no VM with id ${id} on any host of the cluster; GET /api/v1/vms lists the VMs that exist`, { id })
    }
  }

  private async call<T> (member: Member, method: string, body: unknown): Promise<T> {
    try {
      return await this.c.mesh.request<T>(member.peerId, method, body)
    } catch (err) {
      throw this.translate(err, member)
    }
  }

  private translate (err: unknown, member: Member): Error {
    const e = err as CorralError
    if (e?.name === 'RpcRemoteError') {
      const remote = (e.details.remote ?? {}) as { name?: string, message?: string, details?: Record<string, unknown> }
      return new ForwardedError(remote.name ?? 'RpcRemoteError', remote.message ?? e.message, { ...(remote.details ?? {}), host: member.nodeName })
    }
    if (e?.name === 'PeerUnavailableError') {
      return new ForwardedError('PeerUnavailableError', `host ${member.nodeName} (${member.peerId}) that runs this VM is unavailable (${member.status}); retry when it is back, or delete the VM once it is`, { host: member.nodeName, peerId: member.peerId })
    }
    return err as Error
  }

  private remoteMembers (): Member[] {
    return this.c.mesh.members().filter(m => !m.self)
  }

  /** Turns a host's new gossiped VM list into the same events local VMs produce. */
  private relayRemote (member: Member): void {
    if (member.self) return
    const state = asHostState(member.state)
    if (state == null) return
    const before = this.seen.get(member.peerId) ?? new Map<string, VmRecord>()
    const after = new Map(state.vms.map(v => [v.id, v]))
    const at = new Date().toISOString()
    for (const vm of after.values()) {
      const previous = before.get(vm.id)
      if (previous?.state !== vm.state) this.dispatchEvent(new CustomEvent('vm', { detail: { type: 'vm.state', vm, previous: previous?.state, at } satisfies VmEvent }))
    }
    for (const [id, vm] of before) {
      if (!after.has(id)) this.dispatchEvent(new CustomEvent('vm', { detail: { type: 'vm.deleted', vm, previous: vm.state, at } satisfies VmEvent }))
    }
    this.seen.set(member.peerId, after)
  }
}
