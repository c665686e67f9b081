// podnetd's long-running parts, each a Service of the daemon's ServiceGroup:
// - LeaseKeeper: renews this node's lease before it expires; acquires it again when it is
//   deleted (or exits, with --exit-on-lease-loss).
// - PeerWatcher: follows the leases in etcd and programs each change into the data path; on a
//   compacted watch it re-lists and reconciles against the full list.
// - Repairer: periodically reconciles the kernel against the known peers, putting back what was
//   deleted by hand or lost with a recreated device, and the masquerade rules.

import Addressing
import Etcd
import FoundationEssentials
import Logging
import Metrics
import Netfilter
import Overlay
import ServiceLifecycle

/// This node's lease and the peers it programs.
actor NodeState {
    private(set) var lease: Lease
    let config: NetworkConfig
    /// This node's underlay addresses (the interface's and the public IP): no peer may claim them.
    let nodeAddresses: [IPAddress]
    private var peers: [IPNetwork: Peer] = [:]
    /// The rejection last logged per subnet: each is logged once, until it changes.
    private var rejected: [IPNetwork: LeaseRejection] = [:]
    private let peerGauge = Gauge(label: "podnet_peers")
    private let expiryGauge = Gauge(label: "podnet_lease_expiry_timestamp_seconds")

    init(lease: Lease, config: NetworkConfig, nodeAddresses: [IPAddress]) {
        self.lease = lease
        self.config = config
        self.nodeAddresses = nodeAddresses
        expiryGauge.record(lease.expiration?.timeIntervalSince1970 ?? 0)
    }

    var backendType: String { config.backendType }

    func setLease(_ l: Lease) {
        lease = l
        expiryGauge.record(l.expiration?.timeIntervalSince1970 ?? 0)
    }

    var currentPeers: [Peer] { Array(peers.values) }

    /// Replaces the known peers with `leases` (a full listing); returns the peers to program.
    func replacePeers(_ leases: [Lease], logger: Logger) -> [Peer] {
        peers = [:]
        let listed = Set(leases.map(\.subnet))
        rejected = rejected.filter { listed.contains($0.key) }
        for l in leases { _ = accept(l, logger: logger) }
        peerGauge.record(peers.count)
        return currentPeers
    }

    /// What to do with a lease from etcd.
    enum Verdict: Equatable {
        /// Program this peer.
        case peer(Peer)
        /// This node's own lease.
        case own
        /// Not a peer (logged and counted): whatever was programmed for its subnet must go.
        case rejected
    }

    /// Takes a lease from a listing or the watch. Another node's lease becomes a peer only when
    /// the config accepts it (`NetworkConfig.check(peer:)`): a rejected one is logged once per
    /// reason, counted in `podnet_leases_rejected_total{reason}`, and forgotten as a peer.
    func accept(_ l: Lease, logger: Logger) -> Verdict {
        guard l.subnet != lease.subnet else { return .own }
        if let rejection = config.check(peer: l, backendType: backendType, nodeAddresses: nodeAddresses) {
            if rejected[l.subnet] != rejection {
                rejected[l.subnet] = rejection
                Counter(label: "podnet_leases_rejected_total", dimensions: [("reason", rejection.reason.rawValue)]).increment()
                let level: Logger.Level = rejection.reason == .otherBackend ? .warning : .error
                logger.log(level: level, "ignoring a lease: \(rejection.detail)", metadata: [
                    "peer.subnet": "\(l.subnet)", "peer.public_ip": "\(l.attributes.publicIP)",
                    "lease.rejected": "\(rejection.reason.rawValue)",
                ])
            }
            if peers.removeValue(forKey: l.subnet) != nil { peerGauge.record(peers.count) }
            return .rejected
        }
        rejected[l.subnet] = nil
        peers[l.subnet] = l.peer
        peerGauge.record(peers.count)
        return .peer(l.peer)
    }

    func remove(_ subnet: IPNetwork) -> Bool {
        rejected[subnet] = nil
        defer { peerGauge.record(peers.count) }
        return peers.removeValue(forKey: subnet) != nil
    }
}

enum KeeperEvent: Sendable {
    case renewDue
    case leaseLost
    /// This node's lease key holds another value than this node publishes: another writer
    /// overwrote it (or the tunnel device's MAC changed). The lease is put again.
    case leaseOverwritten
}

