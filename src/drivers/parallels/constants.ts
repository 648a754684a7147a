/** Every VM corral clones is named `corral-<id>`, so list() never reports VMs a person made by hand. */
export const VM_NAME_PREFIX = 'corral-'

/** Parallels Desktop majors whose prlctl/prlsrvctl output the parser and fixtures follow. */
export const TESTED_MAJOR_VERSIONS = [19, 20]

/** Graceful `prlctl stop` gets this long before the VM is killed (prlctl's own shutdown wait is 120 s). */
export const DEFAULT_STOP_TIMEOUT_MS = 120_000

/** Bound for quick prlctl calls (list, set, start, suspend...). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 300_000

/** A full clone of a large macOS VM copies tens of gigabytes. */
export const DEFAULT_CLONE_TIMEOUT_MS = 3_600_000

/** After SIGTERM a child gets this long to exit (prlctl cancels its guest job) before SIGKILL. */
export const KILL_GRACE_MS = 5_000

/** Where Parallels' Shared-network DHCP server records leases (used when Parallels Tools report no IP). */
export const DEFAULT_DHCP_LEASES_PATH = '/Library/Preferences/Parallels/parallels_dhcp_leases'

/** Left for macOS and Parallels itself when capacity() reports what VMs may use. */
export const DEFAULT_RESERVE = { cpus: 1, memoryMiB: 4096, diskMiB: 20_480 }

/** Some guests report more output than any CI log needs; exec keeps the tail beyond this. */
export const MAX_EXEC_OUTPUT_BYTES = 64 * 1024 * 1024
