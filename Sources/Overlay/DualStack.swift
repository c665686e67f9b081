// Dual stack: one backend and one network per family, side by side, as flanneld runs them (its
// vxlan backend has flannel.<VNI> and flannel-v6.<VNI>, host-gw a route per family). A lease
// carries both subnets and both public addresses; a `Peer` carries its IPv6 side in its `ipv6`
// fields, which this network hands to the IPv6 network as a peer of its own. Each family's
// network keeps its own entries and device: a failure in one family never blocks the other.

import Addressing
import Logging
import Synchronization

/// The IPv4 and the IPv6 backend of one type.
public struct DualStackBackend: Backend {
    let ipv4: any ModeBackend
    let ipv6: any ModeBackend

    public var backendType: String { ipv4.backendType }

    public func registerNetwork(dataPath: any DataPath, logger: Logger) throws(OverlayError) -> any OverlayNetwork {
        let keep = Set([ipv4.mode.device?.name, ipv6.mode.device?.name].compactMap { $0 })
        let v4 = try ipv4.registerNetwork(dataPath: dataPath, logger: logger, keepingDevices: keep)
        let v6 = try ipv6.registerNetwork(dataPath: dataPath, logger: logger, keepingDevices: keep)
        return DualStackNetwork(ipv4: v4, ipv6: v6)
    }
}

/// The IPv4 network and the IPv6 network of a dual-stack node, as one.
public final class DualStackNetwork: OverlayNetwork {
    public let ipv4: any OverlayNetwork
    public let ipv6: any OverlayNetwork
    /// Per peer (by its IPv4 subnet), the IPv6 subnet last given to the IPv6 network.
    private let ipv6Subnets = Mutex<[IPNetwork: IPNetwork]>([:])

    init(ipv4: any OverlayNetwork, ipv6: any OverlayNetwork) {
        self.ipv4 = ipv4; self.ipv6 = ipv6
    }

    public var backendType: String { ipv4.backendType }
    /// One MTU for the pods' interfaces, which carry both families: the smaller of the two (an
    /// IPv6 underlay costs 20 bytes more per packet).
    public var mtu: Int { min(ipv4.mtu, ipv6.mtu) }
    public var leaseAttributes: LeaseAttributes { ipv4.leaseAttributes.merging(ipv6: ipv6.leaseAttributes) }
    public var deviceName: String? { ipv4.deviceName }

    public func start(subnet: IPNetwork) throws(OverlayError) {
        throw .invalidConfiguration("a dual-stack network needs both subnets: start(subnet:ipv6Subnet:)")
    }

    public func start(subnet: IPNetwork, ipv6Subnet: IPNetwork?) throws(OverlayError) {
        guard let ipv6Subnet else {
            throw .invalidConfiguration("the lease of \(subnet) has no IPv6 subnet, which a dual-stack network needs")
        }
        try ipv4.start(subnet: subnet)
        try ipv6.start(subnet: ipv6Subnet)
    }

    public func reconcile(peers: [Peer]) throws(OverlayError) -> ReconcileReport {
        var report = try ipv4.reconcile(peers: peers.map(\.primary))
        report.merge(try ipv6.reconcile(peers: peers.compactMap(\.ipv6Peer)))
        ipv6Subnets.withLock { m in
            m = Dictionary(peers.compactMap { p in p.ipv6Subnet.map { (p.subnet, $0) } }) { $1 }
        }
        return report
    }

    public func setPeer(_ peer: Peer) throws(OverlayError) -> ReconcileReport {
        var report = try ipv4.setPeer(peer.primary)
        let old = ipv6Subnets.withLock { m in
            let old = m[peer.subnet]
            m[peer.subnet] = peer.ipv6Subnet
            return old
        }
        if let old, old != peer.ipv6Subnet { report.merge(try ipv6.removePeer(subnet: old)) }
        if let v6 = peer.ipv6Peer { report.merge(try ipv6.setPeer(v6)) }
        return report
    }

    public func removePeer(subnet: IPNetwork) throws(OverlayError) -> ReconcileReport {
        var report = try ipv4.removePeer(subnet: subnet)
        if let v6 = ipv6Subnets.withLock({ $0.removeValue(forKey: subnet.network) }) {
            report.merge(try ipv6.removePeer(subnet: v6))
        }
        return report
    }
}
