// The peer watcher: follows the leases from the revision the start-up listing was read at, and
// programs each change into the data path (on the kernel thread). This node's own key is the
// lease keeper's business: deleted, it is lost; holding another value, it was overwritten. On a
// compacted watch the watcher lists again and reconciles the kernel against the full listing.

import Addressing
import Logging
import Metrics
import Overlay
import ServiceLifecycle

public struct PeerWatcher: Service {
    let registry: any LeaseRegistry
    let network: any OverlayNetwork
    let state: NodeState
    let startRevision: Int64
    /// The lease keeper's events: lost or overwritten.
    let leaseLost: AsyncStream<KeeperEvent>.Continuation
    let threads: BlockingThreads
    let clock: any Clock<Duration>
    let logger: Logger

    public init(
        registry: any LeaseRegistry, network: any OverlayNetwork, state: NodeState, startRevision: Int64,
        leaseLost: AsyncStream<KeeperEvent>.Continuation, threads: BlockingThreads, clock: any Clock<Duration>,
        logger: Logger
    ) {
        self.registry = registry; self.network = network; self.state = state; self.startRevision = startRevision
        self.leaseLost = leaseLost; self.threads = threads; self.clock = clock; self.logger = logger
    }

    public func run() async throws {
        var revision = startRevision
        let reconnects = Counter(label: "podnet_etcd_reconnects_total")
        let errors = Counter(label: "podnet_etcd_errors_total")
        let clock = self.clock
        // Graceful shutdown ends the watch's iteration without cancelling this task: the loop
        // must check for it too, or it would start a new watch that ends at once, forever.
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                for try await event in registry.watch(fromRevision: revision + 1).cancelOnGracefulShutdown() {
                    switch event {
                    case .put(_, let r), .delete(_, let r), .notALease(_, _, let r):
                        await apply(event)
                        revision = max(revision, r)
                    case .compacted(let compactedAt):
                        logger.warning(
                            "the lease watch fell behind a compaction; listing again",
                            metadata: ["etcd.revision": "\(compactedAt)"])
                        revision = try await relist()
                    case .interrupted(let reason):
                        reconnects.increment()
                        logger.info("the lease watch was interrupted; reconnecting: \(reason)")
                    }
                }
            } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                errors.increment()
                logger.warning("the lease watch failed; listing again in 1 s: \(error)")
                try? await cancelWhenGracefulShutdown { try await clock.sleep(for: .seconds(1)) }
                if let r = try? await relist() { revision = r }
            }
        }
    }

    private func apply(_ event: LeaseEvent) async {
        let subnet: IPNetwork, lease: Lease?, deleted: Bool
        switch event {
        case .put(let l, _): (subnet, lease, deleted) = (l.subnet, l, false)
        case .delete(let s, _): (subnet, lease, deleted) = (s, nil, true)
        case .notALease(_, let s?, _): (subnet, lease, deleted) = (s, nil, false)
        default: return  // a key that names no subnet
        }
        if subnet == (await state.lease).subnet {
            if deleted { leaseLost.yield(.leaseLost) } else { checkOwnLease(lease, subnet: subnet) }
            return
        }
        let network = self.network
        do {
            if deleted {
                guard await state.remove(subnet) else { return }
                _ = try await threads.kernel { try network.removePeer(subnet: subnet) }
                logger.info("peer removed", metadata: ["peer.subnet": "\(subnet)"])
                return
            }
            guard let lease else {
                // Not a lease any more: whatever its previous value programmed goes.
                if await state.remove(subnet) {
                    _ = try await threads.kernel { try network.removePeer(subnet: subnet) }
                }
                return
            }
            switch await state.accept(lease, logger: logger) {
            case .own:
                return
            case .rejected:
                // A lease that turned hostile loses what its previous value programmed.
                _ = try await threads.kernel { try network.removePeer(subnet: subnet) }
            case .peer(let peer):
                _ = try await threads.kernel { try network.setPeer(peer) }
                logger.info(
                    "peer added or updated",
                    metadata: ["peer.subnet": "\(peer.subnet)", "peer.public_ip": "\(peer.publicIP)"])
            }
        } catch {
            logger.error("programming a peer failed (the next repair retries): \(error)")
        }
    }

    /// This node's lease key as the registry holds it (`value` nil when it is not a lease value):
    /// when it differs from what this node publishes, another writer overwrote it. Logged, counted
    /// in `podnet_own_lease_overwritten_total`, and put back by the lease keeper.
    private func checkOwnLease(_ value: Lease?, subnet: IPNetwork) {
        let mine = network.leaseAttributes
        guard value?.attributes != mine else { return }
        Counter(label: "podnet_own_lease_overwritten_total").increment()
        logger.error(
            "this node's lease was overwritten by another writer; putting it back",
            metadata: [
                "node.subnet": "\(subnet)",
                "lease.found":
                    "\(value.map { "\($0.attributes.publicIP) \($0.attributes.backendType) \($0.attributes.vtepMAC?.description ?? "-")" } ?? "not a lease value")",
                "lease.expected": "\(mine.publicIP) \(mine.backendType) \(mine.vtepMAC?.description ?? "-")",
            ])
        leaseLost.yield(.leaseOverwritten)
    }

    /// Lists every lease, reconciles the kernel against them and returns the listing's revision.
    private func relist() async throws -> Int64 {
        let snapshot = try await registry.leases()
        let peers = await state.replacePeers(snapshot.leases, logger: logger)
        let network = self.network
        _ = try await threads.kernel { try network.reconcile(peers: peers) }
        let own = await state.lease.subnet
        if let mine = snapshot.leases.first(where: { $0.subnet == own }) {
            checkOwnLease(mine, subnet: own)
        } else {
            leaseLost.yield(.leaseLost)
        }
        return snapshot.revision
    }
}
