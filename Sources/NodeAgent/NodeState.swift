// This node's lease and the peers it programs, shared by the agent's services: the peer watcher
// and a re-listing replace or change the peers, the repairer reconciles the kernel against them,
// the lease keeper replaces the lease. Its gauges: podnet_peers, podnet_lease_expiry_timestamp_seconds.

import Addressing
import FoundationEssentials
import Logging
import Metrics
import Overlay

/// This node's lease and the peers it programs.
public actor NodeState {
    public private(set) var lease: Lease
    public let config: NetworkConfig
    /// This node's underlay addresses (the interface's and the public IP): no peer may claim them.
    public let nodeAddresses: [IPAddress]
    private var peers: [IPNetwork: Peer] = [:]
    /// The rejection last logged per subnet: each is logged once, until it changes.
    private var rejected: [IPNetwork: LeaseRejection] = [:]
    private let peerGauge = Gauge(label: "podnet_peers")
    private let expiryGauge = Gauge(label: "podnet_lease_expiry_timestamp_seconds")

    public init(lease: Lease, config: NetworkConfig, nodeAddresses: [IPAddress]) {
        self.lease = lease
        self.config = config
        self.nodeAddresses = nodeAddresses
        expiryGauge.record(lease.expiration?.timeIntervalSince1970 ?? 0)
    }

    public var backendType: String { config.backendType }

    public func setLease(_ l: Lease) {
        lease = l
        expiryGauge.record(l.expiration?.timeIntervalSince1970 ?? 0)
    }

    public var currentPeers: [Peer] { Array(peers.values) }

    /// Replaces the known peers with `leases` (a full listing); returns the peers to program.
    public func replacePeers(_ leases: [Lease], logger: Logger) -> [Peer] {
        peers = [:]
        let listed = Set(leases.map(\.subnet))
        rejected = rejected.filter { listed.contains($0.key) }
        for l in leases { _ = accept(l, logger: logger) }
        peerGauge.record(peers.count)
        return currentPeers
    }

    /// What to do with a lease from etcd.
    public enum Verdict: Equatable, Sendable {
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
    public func accept(_ l: Lease, logger: Logger) -> Verdict {
        guard l.subnet != lease.subnet else { return .own }
        if let rejection = config.check(peer: l, backendType: backendType, nodeAddresses: nodeAddresses) {
            if rejected[l.subnet] != rejection {
                rejected[l.subnet] = rejection
                Counter(label: "podnet_leases_rejected_total", dimensions: [("reason", rejection.reason.rawValue)])
                    .increment()
                let level: Logger.Level = rejection.reason == .otherBackend ? .warning : .error
                logger.log(
                    level: level, "ignoring a lease: \(rejection.detail)",
                    metadata: [
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

    public func remove(_ subnet: IPNetwork) -> Bool {
        rejected[subnet] = nil
        defer { peerGauge.record(peers.count) }
        return peers.removeValue(forKey: subnet) != nil
    }
}

/// What the lease keeper acts on: its own timers, and what the peer watcher and the repairer see.
public enum KeeperEvent: Sendable {
    case renewDue
    case leaseLost
    /// This node's lease key holds another value than this node publishes: another writer
    /// overwrote it (or the tunnel device's MAC changed). The lease is put again.
    case leaseOverwritten
}

/// The least time between two re-assertions of an overwritten lease, so that two writers that
/// both claim one key do not flood etcd: the watch would otherwise bounce their puts at once.
let reassertInterval: Duration = .seconds(5)
