/** Counters behind mesh.metrics(). Plain numbers: cheap enough to bump on every message. */
import type { DropReason, MeshMetrics, TrafficChannel } from './types.ts'

type Counter = 'heartbeatsReceived' | 'recordsApplied' | 'syncRuns' | 'syncFailures' | 'rpcServed' | 'rpcFailed' | 'privateNetworkRejected' | 'feedDeltasApplied' | 'feedSnapshotsFetched' | 'connectionPingsAnswered' | 'halfOpenConnectionsClosed'

export class MeshCounters {
  private readonly accepted: Record<TrafficChannel, number> = { gossip: 0, sync: 0, rpc: 0 }
  private readonly dropped: Record<TrafficChannel, number> = { gossip: 0, sync: 0, rpc: 0 }
  private readonly reasons = new Map<string, number>()
  private readonly counters: Record<Counter, number> = {
    heartbeatsReceived: 0, recordsApplied: 0, syncRuns: 0, syncFailures: 0, rpcServed: 0, rpcFailed: 0, privateNetworkRejected: 0, feedDeltasApplied: 0, feedSnapshotsFetched: 0, connectionPingsAnswered: 0, halfOpenConnectionsClosed: 0
  }

  accept (channel: TrafficChannel): void {
    this.accepted[channel]++
  }

  drop (channel: TrafficChannel, reason: DropReason): void {
    this.dropped[channel]++
    const key = `${channel}.${reason}`
    this.reasons.set(key, (this.reasons.get(key) ?? 0) + 1)
  }

  inc (counter: Counter, by = 1): void {
    this.counters[counter] += by
  }

  snapshot (): MeshMetrics {
    return {
      accepted: { ...this.accepted },
      dropped: { ...this.dropped },
      dropReasons: Object.fromEntries(this.reasons),
      ...this.counters
    }
  }
}