/// The least time between two re-assertions of an overwritten lease, so that two writers that
/// both claim one key do not flood etcd: the watch would otherwise bounce their puts at once.
let reassertInterval: Duration = .seconds(5)

struct LeaseKeeper: Service {
    let manager: SubnetManager
    let config: NetworkConfig
    let network: any OverlayNetwork
    let state: NodeState
    let subnetFile: String
    let renewMargin: Duration
    let ipMasq: Bool
    let exitOnLoss: Bool
    let events: (stream: AsyncStream<KeeperEvent>, continuation: AsyncStream<KeeperEvent>.Continuation)
    let logger: Logger

    init(manager: SubnetManager, config: NetworkConfig, network: any OverlayNetwork, state: NodeState, subnetFile: String,
         renewMargin: Duration, ipMasq: Bool, exitOnLoss: Bool, events: (stream: AsyncStream<KeeperEvent>, continuation: AsyncStream<KeeperEvent>.Continuation),
         logger: Logger) {
        self.manager = manager; self.config = config; self.network = network; self.state = state
        self.subnetFile = subnetFile; self.renewMargin = renewMargin; self.ipMasq = ipMasq
        self.exitOnLoss = exitOnLoss; self.events = events; self.logger = logger
    }

    func run() async throws {
        var timer = schedule(after: await renewalDelay())
        var reassertTimer: Task<Void, Never>?
        var lastReassert: ContinuousClock.Instant?
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
                    if let last = lastReassert, ContinuousClock.now - last < reassertInterval {
                        reassertTimer = schedule(after: reassertInterval - (ContinuousClock.now - last), .leaseOverwritten)
                        continue
                    }
                    lastReassert = ContinuousClock.now
                    lease.attributes = network.leaseAttributes
                    lease = try await manager.renew(lease)
                    logger.warning("put this node's lease back with its own value", metadata: ["node.subnet": "\(lease.subnet)"])
                case .renewDue:
                    lease = try await manager.renew(lease)
                    logger.info("renewed the lease", metadata: ["node.subnet": "\(lease.subnet)"])
                case .leaseLost:
                    guard !exitOnLoss else { throw LeaseLost(subnet: lease.subnet) }
                    logger.warning("this node's lease was deleted; acquiring it again", metadata: ["node.subnet": "\(lease.subnet)"])
                    lease = try await manager.acquire(config: config, attributes: network.leaseAttributes, previous: lease.subnet)
                    if lease.subnet != (await state.lease).subnet {
                        try network.start(subnet: lease.subnet)
                        try SubnetFile.write(SubnetFile.render(network: config.network, subnet: lease.subnet,
                                                               mtu: network.mtu, ipMasq: ipMasq), to: subnetFile)
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
        let c = events.continuation
        return Task {
            guard (try? await Task.sleep(for: delay)) != nil else { return }
            c.yield(event)
        }
    }
}

struct LeaseLost: Error, CustomStringConvertible {
    let subnet: IPNetwork
    var description: String { "this node's lease \(subnet) was deleted (--exit-on-lease-loss)" }
}

struct PeerWatcher: Service {
    let registry: EtcdLeaseRegistry
    let network: any OverlayNetwork
    let state: NodeState
    let startRevision: Int64
    /// The lease keeper's events: lost or overwritten.
    let leaseLost: AsyncStream<KeeperEvent>.Continuation
    let logger: Logger

