import { CorralError } from '../errors.ts'

/** No usable hypervisor: says which were looked for and how to install one or ask for sim. */
export class DriverUnavailableError extends CorralError {
  override name = 'DriverUnavailableError'
}

/** The driver has no VM with that id (the hypervisor lost it, or it was never created). */
export class VmNotFoundInDriverError extends CorralError {
  override name = 'VmNotFoundInDriverError'
}

/** A path registered as an image is not something this driver can clone. */
export class ImageInvalidError extends CorralError {
  override name = 'ImageInvalidError'
}

/** The hypervisor refused or failed an operation; the message carries its own words. */
export class HypervisorError extends CorralError {
  override name = 'HypervisorError'
}

/** exec ran past its timeout; the command was killed where the guest allows it. */
export class ExecTimeoutError extends CorralError {
  override name = 'ExecTimeoutError'
}

/** The guest cannot take commands (agent not running or not answering). */
export class GuestAgentUnavailableError extends CorralError {
  override name = 'GuestAgentUnavailableError'
}

/** The hypervisor's license forbids the operation (edition without CLI, expired, running-VM limit). */
export class HypervisorLicenseError extends CorralError {
  override name = 'HypervisorLicenseError'
}

/** The host has too little free disk for the operation (clone, start, snapshot). */
export class HostDiskFullError extends CorralError {
  override name = 'HostDiskFullError'
}

/** The guest agent answered with an error (unknown command, bad arguments); the message carries its words. */
export class GuestAgentCommandError extends CorralError {
  override name = 'GuestAgentCommandError'
}
