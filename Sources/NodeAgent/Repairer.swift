// The repairer: every `interval`, reconciles the kernel against the known peers (putting back
// what was deleted by hand or lost with a recreated device) and checks the rules it keeps (the
// masquerade rules). Each on its own thread: a held iptables lock delays the rules only.

import Logging
import Metrics
import Overlay
import ServiceLifecycle

public struct Repairer: Service {
    let network: any OverlayNetwork
    let state: NodeState
    let rules: (any RuleKeeper)?
    /// The lease keeper's events: a recreated device with a new MAC needs the lease put again.
    let keeper: AsyncStream<KeeperEvent>.Continuation
    let interval: Duration
    let threads: BlockingThreads
    let clock: any Clock<Duration>
    let logger: Logger

    public init(
        network: any OverlayNetwork, state: NodeState, rules: (any RuleKeeper)?,
        keeper: AsyncStream<KeeperEvent>.Continuation, interval: Duration, threads: BlockingThreads,
        clock: any Clock<Duration>, logger: Logger
    ) {
        self.network = network; self.state = state; self.rules = rules; self.keeper = keeper
        self.interval = interval; self.threads = threads; self.clock = clock; self.logger = logger
    }

    public func run() async throws {
        let repairs = Counter(label: "podnet_repairs_total")
        let interval = self.interval, clock = self.clock, network = self.network
        while true {
            // The sleep ends on graceful shutdown too: SIGTERM must not wait out the interval.
            do {
                try await cancelWhenGracefulShutdown { try await clock.sleep(for: interval) }
            } catch { return }
            if Task.isShuttingDownGracefully { return }
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
                if let rules, try await rules.ensure(on: threads, for: state, logger: logger) { repairs.increment() }
            } catch {
                logger.error("repair failed: \(error)")
            }
        }
    }
}