    func run() async throws {
        var revision = startRevision
        let reconnects = Counter(label: "podnet_etcd_reconnects_total")
        let errors = Counter(label: "podnet_etcd_errors_total")
        // Graceful shutdown ends the watch's iteration without cancelling this task: the loop
        // must check for it too, or it would start a new watch that ends at once, forever.
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                for try await update in registry.watch(fromRevision: revision + 1).cancelOnGracefulShutdown() {
                    switch update {
                    case .events(let events, _):
                        for e in events {
                            await apply(e)
                            revision = max(revision, e.kv.modRevision)
                        }
                    case .compacted(let compactedAt):
                        logger.warning("the lease watch fell behind a compaction; listing again",
                                       metadata: ["etcd.revision": "\(compactedAt)"])
                        revision = try await relist()
                    case .interrupted(let error):
                        reconnects.increment()
                        logger.info("the lease watch was interrupted; reconnecting: \(error)")
                    }
                }
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                errors.increment()
                logger.warning("the lease watch failed; listing again in 1 s: \(error)")
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
                if let r = try? await relist() { revision = r }
            }
        }
    }

    private func apply(_ event: WatchEvent) async {
        guard let subnet = SubnetKey.parse(event.kv.keyString) else { return }
        if subnet == (await state.lease).subnet {
            switch event.kind {
            case .delete: leaseLost.yield(.leaseLost)
            case .put: checkOwnLease(registry.lease(event.kv), subnet: subnet)
            }
            return
        }
        do {
            switch event.kind {
            case .put:
                guard let lease = registry.lease(event.kv) else {
                    // Not a lease any more: whatever its previous value programmed goes.
                    if await state.remove(subnet) { _ = try network.removePeer(subnet: subnet) }
                    return
                }
                switch await state.accept(lease, logger: logger) {
                case .own:
                    return
                case .rejected:
                    // A lease that turned hostile loses what its previous value programmed.
                    _ = try network.removePeer(subnet: subnet)
                case .peer(let peer):
                    _ = try network.setPeer(peer)
                    logger.info("peer added or updated", metadata: ["peer.subnet": "\(peer.subnet)", "peer.public_ip": "\(peer.publicIP)"])
                }
            case .delete:
                guard await state.remove(subnet) else { return }
                _ = try network.removePeer(subnet: subnet)
                logger.info("peer removed", metadata: ["peer.subnet": "\(subnet)"])
            }
        } catch {
            logger.error("programming a peer failed (the next repair retries): \(error)")
        }
    }

    /// This node's lease key as etcd holds it (`value` nil when it is not a lease value): when it
    /// differs from what this node publishes, another writer overwrote it. Logged, counted in
    /// `podnet_own_lease_overwritten_total`, and put back by the lease keeper.
    private func checkOwnLease(_ value: Lease?, subnet: IPNetwork) {
        let mine = network.leaseAttributes
        guard value?.attributes != mine else { return }
        Counter(label: "podnet_own_lease_overwritten_total").increment()
        logger.error("this node's lease was overwritten by another writer; putting it back", metadata: [
            "node.subnet": "\(subnet)",
            "lease.found": "\(value.map { "\($0.attributes.publicIP) \($0.attributes.backendType) \($0.attributes.vtepMAC?.description ?? "-")" } ?? "not a lease value")",
            "lease.expected": "\(mine.publicIP) \(mine.backendType) \(mine.vtepMAC?.description ?? "-")",
        ])
        leaseLost.yield(.leaseOverwritten)
    }

    /// Lists every lease, reconciles the kernel against them and returns the listing's revision.
    private func relist() async throws -> Int64 {
        let snapshot = try await registry.leases()
        let peers = await state.replacePeers(snapshot.leases, logger: logger)
        _ = try network.reconcile(peers: peers)
        let own = await state.lease.subnet
        if let mine = snapshot.leases.first(where: { $0.subnet == own }) {
            checkOwnLease(mine, subnet: own)
        } else {
            leaseLost.yield(.leaseLost)
        }
        return snapshot.revision
    }
}

struct Repairer: Service {
    let network: any OverlayNetwork
    let state: NodeState
    let masquerade: FlannelMasquerade?
    /// The lease keeper's events: a recreated device with a new MAC needs the lease put again.
    let keeper: AsyncStream<KeeperEvent>.Continuation
    let interval: Duration
    let logger: Logger

    func run() async throws {
        let repairs = Counter(label: "podnet_repairs_total")
        let interval = self.interval
        while true {
            // The sleep ends on graceful shutdown too: SIGTERM must not wait out the interval.
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch { return }
            if Task.isShuttingDownGracefully { return }
            do {
                let report = try network.reconcile(peers: await state.currentPeers)
                if report.leaseAttributesChanged { keeper.yield(.leaseOverwritten) }
                let changed = report.programmed.total + report.removed.total
                if changed > 0 || report.deviceRecreated {
                    repairs.increment(by: Int64(changed))
                    logger.warning("repaired the kernel state", metadata: [
                        "repair.programmed": "\(report.programmed.total)", "repair.removed": "\(report.removed.total)",
                        "repair.device_recreated": "\(report.deviceRecreated)"])
                }
                if let masquerade, try masquerade.ensure() {
                    repairs.increment()
                    logger.info("installed the masquerade and forward rules", metadata: [
                        "masq.network": "\(masquerade.network)", "masq.subnet": "\(masquerade.subnet)"])
                }
            } catch {
                logger.error("repair failed: \(error)")
            }
        }
    }
}
