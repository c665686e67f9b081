// The resync: every `interval` (flanneld's --iptables-resync, 5 s by default) puts back what
// flanneld's resync loops put back: the masquerade and forward rules (flanneld checks the
// iptables ones only; the nftables tables are checked here too, so `nft flush ruleset` is
// repaired), and, with --ip-blackhole-route, the blackhole route for the node's own subnet. The
// rules run on the netfilter thread and the route on the kernel thread, as everywhere else.

import Logging
import Metrics
import ServiceLifecycle

public struct RuleResync: Service {
    let rules: any RuleKeeper
    /// Adds the blackhole route when it is missing; returns whether it did. Blocking (netlink).
    let blackhole: (@Sendable () throws -> Bool)?
    let state: NodeState
    let interval: Duration
    let threads: BlockingThreads
    let clock: any Clock<Duration>
    let logger: Logger

    public init(
        rules: any RuleKeeper, blackhole: (@Sendable () throws -> Bool)?, state: NodeState, interval: Duration,
        threads: BlockingThreads, clock: any Clock<Duration>, logger: Logger
    ) {
        self.rules = rules; self.blackhole = blackhole; self.state = state; self.interval = interval
        self.threads = threads; self.clock = clock; self.logger = logger
    }

    public func run() async throws {
        let repairs = Counter(label: "podnet_repairs_total")
        let blackhole = self.blackhole
        await every(interval, on: clock) {
            do {
                if try await rules.ensure(on: threads, for: state, logger: logger) { repairs.increment() }
            } catch {
                logger.error("could not put the traffic rules back: \(error)")
            }
            guard let blackhole else { return }
            do {
                if try await threads.kernel(blackhole) {
                    repairs.increment()
                    logger.warning("put back the blackhole route of this node's subnet")
                }
            } catch {
                logger.error("could not put the blackhole route back: \(error)")
            }
        }
    }
}
