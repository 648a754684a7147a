/** How long the guest gets to power off after the ACPI power button before qemu is told to quit. */
export const DEFAULT_STOP_TIMEOUT_MS = 20_000
/** After `quit` (or SIGKILL), how long to wait for the process to go. */
export const QUIT_TIMEOUT_MS = 5_000
/** qemu -daemonize returns once devices and sockets exist; this bounds a hung start. */
export const SPAWN_TIMEOUT_MS = 60_000
export const QMP_CONNECT_TIMEOUT_MS = 10_000
/** A QMP command that does not answer in this time is a hung qemu. */
export const QMP_COMMAND_TIMEOUT_MS = 15_000
/** After the QMP socket closes, how long the process may take to disappear. */
export const EXIT_CONFIRM_MS = 5_000
/** Tries at picking free loopback ports when another process grabs one first. */
export const PORT_ATTEMPTS = 3
/** Given to guest commands when a request sets env (qemu-ga then replaces the whole environment). */
export const DEFAULT_GUEST_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
/** Lines of the console log quoted when a guest does not come up. */
export const CONSOLE_TAIL_LINES = 15
