// Acquiring and renewing this node's subnet lease, compatible with flanneld
// (pkg/subnet/etcd/local_manager.go) and better where flanneld gives up:
//
// 1. A lease that already carries this node's public IP is this node's: kept when the config
//    still accepts its subnet (re-put with a fresh etcd lease; a reservation is re-put without
//    one), else deleted.
// 2. Else the subnet in the existing subnet file, if the config accepts it and nobody holds it.
// 3. Else one of the first 100 free subnets, at random (so racing nodes rarely collide).
// In a dual-stack cluster the IPv6 subnet is chosen the same way, and the key names both
// (`10.244.1.0-24&fd00:10:244:1::-64`).
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

    public func acquire(config: NetworkConfig, attributes: LeaseAttributes, previous: SubnetKey?) async throws -> Lease
    {
        try await acquireWithSnapshot(config: config, attributes: attributes, previous: previous).lease
    }

    /// ``acquire(config:attributes:previous:)``, also returning the listing the lease was chosen
    /// from: its other leases are the peers as of `snapshot.revision`, so the caller need not list
    /// them again; a watch from that revision sees every later change (this node's own put too).
    /// `listing`, when given, is used for the first attempt instead of listing again: a caller
    /// that lists while it creates the device saves etcd's time for the listing.
    ///
    /// Dual stack: the IPv6 subnet is chosen as the IPv4 one is (reused, from the subnet file's
    /// FLANNEL_IPV6_SUBNET, else among the first 100 free), and a node that keeps its IPv4 subnet
    /// keeps it also when its key must change (a cluster that turns on IPv6: flanneld deletes the
    /// lease and picks both anew, renumbering the node's pods).
    public func acquireWithSnapshot(
        config: NetworkConfig, attributes: LeaseAttributes,
        previous: SubnetKey?, listing: LeaseSnapshot? = nil
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
            var keep: IPNetwork?
            if let mine = snapshot.leases.first(where: { isThisNode($0.attributes, attributes, config) }) {
                if config.accepts(mine.key) {
                    logger.info("reusing the lease of this node", metadata: ["lease.subnet": "\(mine.key)"])
                    return (
                        try await registry.update(mine.key, attributes, ttl: mine.isReservation ? nil : ttl),
                        snapshot
                    )
                }
                if config.accepts(mine.subnet) {
                    logger.info(
                        "this node's lease needs another IPv6 subnet; keeping its subnet under a new key",
                        metadata: ["lease.subnet": "\(mine.key)"])
                    keep = mine.subnet
                } else {
                    logger.info(
                        "deleting this node's lease, which the config no longer accepts",
                        metadata: ["lease.subnet": "\(mine.key)"])
                }
                try await registry.delete(mine.key)
                if keep == nil { continue }
            }
            let candidate = try choose(
                config: config, keep: keep, previous: previous,
                leases: snapshot.leases.filter { !isThisNode($0.attributes, attributes, config) })
            if let lease = try await registry.create(candidate, attributes, ttl: ttl) {
                logger.info("acquired a new lease", metadata: ["lease.subnet": "\(lease.key)"])
                return (lease, snapshot)
            }
            logger.info(
                "another node claimed the subnet first; retrying",
                metadata: ["lease.subnet": "\(candidate)", "lease.attempt": "\(attempt)"])
        }
        throw LeaseError.raceLost(attempts: raceRetries)
    }

    /// Whether a lease with `found` is this node's (publishing `mine`): the same PublicIP, or in an
    /// IPv6-only cluster (where every PublicIP is 0.0.0.0) the same PublicIPv6.
    private func isThisNode(_ found: LeaseAttributes, _ mine: LeaseAttributes, _ config: NetworkConfig) -> Bool {
        config.ipv4 != nil
            ? found.publicIP == mine.publicIP : (mine.publicIPv6 != nil && found.publicIPv6 == mine.publicIPv6)
    }

    /// The key to claim: `keep` (this node's primary subnet) or the previous subnet when free, else
    /// a free one; in a dual-stack cluster with the previous IPv6 subnet when free, else a free one.
    private func choose(config: NetworkConfig, keep: IPNetwork?, previous: SubnetKey?, leases: [Lease]) throws
        -> SubnetKey
    {
        func pick(_ range: SubnetRange, previous: IPNetwork?, taken: [IPNetwork], keep: IPNetwork? = nil) throws
            -> IPNetwork
        {
            let taken = TakenSubnets(taken, family: range.family)
            if let keep { return keep }
            if let previous {
                if range.accepts(previous) {
                    if taken.isFree(previous) { return previous }
                } else {
                    logger.warning(
                        "ignoring the subnet of the existing subnet file: the config does not accept it",
                        metadata: ["lease.subnet": "\(previous)"])
                }
            }
            let free = Array(range.subnets.lazy.filter(taken.isFree).prefix(100))
            guard let choice = free.randomElement() else { throw LeaseError.outOfSubnets(range.network) }
            return choice
        }
        let primary = try pick(
            config.primary, previous: previous?.subnet, taken: leases.map(\.subnet), keep: keep)
        guard let ipv6 = config.ipv6, config.isDualStack else { return SubnetKey(primary) }
        let v6 = try pick(ipv6, previous: previous?.ipv6Subnet, taken: leases.compactMap(\.ipv6Subnet))
        return SubnetKey(primary, ipv6Subnet: v6)
    }

    /// Puts this node's lease again before it expires: a new etcd lease of `ttl` (a reservation
    /// is re-put without one, and needs no renewal at all).
    public func renew(_ lease: Lease) async throws -> Lease {
        try await registry.update(lease.key, lease.attributes, ttl: lease.isReservation ? nil : ttl)
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
