/**
 * The VM state machine. Pure: the host agent asks it whether an action is allowed and which states
 * the VM passes through; nothing here does I/O.
 */
/** `queued` exists only on the node that accepted a request the cluster cannot place yet. */
export const vmStates = ['queued', 'creating', 'stopped', 'starting', 'running', 'suspended', 'stopping', 'deleting', 'failed'] as const
export type VmState = typeof vmStates[number]

export const vmActions = ['start', 'stop', 'suspend', 'resume', 'restart', 'delete', 'exec'] as const
export type VmAction = typeof vmActions[number]

interface ActionRule {
  /** States the action may begin in. */
  from: readonly VmState[]
  /** The transitional state shown while it runs (undefined: no visible transition). */
  via?: VmState
  /** The state it ends in when the driver succeeds. */
  to?: VmState
}

export const actionRules: Record<VmAction, ActionRule> = {
  start: { from: ['stopped', 'failed'], via: 'starting', to: 'running' },
  stop: { from: ['running', 'suspended'], via: 'stopping', to: 'stopped' },
  suspend: { from: ['running'], to: 'suspended' },
  resume: { from: ['suspended'], via: 'starting', to: 'running' },
  restart: { from: ['running'], via: 'starting', to: 'running' },
  delete: { from: ['queued', 'stopped', 'running', 'suspended', 'failed'], via: 'deleting' },
  exec: { from: ['running'] }
}

export const isTransitional = (state: VmState): boolean =>
  state === 'creating' || state === 'starting' || state === 'stopping' || state === 'deleting'

export function canDo (action: VmAction, state: VmState): boolean {
  return actionRules[action].from.includes(state)
}

/** Why an action is refused, in words that tell the caller what to do instead. */
export function refusal (action: VmAction, state: VmState, id: string): string {
  const allowed = actionRules[action].from.join(', ')
  const hint = isTransitional(state)
    ? `wait until it is no longer ${state} (GET /api/v1/vms/${id} or the events websocket shows when)`
    : action === 'exec' ? 'start it first' : `it must be ${allowed}`
  return `cannot ${action} VM ${id} while it is ${state}: ${hint}`
}
