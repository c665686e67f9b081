// Links: read, create (bridge, veth; tunnels in Tunnels.swift), change (up, master, MTU, MAC, promisc), delete.

import Addressing
import CLibNL

/// A network interface as the kernel reports it (RTM_GETLINK).
public struct Link: Equatable, Sendable {
    public var index: Int32
    public var name: String
    /// IFLA_INFO_KIND: "bridge", "veth", "vxlan", ...; nil for devices without one (lo, physical).
    public var kind: String?
    public var mtu: Int
    public var mac: MACAddress?
    public var flags: UInt32
    /// The bridge (or other master) this link is enslaved to.
    public var master: Int32?
    /// IFLA_LINK: for a veth, the peer's index (in the peer's namespace).
    public var parentIndex: Int32?
    /// IFLA_OPERSTATE (RFC 2863): 6 is "up".
    public var operState: UInt8
    /// IFLA_INFO_DATA of a VXLAN device.
    public var vxlan: VXLANAttributes?
    /// IFLA_INFO_DATA of an IPIP device.
    public var ipip: IPIPAttributes?

    public var isUp: Bool { flags & 0x1 != 0 }  // IFF_UP
    public var isPromiscuous: Bool { flags & 0x100 != 0 }  // IFF_PROMISC
    public var isOperUp: Bool { operState == 6 }  // IF_OPER_UP

    /// A link value built by hand, for fakes of the kernel in tests.
    public init(
        index: Int32, name: String, kind: String? = nil, mtu: Int = 1500, mac: MACAddress? = nil, flags: UInt32 = 0,
        master: Int32? = nil, parentIndex: Int32? = nil, operState: UInt8 = 0, vxlan: VXLANAttributes? = nil,
        ipip: IPIPAttributes? = nil
    ) {
        self.index = index; self.name = name; self.kind = kind; self.mtu = mtu; self.mac = mac; self.flags = flags
        self.master = master; self.parentIndex = parentIndex; self.operState = operState; self.vxlan = vxlan;
        self.ipip = ipip
    }

    init(_ l: OpaquePointer) {
        index = rtnl_link_get_ifindex(l)
        name = rtnl_link_get_name(l).map { String(cString: $0) } ?? ""
        kind = rtnl_link_get_type(l).map { String(cString: $0) }
        mtu = Int(rtnl_link_get_mtu(l))
        mac = MACAddress(nlAddr: rtnl_link_get_addr(l))
        flags = rtnl_link_get_flags(l)
        let m = rtnl_link_get_master(l)
        master = m > 0 ? m : nil
        let p = rtnl_link_get_link(l)
        parentIndex = p > 0 ? p : nil
        operState = rtnl_link_get_operstate(l)
        vxlan = VXLANAttributes(link: l)
        ipip = IPIPAttributes(link: l)
    }
}

/// What to change on an existing link; nil fields stay as they are.
public struct LinkChange: Equatable, Sendable {
    public var up: Bool?
    public var promiscuous: Bool?
    public var master: Int32?
    public var mtu: Int?
    public var mac: MACAddress?
    /// A new name; the kernel refuses to rename a link that is up (EBUSY).
    public var name: String?
    public init(
        up: Bool? = nil, promiscuous: Bool? = nil, master: Int32? = nil, mtu: Int? = nil, mac: MACAddress? = nil,
        name: String? = nil
    ) {
        self.up = up; self.promiscuous = promiscuous; self.master = master; self.mtu = mtu; self.mac = mac
        self.name = name
    }
}

extension NetlinkSession {
    /// The link named `name`, or nil when there is none.
    // ip link show <name>
    public func link(named name: String) throws(NetlinkError) -> Link? {
        try getLink(index: 0, name: name)
    }

    /// The link with index `index`, or nil when there is none.
    // ip link show dev <index>
    public func link(index: Int32) throws(NetlinkError) -> Link? {
        try getLink(index: index, name: nil)
    }

    private func getLink(index: Int32, name: String?) throws(NetlinkError) -> Link? {
        var l: OpaquePointer?
        let rc = rtnl_link_get_kernel(sock, index, name, &l)
        if rc < 0 {
            let e = NetlinkError.libnl(
                NLECode(rc), operation: "RTM_GETLINK \(name ?? String(index))",
                message: String(cString: nl_geterror(rc)))
            if e.isNotFound { return nil }
            throw e
        }
        defer { rtnl_link_put(l) }
        return Link(l!)
    }

