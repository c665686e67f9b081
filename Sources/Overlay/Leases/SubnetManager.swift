// Acquiring and renewing this node's subnet lease, compatible with flanneld
// (pkg/subnet/etcd/local_manager.go) and better where flanneld gives up:
//
// 1. A lease that already carries this node's public IP is this node's: kept when the config
//    still accepts its subnet (re-put with a fresh etcd lease; a reservation is re-put without
//    one), else deleted.
// 2. Else the subnet in the existing subnet file, if the config accepts it and nobody holds it.
// 3. Else one of the first 100 free subnets, at random (so racing nodes rarely collide).
// Claims are create-if-absent transactions; a lost race is retried with a fresh listing
// (flanneld exits there). Out of subnets: an error, nothing written.

import Addressing
import FoundationEssentials
import Logging

public struct SubnetManager: Sendable {
    public let registry: any LeaseRegistry
    /// The etcd lease TTL of a subnet key (flanneld: 24 h).
    public var ttl: Duration = .seconds(24 * 3600)
    /// How many times a claim that lost a race is retried before giving up.
    public var raceRetries = 10
    let logger: Logger

    public init(registry: any LeaseRegistry, logger: Logger) {
        self.registry = registry
        self.logger = logger
    }

    public func acquire(config: NetworkConfig, attributes: LeaseAttributes, previous: IPNetwork?) async throws -> Lease
    {
        try await acquireWithSnapshot(config: config, attributes: attributes, previous: previous).lease
    }

    /// ``acquire(config:attributes:previous:)``, also returning the listing the lease was chosen
    /// from: its other leases are the peers as of `snapshot.revision`, so the caller need not list
    /// them again; a watch from that revision sees every later change (this node's own put too).
    /// `listing`, when given, is used for the first attempt instead of listing again: a caller
    /// that lists while it creates the device saves etcd's time for the listing.
    public func acquireWithSnapshot(
        config: NetworkConfig, attributes: LeaseAttributes,
        previous: IPNetwork?, listing: LeaseSnapshot? = nil
    ) async throws -> (lease: Lease, snapshot: LeaseSnapshot) {
        var listing = listing
        for attempt in 1...raceRetries {
            let snapshot: LeaseSnapshot
            if let first = listing {
                snapshot = first
                listing = nil
            } else {
                snapshot = try await registry.leases()
            }
            if let mine = snapshot.leases.first(where: { $0.attributes.publicIP == attributes.publicIP }) {
                if config.accepts(mine.subnet) {
                    logger.info("reusing the lease of this node", metadata: ["lease.subnet": "\(mine.subnet)"])
                    return (
                        try await registry.update(mine.subnet, attributes, ttl: mine.isReservation ? nil : ttl),
                        snapshot
                    )
                }
                logger.info(
                    "deleting this node's lease, which the config no longer accepts",
                    metadata: ["lease.subnet": "\(mine.subnet)"])
                try await registry.delete(mine.subnet)
                continue
            }
            let taken = TakenSubnets(snapshot.leases.map(\.subnet))
            func isFree(_ s: IPNetwork) -> Bool { taken.isFree(s) }
            let candidate: IPNetwork
            if let previous, config.accepts(previous), isFree(previous) {
                candidate = previous
            } else {
                if let previous, !config.accepts(previous) {
                    logger.warning(
                        "ignoring the subnet of the existing subnet file: the config does not accept it",
                        metadata: ["lease.subnet": "\(previous)"])
                }
                let free = Array(config.subnets.lazy.filter(isFree).prefix(100))
                guard let pick = free.randomElement() else { throw LeaseError.outOfSubnets(config.network) }
                candidate = pick
            }
            if let lease = try await registry.create(candidate, attributes, ttl: ttl) {
                logger.info("acquired a new lease", metadata: ["lease.subnet": "\(lease.subnet)"])
                return (lease, snapshot)
            }
            logger.info(
                "another node claimed the subnet first; retrying",
                metadata: ["lease.subnet": "\(candidate)", "lease.attempt": "\(attempt)"])
        }
        throw LeaseError.raceLost(attempts: raceRetries)
    }

    /// Puts this node's lease again before it expires: a new etcd lease of `ttl` (a reservation
    /// is re-put without one, and needs no renewal at all).
    public func renew(_ lease: Lease) async throws -> Lease {
        try await registry.update(lease.subnet, lease.attributes, ttl: lease.isReservation ? nil : ttl)
    }
}

public enum LeaseError: Error, Equatable, CustomStringConvertible {
    case outOfSubnets(IPNetwork)
    case raceLost(attempts: Int)

    public var description: String {
        switch self {
        case .outOfSubnets(let n): "out of subnets: every subnet of \(n) is leased"
        case .raceLost(let n): "could not claim a subnet: lost the race to other nodes \(n) times"
        }
    }
}
