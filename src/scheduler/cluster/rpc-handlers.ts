import type { Logger } from 'pino'
import type { MeshNode } from '../../node/index.ts'
import type { HostAgent } from '../host/host-agent.ts'
import type { LifecycleAction } from '../types.ts'

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
