// The repairer: every `interval`, reconciles the kernel against the known peers (putting back
// what was deleted by hand or lost with a recreated device). The traffic rules have their own
// period and service (RuleResync), so a held iptables lock never delays this.

import Logging
import Metrics
import Overlay
import ServiceLifecycle

public struct Repairer: Service {
    let network: any OverlayNetwork
    let state: NodeState
    /// The lease keeper's events: a recreated device with a new MAC needs the lease put again.
    let keeper: AsyncStream<KeeperEvent>.Continuation
    let interval: Duration
    let threads: BlockingThreads
    let clock: any Clock<Duration>
    let logger: Logger

    public init(
        network: any OverlayNetwork, state: NodeState,
        keeper: AsyncStream<KeeperEvent>.Continuation, interval: Duration, threads: BlockingThreads,
        clock: any Clock<Duration>, logger: Logger
    ) {
        self.network = network; self.state = state; self.keeper = keeper
        self.interval = interval; self.threads = threads; self.clock = clock; self.logger = logger
    }

    public func run() async throws {
        let repairs = Counter(label: "podnet_repairs_total")
        let network = self.network
        await every(interval, on: clock) {
            do {
                let peers = await state.currentPeers
                let report = try await threads.kernel { try network.reconcile(peers: peers) }
                if report.leaseAttributesChanged { keeper.yield(.leaseOverwritten) }
                let changed = report.programmed.total + report.removed.total
                if changed > 0 || report.deviceRecreated {
                    repairs.increment(by: Int64(changed))
                    logger.warning(
                        "repaired the kernel state",
                        metadata: [
                            "repair.programmed": "\(report.programmed.total)",
                            "repair.removed": "\(report.removed.total)",
                            "repair.device_recreated": "\(report.deviceRecreated)",
                        ])
                }
            } catch {
                logger.error("repair failed: \(error)")
            }
        }
    }
}

/// Runs `body` every `interval` until the graceful shutdown, which also ends the sleep between
/// two runs: SIGTERM must not wait out the interval.
func every(_ interval: Duration, on clock: any Clock<Duration>, _ body: () async -> Void) async {
    while true {
        do {
            try await cancelWhenGracefulShutdown { try await clock.sleep(for: interval) }
        } catch { return }
        if Task.isShuttingDownGracefully { return }
        await body()
    }
}
