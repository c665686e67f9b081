// The lease keeper: renews this node's lease before it expires; acquires it again when it is
// deleted (or exits, with exitOnLoss); puts it back when another writer overwrote it. Everything
// it does comes as a `KeeperEvent`: its own timers (on the agent's clock), the peer watcher's
// "lost" and "overwritten", the repairer's "the device's MAC changed".

import Addressing
import FoundationEssentials
import Logging
import Metrics
import Overlay
import ServiceLifecycle

public struct LeaseKeeper: Service {
    public typealias Events = (stream: AsyncStream<KeeperEvent>, continuation: AsyncStream<KeeperEvent>.Continuation)

    let manager: SubnetManager
    let config: NetworkConfig
    let network: any OverlayNetwork
    let state: NodeState
    let subnetFile: String
    let renewMargin: Duration
    let ipMasq: Bool
    let exitOnLoss: Bool
    let events: Events
    let threads: BlockingThreads
    let clock: any Clock<Duration>
    /// Time on `clock` since the keeper was made.
    private let elapsed: @Sendable () -> Duration
    let logger: Logger

    public init(
        manager: SubnetManager, config: NetworkConfig, network: any OverlayNetwork, state: NodeState,
        subnetFile: String, renewMargin: Duration, ipMasq: Bool, exitOnLoss: Bool, events: Events,
        threads: BlockingThreads, clock: any Clock<Duration>, logger: Logger
    ) {
        self.manager = manager; self.config = config; self.network = network; self.state = state
        self.subnetFile = subnetFile; self.renewMargin = renewMargin; self.ipMasq = ipMasq
        self.exitOnLoss = exitOnLoss; self.events = events; self.threads = threads; self.clock = clock
        self.elapsed = stopwatch(clock)
        self.logger = logger
    }

    public func run() async throws {
        var timer = schedule(after: await renewalDelay())
        var reassertTimer: Task<Void, Never>?
        var lastReassert: Duration?
        defer { timer?.cancel(); reassertTimer?.cancel() }
        for await event in events.stream.cancelOnGracefulShutdown() {
            var lease = await state.lease
            do {
                switch event {
                case .leaseOverwritten:
                    // flanneld puts its lease again only at the next renewal (hours later), with its
                    // own value: the key is this node's, and its subnet is what the pods here are
                    // numbered from, so re-acquiring another subnet would cut them off. podnetd puts
                    // its value back at once, at most once per `reassertInterval`.
                    reassertTimer?.cancel()
                    reassertTimer = nil
                    if let last = lastReassert, elapsed() - last < reassertInterval {
                        reassertTimer = schedule(after: reassertInterval - (elapsed() - last), .leaseOverwritten)
                        continue
                    }
                    lastReassert = elapsed()
                    lease.attributes = network.leaseAttributes
                    lease = try await manager.renew(lease)
                    logger.warning(
                        "put this node's lease back with its own value", metadata: ["node.subnet": "\(lease.subnet)"])
                case .renewDue:
                    lease = try await manager.renew(lease)
                    logger.info("renewed the lease", metadata: ["node.subnet": "\(lease.subnet)"])
                case .leaseLost:
                    // bgp: the neighbours stop routing to a subnet this node no longer holds.
                    (network as? BGPNetwork)?.withdrawSubnet()
                    guard !exitOnLoss else { throw LeaseLost(subnet: lease.subnet) }
                    logger.warning(
                        "this node's lease was deleted; acquiring it again",
                        metadata: ["node.subnet": "\(lease.subnet)"])
                    lease = try await manager.acquire(
                        config: config, attributes: network.leaseAttributes, previous: lease.key)
                    if lease.key != (await state.lease).key {
                        let network = self.network, subnet = lease.subnet, ipv6Subnet = lease.ipv6Subnet
                        try await threads.kernel { try network.start(subnet: subnet, ipv6Subnet: ipv6Subnet) }
                        try SubnetFile.write(
                            SubnetFile.render(config: config, lease: lease, mtu: network.mtu, ipMasq: ipMasq),
                            to: subnetFile)
                    } else {
                        (network as? BGPNetwork)?.announce(lease.subnet)
                    }
                }
                await state.setLease(lease)
                timer?.cancel()
                timer = schedule(after: await renewalDelay())
            } catch let e as LeaseLost {
                throw e
            } catch {
                logger.error("lease operation failed; trying again in 10 s: \(error)")
                Counter(label: "podnet_etcd_errors_total").increment()
                timer?.cancel()
                timer = schedule(after: .seconds(10), event)
            }
        }
    }

    private func renewalDelay() async -> Duration? {
        guard let expiration = await state.lease.expiration else { return nil }  // a reservation never expires
        let seconds = expiration.timeIntervalSinceNow - Double(renewMargin.components.seconds)
        // Bounded both ways: etcd's TTL is a number from the network, and a sleep of more than
        // a year is no different from one of a year (the renewal then finds the lease again).
        return .seconds(min(max(seconds.isNaN ? 1 : seconds, 1), 365 * 24 * 3600))
    }

    private func schedule(after delay: Duration?, _ event: KeeperEvent = .renewDue) -> Task<Void, Never>? {
        guard let delay else { return nil }
        let c = events.continuation, clock = self.clock
        return Task {
            guard (try? await clock.sleep(for: delay)) != nil else { return }
            c.yield(event)
        }
    }
}

/// This node's lease was deleted and the keeper was told to exit then: ends the agent.
public struct LeaseLost: Error, CustomStringConvertible {
    public let subnet: IPNetwork
    public var description: String { "this node's lease \(subnet) was deleted (--exit-on-lease-loss)" }
}

/// The time passed on `clock` since this call.
func stopwatch<C: Clock<Duration>>(_ clock: C) -> @Sendable () -> Duration {
    let start = clock.now
    return { start.duration(to: clock.now) }
}
