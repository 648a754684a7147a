import type { Logger } from 'pino'
import type { Member, MeshNode } from '../../node/index.ts'
import { verifyPlacement } from '../placement/index.ts'
import { InsufficientCapacityError, StaleLeaderError } from '../errors.ts'
import { leaseHolder } from '../leader/leader-election.ts'
import type { PendingVm } from './pending.ts'
import { hostsSnapshot } from './snapshot.ts'
import type { StatePublisher } from './state-publisher.ts'
import type { HostAgent } from '../host/host-agent.ts'
import type { LifecycleAction } from '../types.ts'
import type { VmRecord } from '../host/vm-record.ts'

/** RPC method names a gateway node uses to reach the host that owns a VM. */
export const VM_RPC = {
  get: 'vm.get',
  act: 'vm.act',
  delete: 'vm.delete',
  exec: 'vm.exec',
  forwardPort: 'vm.forward-port'
} as const

export interface ExecFrame {
  stream: 'stdout' | 'stderr'
  /** base64, so binary output survives JSON. */
  data: string
}

interface Caller { caller: string }

/**
 * Serves the VM operations other nodes forward here. The gateway already authenticated and
 * authorised the caller; the mesh only admits nodes holding the cluster key.
 */
export function registerVmRpc (mesh: MeshNode, host: HostAgent, logger: Logger): void {
  mesh.handleRpc<{ id: string } & Caller>(VM_RPC.get, ({ id }) => host.get(String(id)))
  mesh.handleRpc<{ id: string, action: LifecycleAction } & Caller>(VM_RPC.act, async ({ id, action, caller }) => {
    logger.info({ vm: id, action, caller }, 'forwarded VM action')
    return await host.act(String(id), action)
  })
  mesh.handleRpc<{ id: string } & Caller>(VM_RPC.delete, async ({ id, caller }) => {
    logger.info({ vm: id, caller }, 'forwarded VM delete')
    await host.delete(String(id))
    return { deleted: true }
  })
  mesh.handleRpc<{ id: string, guestPort: number } & Caller>(VM_RPC.forwardPort, async ({ id, guestPort }) => await host.forwardPort(String(id), Number(guestPort)))
  mesh.handleRpc<{ id: string, command: string[], env?: Record<string, string>, timeoutSeconds?: number } & Caller>(VM_RPC.exec, async (body, ctx) => {
    logger.info({ vm: body.id, caller: body.caller }, 'forwarded exec')
    // Output frames are sent in order; each send waits for the caller (backpressure).
    let pending: Promise<void> = Promise.resolve()
    const result = await host.exec(String(body.id), {
      command: body.command,
      env: body.env,
      timeoutSeconds: body.timeoutSeconds,
      signal: ctx.signal,
      onOutput: (stream, chunk) => {
        const frame: ExecFrame = { stream, data: Buffer.from(chunk).toString('base64') }
        pending = pending.then(async () => await ctx.send(frame)).catch(() => undefined)
      }
    })
    await pending
    return result
  })
}

/**
 * A host's answer to host.admit, with the host's heartbeat as of the admission: in a large cluster
 * its state is broadcast only with its next heartbeat, and the leader needs it fresh to place the next.
 */
export interface Admitted { vm: VmRecord, vmsVersion: number, heartbeat?: unknown }

/**
 * The host's admission of a VM the leader planned for it: re-check the plan against this host's
 * fresh state, then take the reservation (HostAgent.create reserves atomically or refuses).
 * The same id twice is admitted once, so a retrying or replaced leader cannot double a VM.
 */
export function registerAdmission (mesh: MeshNode, host: HostAgent, publisher: StatePublisher, logger: Logger): void {
  mesh.handleRpc<{ pending: PendingVm }>('host.admit', async ({ pending }, ctx) => {
    const self = mesh.self()
    // With the VM feed's version that includes it: the leader counts the VM against this host
    // until gossip shows free figures of that version or later.
    if (host.has(pending.id)) return admitted(host.get(pending.id))
    // Fencing: only the leader this host's lease record names may place here. A leader that lost
    // the lease (a healed partition) may still be mid-pass over a queue the new leader also has.
    const holder = leaseHolder(mesh)
    if (holder != null && holder !== ctx.peerId) {
      throw new StaleLeaderError(`host ${self.nodeName} takes placements only from the scheduler leader its lease names (${mesh.member(holder)?.nodeName ?? holder}), not from ${mesh.member(ctx.peerId)?.nodeName ?? ctx.peerId}`, { leader: holder, caller: ctx.peerId })
    }
    const [me] = hostsSnapshot([{ peerId: self.peerId, nodeName: self.nodeName } as Member], { peerId: self.peerId, state: publisher.current() })
    const verdict = verifyPlacement(pending.request, me)
    if (!verdict.ok) throw new InsufficientCapacityError(verdict.message, { reasons: verdict.reasons })
    const { vm } = await host.create({
      id: pending.id,
      image: pending.request.image,
      name: pending.request.name,
      cpus: verdict.resources.cpus,
      memoryMiB: verdict.resources.memoryMiB,
      labels: pending.request.vmLabels,
      start: pending.request.start,
      owner: pending.request.owner
    })
    logger.info({ vm: vm.id, owner: pending.request.owner, gateway: pending.gatewayName }, 'admitted a VM placed by the scheduler')
    return admitted(vm)
  })

  function admitted (vm: VmRecord): Admitted {
    publisher.publishNow()
    return { vm, vmsVersion: publisher.vms.version(), heartbeat: mesh.currentHeartbeat() }
  }
}
