import type { ApiComponents } from '../components.ts'
import type { RouteDef } from '../route.ts'
import { VmRequestError } from '../../scheduler/index.ts'
import { catalogUser } from './catalog.ts'
import { CreateVm, ExecRequest, ExecResult, Host, IdParams, Image, listOf, RegisterImage, Vm, VmActionParams, WaitQuery } from '../schemas.ts'

/** Images, VMs and hosts. */
export function vmRoutes ({ vms, images, catalog }: ApiComponents): RouteDef[] {
  return [
    {
      method: 'get', path: '/api/v1/images', claim: 'image:read', tag: 'images', summary: 'List the images VMs can be created from',
      success: { status: 200, schema: listOf(Image), description: 'images on this host' },
      handler: async () => ({ body: { items: await images.list() } })
    },
    {
      method: 'post', path: '/api/v1/images', claim: 'image:write', tag: 'images', summary: 'Register a local image by path',
      body: RegisterImage, success: { status: 201, schema: Image, description: 'the registered image' },
      handler: async ({ body, principal }) => ({ status: 201, body: await images.register(body.name, body.path, principal.subject) })
    },
    {
      method: 'get', path: '/api/v1/vms', claim: 'vm:read', tag: 'vms', summary: 'List VMs',
      success: { status: 200, schema: listOf(Vm), description: 'every VM' },
      handler: async () => ({ body: { items: await vms.list() } })
    },
    {
      method: 'post', path: '/api/v1/vms', claim: 'vm:write', tag: 'vms', summary: 'Create a VM from an image (booted unless start is false)',
      body: CreateVm, query: WaitQuery,
      success: { status: 201, schema: Vm, description: 'the VM: creating (placed on a host) or queued (with queuePosition); with ?wait=true its state once booted (running) or failed. dryRun answers 200 with the placement explanation instead' },
      handler: async ({ body, query, principal, ctx }) => {
        const { dryRun, ...request } = body
        // A catalog image: checked against the caller's claims, pinned to the version it means now.
        if (catalog != null) request.image = catalog.service.imageForVm(request.image, catalogUser(principal), request.arch)
        if (dryRun === true) {
          if (vms.explain == null) throw new VmRequestError('dryRun needs the cluster scheduler, which this node does not run')
          return { status: 200, body: vms.explain({ ...request, owner: principal.subject }) }
        }
        const { vm, settled } = await vms.create({ ...request, owner: principal.subject })
        ctx.set('location', `/api/v1/vms/${vm.id}`)
        return { status: 201, body: query.wait === 'true' ? await settled() : vm }
      }
    },
    {
      method: 'get', path: '/api/v1/vms/:id', claim: 'vm:read', tag: 'vms', summary: 'Get a VM',
      params: IdParams, success: { status: 200, schema: Vm, description: 'the VM' },
      handler: async ({ params }) => ({ body: await vms.get(params.id) })
    },
    {
      method: 'delete', path: '/api/v1/vms/:id', claim: 'vm:write', tag: 'vms', summary: 'Delete a VM (stopping it first if it runs)',
      params: IdParams, success: { status: 204, description: 'deleted; its resources are free' },
      handler: async ({ params, principal }) => { await vms.delete(params.id, principal.subject); return { status: 204 } }
    },
    {
      method: 'post', path: '/api/v1/vms/:id/exec', claim: 'vm:exec', tag: 'vms',
      summary: 'Run a command in a VM and wait for it (the websocket form at the same path streams output)',
      params: IdParams, body: ExecRequest, success: { status: 200, schema: ExecResult, description: 'exit code and output' },
      handler: async ({ params, body, ctx, principal }) => {
        const abort = new AbortController()
        ctx.req.once('close', () => { if (!ctx.res.writableEnded) abort.abort() })
        return { body: await vms.exec(params.id, { ...body, signal: abort.signal, caller: principal.subject }) }
      }
    },
    {
      method: 'post', path: '/api/v1/vms/:id/:action', claim: 'vm:write', tag: 'vms', summary: 'start, stop, suspend, resume or restart a VM',
      params: VmActionParams, success: { status: 200, schema: Vm, description: 'the VM in its new state' },
      handler: async ({ params, principal }) => ({ body: await vms.act(params.id, params.action, principal.subject) })
    },
    {
      method: 'get', path: '/api/v1/hosts', claim: 'host:read', tag: 'hosts', summary: 'List hosts with capacity and VMs',
      success: { status: 200, schema: listOf(Host), description: 'every host of the cluster, with its state, capacity, VMs and images' },
      handler: async () => ({ body: { items: await vms.hosts() } })
    }
  ]
}
