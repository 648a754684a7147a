import { createRequire } from 'node:module'
import type TableType from 'cli-table3'

// cli-table3 loads on the first table printed, not at start-up: a long-running node never prints one.
let loaded: typeof TableType | undefined
const Table = (): typeof TableType => (loaded ??= createRequire(import.meta.url)('cli-table3') as typeof TableType)

/** Prints rows as a table for people, or the raw value as JSON for scripts. */
export function printRows (rows: Array<Record<string, unknown>>, columns: string[], json: boolean, raw: unknown = rows): void {
  if (json) {
    process.stdout.write(JSON.stringify(raw, null, 2) + '\n')
    return
  }
  if (rows.length === 0) {
    process.stdout.write('(none)\n')
    return
  }
  const table = new (Table())({ head: columns.map(c => c.toUpperCase()), style: { head: [], border: [] } })
  for (const row of rows) table.push(columns.map(c => format(row[c])))
  process.stdout.write(table.toString() + '\n')
}

export function printObject (value: Record<string, unknown>, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(value, null, 2) + '\n')
    return
  }
  const table = new (Table())({ style: { head: [], border: [] } })
  for (const [k, v] of Object.entries(value)) table.push({ [k]: format(v) })
  process.stdout.write(table.toString() + '\n')
}

function format (value: unknown): string {
  if (value == null) return ''
  if (Array.isArray(value)) return value.map(v => typeof v === 'object' ? JSON.stringify(v) : String(v)).join(', ')
  if (typeof value === 'object') return Object.entries(value).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ')
  return String(value)
}
