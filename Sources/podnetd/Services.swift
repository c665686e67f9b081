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
import Overlay
import ServiceLifecycle

/// This node's lease and the peers it programs.
actor NodeState {
    private(set) var lease: Lease
    let backendType: String
    private var peers: [IPNetwork: Peer] = [:]
    private var warnedBackends: Set<IPNetwork> = []
    private let peerGauge = Gauge(label: "podnet_peers")
    private let expiryGauge = Gauge(label: "podnet_lease_expiry_timestamp_seconds")

    init(lease: Lease, backendType: String) {
        self.lease = lease
        self.backendType = backendType
        expiryGauge.record(lease.expiration?.timeIntervalSince1970 ?? 0)
    }

    func setLease(_ l: Lease) {
        lease = l
        expiryGauge.record(l.expiration?.timeIntervalSince1970 ?? 0)
    }

    var currentPeers: [Peer] { Array(peers.values) }

    /// Replaces the known peers with `leases` (a full listing); returns the peers to program.
    func replacePeers(_ leases: [Lease], logger: Logger) -> [Peer] {
        peers = [:]
        for l in leases { _ = accept(l, logger: logger) }
        peerGauge.record(peers.count)
        return currentPeers
    }

    /// Takes a lease from the watch; returns the peer to program, or nil for this node's own
    /// lease and for leases of another backend type (ignored with one warning each).
    func accept(_ l: Lease, logger: Logger) -> Peer? {
        guard l.subnet != lease.subnet else { return nil }
        guard l.attributes.backendType == backendType else {
            if warnedBackends.insert(l.subnet).inserted {
                logger.warning("ignoring a peer with another backend type",
                               metadata: ["peer.subnet": "\(l.subnet)", "peer.backend": "\(l.attributes.backendType)"])
            }
            return nil
        }
        peers[l.subnet] = l.peer
        peerGauge.record(peers.count)
        return l.peer
    }

    func remove(_ subnet: IPNetwork) -> Bool {
        defer { peerGauge.record(peers.count) }
        return peers.removeValue(forKey: subnet) != nil
    }
}

enum KeeperEvent: Sendable { case renewDue, leaseLost }

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
        defer { timer?.cancel() }
        for await event in events.stream.cancelOnGracefulShutdown() {
            var lease = await state.lease
            do {
                switch event {
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
        return .seconds(max(seconds, 1))
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
            if event.kind == .delete { leaseLost.yield(.leaseLost) }
            return
        }
        do {
            switch event.kind {
            case .put:
                guard let lease = registry.lease(event.kv), let peer = await state.accept(lease, logger: logger) else { return }
                _ = try network.setPeer(peer)
                logger.info("peer added or updated", metadata: ["peer.subnet": "\(peer.subnet)", "peer.public_ip": "\(peer.publicIP)"])
            case .delete:
                guard await state.remove(subnet) else { return }
                _ = try network.removePeer(subnet: subnet)
                logger.info("peer removed", metadata: ["peer.subnet": "\(subnet)"])
            }
        } catch {
            logger.error("programming a peer failed (the next repair retries): \(error)")
        }
    }

    /// Lists every lease, reconciles the kernel against them and returns the listing's revision.
    private func relist() async throws -> Int64 {
        let snapshot = try await registry.leases()
        let peers = await state.replacePeers(snapshot.leases, logger: logger)
        _ = try network.reconcile(peers: peers)
        let own = await state.lease.subnet
        if !snapshot.leases.contains(where: { $0.subnet == own }) { leaseLost.yield(.leaseLost) }
        return snapshot.revision
    }
}

struct Repairer: Service {
    let network: any OverlayNetwork
    let state: NodeState
    let masquerade: MasqueradeRules?
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
                let changed = report.programmed.total + report.removed.total
                if changed > 0 || report.deviceRecreated {
                    repairs.increment(by: Int64(changed))
                    logger.warning("repaired the kernel state", metadata: [
                        "repair.programmed": "\(report.programmed.total)", "repair.removed": "\(report.removed.total)",
                        "repair.device_recreated": "\(report.deviceRecreated)"])
                }
                if try masquerade?.ensure() == true { repairs.increment() }
            } catch {
                logger.error("repair failed: \(error)")
            }
        }
    }
}
