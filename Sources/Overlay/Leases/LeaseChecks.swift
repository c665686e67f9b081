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
    /// interface's and the public IPs) are `nodeAddresses`. Nil when it may; else why not. Each
    /// family the lease carries is checked against its range; in a dual-stack cluster a lease
    /// without an IPv6 subnet (a node that has not turned IPv6 on yet) is a peer for IPv4 only.
    public func check(peer lease: Lease, backendType: String, nodeAddresses: [IPAddress]) -> LeaseRejection? {
        let a = lease.attributes
        let v4 = primary.family == .v4
        guard let ip = v4 ? a.publicIP : a.publicIPv6 else {
            return LeaseRejection(.unusablePublicIP, "it has no PublicIPv6, which an IPv6-only cluster needs")
        }
        let mac = v4 ? a.vtepMAC : a.ipv6VtepMAC
        if let r = check(lease.subnet, primary, publicIP: ip, mac: mac, nodeAddresses, needsMAC: false) { return r }
        guard a.backendType == backendType else {
            return LeaseRejection(.otherBackend, "its BackendType is \"\(a.backendType)\", not \"\(backendType)\"")
        }
        let vxlan = backendType == "vxlan"
        if vxlan, let r = check(lease.subnet, primary, publicIP: ip, mac: mac, nodeAddresses, needsMAC: true) {
            return r
        }
        if let ipv6, isDualStack, let v6 = lease.ipv6Subnet, let ip6 = a.publicIPv6 {
            return check(v6, ipv6, publicIP: ip6, mac: a.ipv6VtepMAC, nodeAddresses, needsMAC: vxlan)
        }
        return nil
    }

    /// One family's side of a lease: its subnet in `range`, its public IP and, with `needsMAC`, its
    /// VTEP MAC.
    private func check(
        _ subnet: IPNetwork, _ range: SubnetRange, publicIP ip: IPAddress, mac: MACAddress?,
        _ nodeAddresses: [IPAddress], needsMAC: Bool
    ) -> LeaseRejection? {
        let network = range.network
        let (name, lenKey, ipKey, macKey) =
            range.family == .v4
            ? ("Network", "SubnetLen", "PublicIP", "VtepMAC")
            : ("IPv6Network", "IPv6SubnetLen", "PublicIPv6", "BackendV6Data.VtepMAC")
        guard subnet.family == network.family, network.contains(subnet.address),
            subnet.prefixLength >= network.prefixLength
        else {
            return LeaseRejection(.outsideNetwork, "its subnet \(subnet) is not inside the \(name) \(network)")
        }
        guard subnet.prefixLength == range.subnetLength else {
            return LeaseRejection(
                .wrongSubnetLength, "its subnet \(subnet) is not a /\(range.subnetLength) (\(lenKey))")
        }
        if let mine = nodeAddresses.first(where: { subnet.contains($0) }) {
            return LeaseRejection(.coversThisNode, "its subnet \(subnet) contains this node's address \(mine)")
        }
        if ip.family != range.family {
            return LeaseRejection(.unusablePublicIP, "its \(ipKey) \(ip) is not of the subnet's family")
        }
        if let problem = ip.underlayProblem {
            return LeaseRejection(.unusablePublicIP, "its \(ipKey) \(ip) is \(problem)")
        }
        if network.contains(ip) {
            return LeaseRejection(.unusablePublicIP, "its \(ipKey) \(ip) is inside the overlay \(name) \(network)")
        }
        if nodeAddresses.contains(ip) {
            return LeaseRejection(.ownPublicIP, "its \(ipKey) \(ip) is this node's own address")
        }
        if needsMAC {
            guard let mac else { return LeaseRejection(.unusableVtepMAC, "it has no \(macKey)") }
            if let problem = mac.vtepProblem {
                return LeaseRejection(.unusableVtepMAC, "its \(macKey) \(mac) is \(problem)")
            }
        }
        return nil
    }

    /// Why this config cannot be used on a node whose underlay addresses are `nodeAddresses`, or
    /// nil: a subnet this node might lease (SubnetMin...SubnetMax, of either family) must not
    /// contain one of them, or the node would route its own underlay traffic into its bridge.
    public func problem(onNodeWith nodeAddresses: [IPAddress]) -> ConfigError? {
        for range in [ipv4, ipv6].compactMap({ $0 }) {
            let (minKey, maxKey) =
                range.family == .v4 ? ("SubnetMin", "SubnetMax") : ("IPv6SubnetMin", "IPv6SubnetMax")
            for ip in nodeAddresses where ip.family == range.family && ip >= range.subnetMin && ip <= range.lastLeasable
            {
                return ConfigError(
                    "the subnets of \(range.family == .v4 ? "Network" : "IPv6Network") \(range.network) "
                        + "(\(minKey) \(range.subnetMin), \(maxKey) \(range.subnetMax)) contain "
                        + "this node's underlay address \(ip): choose a network, or \(minKey)/\(maxKey), that leaves it out"
                )
            }
        }
        return nil
    }
}
