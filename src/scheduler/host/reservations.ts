/**
 * The host's ledger of resources held by its VMs. Pure and synchronous, so "check and take" is
 * atomic within the process: a host never admits more than it has, whoever asked.
 */
export interface Resources {
  cpus: number
  memoryMiB: number
  diskMiB: number
}

export type Admission = { ok: true } | { ok: false, short: Partial<Resources>, message: string }

export class ReservationLedger {
  private readonly held = new Map<string, Resources>()
  private capacityValue: Resources

  constructor (capacity: Resources) {
    this.capacityValue = { ...capacity }
  }

  get capacity (): Resources {
    return { ...this.capacityValue }
  }

  setCapacity (capacity: Resources): void {
    this.capacityValue = { ...capacity }
  }

  used (): Resources {
    const used = { cpus: 0, memoryMiB: 0, diskMiB: 0 }
    for (const r of this.held.values()) {
      used.cpus += r.cpus
      used.memoryMiB += r.memoryMiB
      used.diskMiB += r.diskMiB
    }
    return used
  }

  free (): Resources {
    const used = this.used()
    return {
      cpus: this.capacityValue.cpus - used.cpus,
      memoryMiB: this.capacityValue.memoryMiB - used.memoryMiB,
      diskMiB: this.capacityValue.diskMiB - used.diskMiB
    }
  }

  /** Takes the reservation if it fits, or says exactly what is short. */
  reserve (id: string, want: Resources): Admission {
    if (this.held.has(id)) return { ok: true }
    const free = this.free()
    const short: Partial<Resources> = {}
    for (const key of ['cpus', 'memoryMiB', 'diskMiB'] as const) {
      if (want[key] > free[key]) short[key] = want[key] - free[key]
    }
    if (Object.keys(short).length > 0) {
      const parts = Object.entries(short).map(([k, v]) => `${k} short by ${v} (asked ${want[k as keyof Resources]}, free ${free[k as keyof Resources]})`)
      return { ok: false, short, message: `this host cannot admit the VM: ${parts.join(', ')}; ask for less or free resources by deleting VMs` }
    }
    this.held.set(id, { ...want })
    return { ok: true }
  }

  /** Re-takes a reservation recorded before a restart, even past capacity (what exists exists). */
  restore (id: string, held: Resources): void {
    this.held.set(id, { ...held })
  }

  release (id: string): void {
    this.held.delete(id)
  }

  holds (id: string): boolean {
    return this.held.has(id)
  }
}
