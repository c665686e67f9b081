// What podnetd accepts from etcd. Anyone who can write under the prefix can put a lease, and
// every node turns every lease into kernel state, so a lease is checked before it becomes a peer:
//
// - its subnet must be a subnet of `Network` with the configured `SubnetLen` (flanneld programs
//   any key: `192.168.77.2-32` would route the etcd server's address into the tunnel, a
//   link-local one the cloud metadata address), and must not cover this node's own addresses;
// - its PublicIP must be a usable unicast underlay address: not 0.0.0.0/8, loopback, multicast,
//   the reserved range or broadcast, not inside the overlay network, and not this node's own;
// - a vxlan lease needs a VtepMAC that is unicast and not all zeros (the kernel would take a
//   permanent neighbour entry for ff:ff:ff:ff:ff:ff and flood the peer's traffic);
// - its BackendType must be this node's (flanneld logs and ignores the others too).
//
// The checks are pure: podnetd logs each rejection once and counts it
// (`podnet_leases_rejected_total{reason}`), and the data path refuses the same values again, so
// that nothing from a rejected lease reaches the kernel whichever way it comes in.

import Addressing

/// Why a lease is not used.
public struct LeaseRejection: Equatable, Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        case outsideNetwork = "outside_network"
        case wrongSubnetLength = "wrong_subnet_length"
        case coversThisNode = "covers_this_node"
        case unusablePublicIP = "unusable_public_ip"
        case ownPublicIP = "own_public_ip"
        case unusableVtepMAC = "unusable_vtep_mac"
        case otherBackend = "other_backend"
    }

    /// A short, stable name: the metric's `reason` label.
    public var reason: Reason
    /// The sentence for the log.
    public var detail: String

    public init(_ reason: Reason, _ detail: String) { self.reason = reason; self.detail = detail }
    public var description: String { detail }
}

extension IPAddress {
    /// Why this address cannot be a peer's underlay (VXLAN or IPIP outer destination, host-gw next
    /// hop), or nil when it can.
    public var underlayProblem: String? {
        guard family == .v4 else { return ipv6UnderlayProblem }
        let v = value
        if v >> 24 == 0 { return "in 0.0.0.0/8 (\"this network\")" }
        if isLoopback { return "a loopback address" }
        if v == 0xffff_ffff { return "the broadcast address" }
        if v >> 28 == 0xe { return "a multicast address" }
        if v >> 28 == 0xf { return "in the reserved range 240.0.0.0/4" }
        return nil
    }

    private var ipv6UnderlayProblem: String? {
        let v = value
        if v == 0 { return "the unspecified address" }
        if isLoopback { return "a loopback address" }
        if v >> 120 == 0xff { return "a multicast address" }
        if v >> 118 == 0x3fa { return "a link-local address (fe80::/10), which names no node outside one link" }
        if v >> 32 == 0xffff { return "an IPv4-mapped address" }
        return nil
    }
}

extension MACAddress {
    /// Why this MAC cannot be a VTEP's (a permanent neighbour and an FDB entry), or nil.
    public var vtepProblem: String? {
        if bytes.allSatisfy({ $0 == 0 }) { return "all zeros" }
        if bytes.allSatisfy({ $0 == 0xff }) { return "the broadcast address" }
        if bytes[0] & 1 == 1 { return "a multicast address" }
        return nil
    }
}

extension NetworkConfig {
    /// Whether `lease`, another node's, may become a peer of this node, whose own addresses (the
    /// interface's and the public IP) are `nodeAddresses`. Nil when it may; else why not.
    public func check(peer lease: Lease, backendType: String, nodeAddresses: [IPAddress]) -> LeaseRejection? {
        let subnet = lease.subnet
        guard subnet.family == .v4, network.contains(subnet.address), subnet.prefixLength >= network.prefixLength else {
            return LeaseRejection(.outsideNetwork, "its subnet \(subnet) is not inside the Network \(network)")
        }
        guard subnet.prefixLength == subnetLength else {
            return LeaseRejection(.wrongSubnetLength, "its subnet \(subnet) is not a /\(subnetLength) (SubnetLen)")
        }
        if let mine = nodeAddresses.first(where: { subnet.contains($0) }) {
            return LeaseRejection(.coversThisNode, "its subnet \(subnet) contains this node's address \(mine)")
        }
        let ip = lease.attributes.publicIP
        if let problem = ip.underlayProblem {
            return LeaseRejection(.unusablePublicIP, "its PublicIP \(ip) is \(problem)")
        }
        if network.contains(ip) {
            return LeaseRejection(.unusablePublicIP, "its PublicIP \(ip) is inside the overlay Network \(network)")
        }
        if nodeAddresses.contains(ip) {
            return LeaseRejection(.ownPublicIP, "its PublicIP \(ip) is this node's own address")
        }
        guard lease.attributes.backendType == backendType else {
            return LeaseRejection(
                .otherBackend, "its BackendType is \"\(lease.attributes.backendType)\", not \"\(backendType)\"")
        }
        if backendType == "vxlan" {
            guard let mac = lease.attributes.vtepMAC else {
                return LeaseRejection(.unusableVtepMAC, "it has no VtepMAC")
            }
            if let problem = mac.vtepProblem {
                return LeaseRejection(.unusableVtepMAC, "its VtepMAC \(mac) is \(problem)")
            }
        }
        return nil
    }

    /// Why this config cannot be used on a node whose underlay addresses are `nodeAddresses`, or
    /// nil: a subnet this node might lease (SubnetMin...SubnetMax) must not contain one of them, or
    /// the node would route its own underlay traffic into its bridge.
    public func problem(onNodeWith nodeAddresses: [IPAddress]) -> ConfigError? {
        let last = subnetMax.advanced(by: (1 << (32 - subnetLength)) - 1) ?? subnetMax
        for ip in nodeAddresses where ip.family == .v4 && ip >= subnetMin && ip <= last {
            return ConfigError(
                "the subnets of Network \(network) (SubnetMin \(subnetMin), SubnetMax \(subnetMax)) contain "
                    + "this node's underlay address \(ip): choose a Network, or SubnetMin/SubnetMax, that leaves it out"
            )
        }
        return nil
    }
}
