import { CorralError } from '../errors.ts'

/** No VM with that id on this host. */
export class VmNotFoundError extends CorralError {
  override name = 'VmNotFoundError'
}

/** The action is not allowed in the VM's current state (details.state names it). */
export class InvalidVmStateError extends CorralError {
  override name = 'InvalidVmStateError'
}

/** The host cannot admit the VM: details.short lists what is missing. */
export class InsufficientCapacityError extends CorralError {
  override name = 'InsufficientCapacityError'
}

/** A VM with that name already exists. */
export class VmNameTakenError extends CorralError {
  override name = 'VmNameTakenError'
}

/** The request is understood but cannot be done as asked (e.g. exec timeout above the maximum). */
export class VmRequestError extends CorralError {
  override name = 'VmRequestError'
}

/** A placement came from a node this host does not know as the scheduler leader (an outdated one). */
export class StaleLeaderError extends CorralError {
  override name = 'StaleLeaderError'
}
