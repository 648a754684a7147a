export { HostAgent, type HostAgentComponents, type HostAgentInit, type CreateVmRequest, type ExecOptions, type HostInfo } from './host/host-agent.ts'
export type { VmRecord, VmEvent } from './host/vm-record.ts'
export { vmStates, vmActions, canDo, type VmState, type VmAction } from './host/vm-state.ts'
export { ReservationLedger, type Resources, type Admission } from './host/reservations.ts'
export * from './errors.ts'

export type { VmService, VmCreateRequest, HostView, Awaitable, LifecycleAction } from './types.ts'
