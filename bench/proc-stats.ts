import { readFileSync } from 'node:fs'

/**
 * CPU seconds (user + system) a process has used so far, from /proc. On a shared machine wall-clock
 * rates move with the load; CPU per operation is the figure that stays put.
 */
export function cpuSeconds (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** The machine's 1-minute load average and core count, printed beside figures it affects. */
export function machineLoad (): string {
  const [one] = readFileSync('/proc/loadavg', 'utf8').split(' ')
  const cores = readFileSync('/proc/cpuinfo', 'utf8').split('\n').filter(l => l.startsWith('processor')).length
  return `load average ${one} on ${cores} cores`
}
