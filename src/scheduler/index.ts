export { HostAgent, type HostAgentComponents, type HostAgentInit, type CreateVmRequest, type ExecOptions, type HostInfo } from './host/host-agent.ts'
export type { VmRecord, VmEvent } from './host/vm-record.ts'
export { vmStates, vmActions, canDo, type VmState, type VmAction } from './host/vm-state.ts'
export { ReservationLedger, type Resources, type Admission } from './host/reservations.ts'
export * from './errors.ts'

import type { HostAgent } from './host/host-agent.ts'
/** What the API needs from whoever runs VMs: this host now, the cluster once the mesh routes requests. */
export type VmService = Pick<HostAgent, 'list' | 'get' | 'create' | 'act' | 'delete' | 'exec' | 'forwardPort' | 'info' | 'addEventListener' | 'removeEventListener'>
