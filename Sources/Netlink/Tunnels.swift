// Tunnel devices: VXLAN and IPIP. Created with NLM_F_EXCL; their IFLA_INFO_DATA is read back into
// `Link.vxlan` / `Link.ipip` so that an "ensure" can compare an existing device with the wanted one.

import Addressing
import CLibNL

/// The attributes of a VXLAN device that decide whether it is the device a caller wants.
public struct VXLANAttributes: Equatable, Sendable {
    /// IFLA_VXLAN_ID, 1...16777215.
    public var vni: UInt32
    /// IFLA_VXLAN_LOCAL: the source address of encapsulated packets.
    public var local: IPAddress?
    /// IFLA_VXLAN_PORT: the UDP destination port. On creation nil leaves the kernel default
    /// (8472 on Linux); a device read back always has one.
    public var port: UInt16?
    /// IFLA_VXLAN_LEARNING: learn remote MACs from received packets. The kernel default is on.
    public var learning: Bool
    /// IFLA_VXLAN_LINK: the underlay device encapsulated packets leave through.
    public var underlyingInterface: Int32?
    /// IFLA_VXLAN_GBP: group-based policy extension.
    public var gbp: Bool

    public init(
        vni: UInt32, local: IPAddress? = nil, port: UInt16? = nil, learning: Bool = false,
        underlyingInterface: Int32? = nil, gbp: Bool = false
    ) {
        self.vni = vni; self.local = local; self.port = port; self.learning = learning
        self.underlyingInterface = underlyingInterface; self.gbp = gbp
    }

    /// Reads the attributes of `l`, or nil when it is not a VXLAN device.
    init?(link l: OpaquePointer) {
        guard rtnl_link_is_vxlan(l) != 0 else { return nil }
        var id: UInt32 = 0
        guard rtnl_link_vxlan_get_id(l, &id) == 0 else { return nil }
        vni = id
        var a: OpaquePointer?
        if rtnl_link_vxlan_get_local(l, &a) == 0, let a {
            local = IPAddress(nlAddr: a)
            nl_addr_put(a)
        }
        var p: UInt32 = 0
        if rtnl_link_vxlan_get_port(l, &p) == 0 { port = UInt16(truncatingIfNeeded: p) }
        learning = rtnl_link_vxlan_get_learning(l) > 0
        var dev: UInt32 = 0
        if rtnl_link_vxlan_get_link(l, &dev) == 0, dev > 0 { underlyingInterface = Int32(bitPattern: dev) }
        var f: UInt32 = 0
        gbp = rtnl_link_vxlan_get_flags(l, &f) == 0 && f & UInt32(RTNL_LINK_VXLAN_F_GBP) != 0
    }
}

/// The attributes of an IPIP (IPv4-in-IPv4) tunnel device.
public struct IPIPAttributes: Equatable, Sendable {
    /// IFLA_IPTUN_LOCAL; nil: any.
    public var local: IPAddress?
    /// IFLA_IPTUN_REMOTE; nil: any (a point-to-multipoint device routed by per-route gateways).
    public var remote: IPAddress?
    /// IFLA_IPTUN_LINK: the underlay device.
    public var underlyingInterface: Int32?
    /// IFLA_IPTUN_TTL; 0 inherits the inner packet's TTL.
    public var ttl: UInt8
    /// IFLA_IPTUN_PMTUDISC: set DF on outer packets. Off needs TTL inherit.
    public var pathMTUDiscovery: Bool

    public init(
        local: IPAddress?, remote: IPAddress? = nil, underlyingInterface: Int32? = nil, ttl: UInt8 = 0,
        pathMTUDiscovery: Bool = false
    ) {
        self.local = local; self.remote = remote; self.underlyingInterface = underlyingInterface; self.ttl = ttl
        self.pathMTUDiscovery = pathMTUDiscovery
    }

    init?(link l: OpaquePointer) {
        guard rtnl_link_is_ipip(l) != 0 else { return nil }
        // libnl keeps tunnel addresses as in_addr.s_addr: network byte order in a host integer.
        func ip(_ raw: UInt32) -> IPAddress? {
            raw == 0 ? nil : IPAddress(family: .v4, value: UInt128(UInt32(bigEndian: raw)))
        }
        local = ip(rtnl_link_ipip_get_local(l))
        remote = ip(rtnl_link_ipip_get_remote(l))
        let dev = rtnl_link_ipip_get_link(l)
        underlyingInterface = dev > 0 ? Int32(bitPattern: dev) : nil
        ttl = rtnl_link_ipip_get_ttl(l)
        pathMTUDiscovery = rtnl_link_ipip_get_pmtudisc(l) != 0
    }
}