    /// All links in this namespace.
    // ip link show
    public func links() throws(NetlinkError) -> [Link] {
        var cache: OpaquePointer?
        try check(rtnl_link_alloc_cache(sock, AF_UNSPEC, &cache), "RTM_GETLINK dump")
        var out: [Link] = []
        forEachObject(in: cache!) { out.append(Link($0)) }
        return out
    }

    /// Creates a bridge. Fails with `.exists` when a link of that name exists (NLM_F_EXCL).
    // ip link add <name> [mtu <mtu>] type bridge
    public func addBridge(name: String, mtu: Int?) throws(NetlinkError) {
        let l = rtnl_link_alloc()!
        defer { rtnl_link_put(l) }
        try check(rtnl_link_set_type(l, "bridge"), "set type bridge")
        rtnl_link_set_name(l, name)
        if let mtu, mtu > 0 { rtnl_link_set_mtu(l, try u32(mtu, "bridge \(name) mtu")) }
        try check(rtnl_link_add(sock, l, NLM_F_CREATE | NLM_F_EXCL), "RTM_NEWLINK bridge \(name)")
    }

    /// Creates a veth pair: `name` in this session's namespace, `peerName` in the namespace whose
    /// handle is `peerNamespaceFD` (IFLA_NET_NS_FD on the peer). Both ends get `mtu`; `mac`, when
    /// given, goes on `name`. Fails with `.exists` when either name is taken (NLM_F_EXCL).
    // ip link add <name> [mtu <mtu>] [address <mac>] type veth peer name <peerName> netns <fd>
    public func addVeth(name: String, peerName: String, peerNamespaceFD: Int32?, mtu: Int?, mac: MACAddress?)
        throws(NetlinkError)
    {
        guard let l = rtnl_link_veth_alloc() else { throw .invalidArgument("rtnl_link_veth_alloc failed") }
        defer { rtnl_link_veth_release(l) }
        let peer = rtnl_link_veth_get_peer(l)!
        defer { rtnl_link_put(peer) }
        rtnl_link_set_name(l, name)
        rtnl_link_set_name(peer, peerName)
        if let mtu, mtu > 0 {
            let m = try u32(mtu, "veth \(name) mtu")
            rtnl_link_set_mtu(l, m)
            rtnl_link_set_mtu(peer, m)
        }
        if let mac {
            let a = mac.nlAddr()
            defer { nl_addr_put(a) }
            rtnl_link_set_addr(l, a)
        }
        if let fd = peerNamespaceFD { rtnl_link_set_ns_fd(peer, fd) }
        try check(rtnl_link_add(sock, l, NLM_F_CREATE | NLM_F_EXCL), "RTM_NEWLINK veth \(name) peer \(peerName)")
    }

    /// Applies `change` to the link with index `index`.
    // ip link set dev <index> [up|down] [promisc on|off] [master <m>] [mtu <n>] [address <mac>] [name <n>]
    public func setLink(_ index: Int32, _ change: LinkChange) throws(NetlinkError) {
        let orig = rtnl_link_alloc()!, c = rtnl_link_alloc()!
        defer { rtnl_link_put(orig); rtnl_link_put(c) }
        rtnl_link_set_ifindex(orig, index)
        if let up = change.up {
            up ? rtnl_link_set_flags(c, 0x1) : rtnl_link_unset_flags(c, 0x1)
        }
        if let p = change.promiscuous {
            p ? rtnl_link_set_flags(c, 0x100) : rtnl_link_unset_flags(c, 0x100)
        }
        if let m = change.master { rtnl_link_set_master(c, m) }
        if let mtu = change.mtu { rtnl_link_set_mtu(c, try u32(mtu, "ifindex \(index) mtu")) }
        if let name = change.name { rtnl_link_set_name(c, name) }
        if let mac = change.mac {
            let a = mac.nlAddr()
            defer { nl_addr_put(a) }
            rtnl_link_set_addr(c, a)
        }
        try check(rtnl_link_change(sock, orig, c, 0), "RTM_NEWLINK change ifindex \(index)")
    }

    /// Deletes the link; `.notFound` when it does not exist. Deleting one end of a veth deletes
    /// the other as well.
    // ip link del dev <index>
    public func deleteLink(_ index: Int32) throws(NetlinkError) {
        let l = rtnl_link_alloc()!
        defer { rtnl_link_put(l) }
        rtnl_link_set_ifindex(l, index)
        try check(rtnl_link_delete(sock, l), "RTM_DELLINK ifindex \(index)")
    }
}