extension NetlinkSession {
    /// Creates a VXLAN device. Fails with `.exists` when a link of that name exists (NLM_F_EXCL).
    /// `mac`, when given, becomes the device's address; otherwise the kernel picks a random one.
    /// Learning is sent explicitly (the kernel would default it on).
    // ip link add <name> [mtu <mtu>] [address <mac>] type vxlan id <vni> [local <ip>] [dev <link>]
    //     [dstport <port>] [no]learning [gbp]
    public func addVXLAN(name: String, _ attributes: VXLANAttributes, mtu: Int? = nil, mac: MACAddress? = nil)
        throws(NetlinkError)
    {
        guard let l = rtnl_link_vxlan_alloc() else { throw .invalidArgument("rtnl_link_vxlan_alloc failed") }
        defer { rtnl_link_put(l) }
        rtnl_link_set_name(l, name)
        if let mtu, mtu > 0 { rtnl_link_set_mtu(l, try u32(mtu, "vxlan \(name) mtu")) }
        if let mac {
            let a = mac.nlAddr()
            defer { nl_addr_put(a) }
            rtnl_link_set_addr(l, a)
        }
        try check(rtnl_link_vxlan_set_id(l, attributes.vni), "set vxlan id \(attributes.vni)")
        if let local = attributes.local {
            let a = local.nlAddr()
            defer { nl_addr_put(a) }
            try check(rtnl_link_vxlan_set_local(l, a), "set vxlan local \(local)")
        }
        if let dev = attributes.underlyingInterface {
            try check(rtnl_link_vxlan_set_link(l, UInt32(bitPattern: dev)), "set vxlan link \(dev)")
        }
        if let port = attributes.port { try check(rtnl_link_vxlan_set_port(l, UInt32(port)), "set vxlan port \(port)") }
        try check(rtnl_link_vxlan_set_learning(l, attributes.learning ? 1 : 0), "set vxlan learning")
        if attributes.gbp {
            try check(rtnl_link_vxlan_set_flags(l, UInt32(RTNL_LINK_VXLAN_F_GBP), 1), "set vxlan gbp")
        }
        try check(rtnl_link_add(sock, l, NLM_F_CREATE | NLM_F_EXCL), "RTM_NEWLINK vxlan \(name) id \(attributes.vni)")
    }

    /// Creates an IPIP tunnel device. Fails with `.exists` when a link of that name exists
    /// (NLM_F_EXCL), and with `.notSupported` when the kernel has no ipip support (EOPNOTSUPP,
    /// "Unknown device type": the `ipip` module is neither built in nor loadable).
    // ip link add <name> [mtu <mtu>] type ipip [local <ip>] [remote <ip>] [dev <link>] ttl <ttl> [no]pmtudisc
    public func addIPIP(name: String, _ attributes: IPIPAttributes, mtu: Int? = nil) throws(NetlinkError) {
        guard let l = rtnl_link_ipip_alloc() else { throw .invalidArgument("rtnl_link_ipip_alloc failed") }
        defer { rtnl_link_put(l) }
        rtnl_link_set_name(l, name)
        if let mtu, mtu > 0 { rtnl_link_set_mtu(l, try u32(mtu, "ipip \(name) mtu")) }
        func raw(_ ip: IPAddress) -> UInt32 { UInt32(truncatingIfNeeded: ip.value).bigEndian }
        if let local = attributes.local {
            guard local.family == .v4 else { throw .invalidArgument("ipip local \(local) is not IPv4") }
            try check(rtnl_link_ipip_set_local(l, raw(local)), "set ipip local \(local)")
        }
        if let remote = attributes.remote {
            guard remote.family == .v4 else { throw .invalidArgument("ipip remote \(remote) is not IPv4") }
            try check(rtnl_link_ipip_set_remote(l, raw(remote)), "set ipip remote \(remote)")
        }
        if let dev = attributes.underlyingInterface {
            try check(rtnl_link_ipip_set_link(l, UInt32(bitPattern: dev)), "set ipip link \(dev)")
        }
        try check(rtnl_link_ipip_set_ttl(l, attributes.ttl), "set ipip ttl")
        try check(rtnl_link_ipip_set_pmtudisc(l, attributes.pathMTUDiscovery ? 1 : 0), "set ipip pmtudisc")
        try check(rtnl_link_add(sock, l, NLM_F_CREATE | NLM_F_EXCL), "RTM_NEWLINK ipip \(name)")
    }
}
