// Interface addresses and routes in the main table.
//
// Routes have a type (rtm_type). The overlay programs and reconciles unicast routes only:
// `routes(...)` never returns anything else, so a blackhole (`ip route add blackhole <subnet>`,
// the node agent's `--ip-blackhole-route`) or an unreachable route can never be taken for a stale
// peer route and deleted. Blackholes are listed by `blackholeRoutes(...)`.

import Addressing
import CLibNL

/// rtm_type: what the kernel does with a packet the route matches. A struct, not an enum, so
/// that any type the kernel reports can be represented.
public struct RouteType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// RTN_UNICAST: forwarded through the next hop.
    public static let unicast = RouteType(rawValue: 1)
    /// RTN_LOCAL: an address of this host (the local table).
    public static let local = RouteType(rawValue: 2)
    /// RTN_BLACKHOLE: dropped silently; a sender on this host gets EINVAL.
    public static let blackhole = RouteType(rawValue: 6)
    /// RTN_UNREACHABLE: dropped with ICMP host unreachable; a local sender gets EHOSTUNREACH.
    public static let unreachable = RouteType(rawValue: 7)
    /// RTN_PROHIBIT: dropped with ICMP administratively prohibited; a local sender gets EACCES.
    public static let prohibit = RouteType(rawValue: 8)

    public var description: String {
        switch self {
        case .unicast: "unicast"
        case .local: "local"
        case .blackhole: "blackhole"
        case .unreachable: "unreachable"
        case .prohibit: "prohibit"
        default: "type \(rawValue)"
        }
    }

    /// Types whose routes have no next hop and drop what they match.
    var isReject: Bool { self == .blackhole || self == .unreachable || self == .prohibit }
}

/// An interface address with what the kernel says about it (RTM_GETADDR): its flags and scope.
public struct InterfaceAddress: Equatable, Sendable {
    /// The local address and its prefix length, e.g. 192.168.77.1/24.
    public var network: IPNetwork
    /// The link holding the address.
    public var interface: Int32
    /// IFA_F_* bits (IFA_FLAGS, or ifa_flags on old kernels).
    public var flags: UInt32
    /// RT_SCOPE_*: 0 global, 253 link, 254 host.
    public var scope: UInt8

    /// IFA_F_SECONDARY, which is also IFA_F_TEMPORARY: an IPv4 address that is not the first of
    /// its prefix on the link, or an IPv6 privacy address.
    public static let secondary: UInt32 = 0x01
    /// IFA_F_DADFAILED: IPv6 duplicate address detection found the address in use elsewhere.
    public static let dadFailed: UInt32 = 0x08
    /// IFA_F_DEPRECATED: the preferred lifetime ran out; kept, but not for new connections.
    public static let deprecated: UInt32 = 0x20
    /// IFA_F_TENTATIVE: an IPv6 address still in duplicate address detection, not yet usable.
    public static let tentative: UInt32 = 0x40
    /// IFA_F_PERMANENT: configured by hand (no lifetime), not by DHCP or SLAAC.
    public static let permanent: UInt32 = 0x80

    public var isSecondary: Bool { flags & Self.secondary != 0 }
    public var isDeprecated: Bool { flags & Self.deprecated != 0 }
    /// Tentative or failed duplicate address detection: not (yet) an address the node may use.
    public var isTentative: Bool { flags & (Self.tentative | Self.dadFailed) != 0 }
    public var isPermanent: Bool { flags & Self.permanent != 0 }

    public init(network: IPNetwork, interface: Int32, flags: UInt32 = InterfaceAddress.permanent, scope: UInt8 = 0) {
        self.network = network; self.interface = interface; self.flags = flags; self.scope = scope
    }
}

/// A route as podnet programs and reads it: one destination, at most one next hop.
public struct Route: Equatable, Sendable {
    public var destination: IPNetwork
    public var gateway: IPAddress?
    public var interface: Int32?
    /// RT_TABLE_MAIN (254) unless set.
    public var table: UInt32 = 254
    public var priority: UInt32?
    /// RT_SCOPE_UNIVERSE (0) with a gateway, RT_SCOPE_LINK (253) without, unless set.
    public var scope: UInt8?
    /// RTNH_F_ONLINK: the gateway is reachable on `interface` even without a covering route.
    public var onlink = false
    public var mtu: UInt32?
    public var advmss: UInt32?
    /// rtm_protocol, who installed the route: RTPROT_BOOT (3, as `ip route add`) unless set;
    /// 2 (RTPROT_KERNEL) for the kernel's prefix routes. Always set on routes read back.
    public var proto: UInt8?
    /// Unicast unless set. A blackhole, unreachable or prohibit route has no next hop (`gateway`
    /// and `interface` nil) and global scope.
    public var type: RouteType = .unicast

    public init(
        destination: IPNetwork, gateway: IPAddress? = nil, interface: Int32? = nil, table: UInt32 = 254,
        priority: UInt32? = nil, scope: UInt8? = nil, onlink: Bool = false, mtu: UInt32? = nil, advmss: UInt32? = nil,
        proto: UInt8? = nil, type: RouteType = .unicast
    ) {
        self.destination = destination.network; self.gateway = gateway; self.interface = interface; self.table = table
        self.priority = priority; self.scope = scope; self.onlink = onlink; self.mtu = mtu; self.advmss = advmss
        self.proto = proto; self.type = type
    }

    /// The metric the kernel gives the route: `priority`, or when nil the family's default, 0 for
    /// IPv4 and 1024 (IP6_RT_PRIO_USER) for IPv6, which an IPv6 route read back always shows.
    public var metric: UInt32 { priority ?? (destination.family == .v4 ? 0 : 1024) }

    /// A blackhole route to `destination` (`ip route add blackhole <destination> [metric <p>]`).
    public static func blackhole(
        _ destination: IPNetwork, table: UInt32 = 254, priority: UInt32? = nil, proto: UInt8? = nil
    ) -> Route {
        Route(destination: destination, table: table, priority: priority, scope: 0, proto: proto, type: .blackhole)
    }
}

extension NetlinkSession {
    /// Addresses of the link `index` (all families when `family` is nil).
    // ip addr show dev <index>
    public func addresses(link index: Int32, family: IPFamily? = nil) throws(NetlinkError) -> [IPNetwork] {
        var cache: OpaquePointer?
        try check(rtnl_addr_alloc_cache(sock, &cache), "RTM_GETADDR dump")
        var out: [IPNetwork] = []
        forEachObject(in: cache!) { o in
            guard rtnl_addr_get_ifindex(o) == index,
                let ip = IPAddress(nlAddr: rtnl_addr_get_local(o)),
                family == nil || ip.family == family,
                let n = IPNetwork(address: ip, prefixLength: Int(rtnl_addr_get_prefixlen(o)))
            else { return }
            out.append(n)
        }
        return out
    }

    /// The addresses of every link (of `family`, all families when nil) with their flags and
    /// scope, in the kernel's order: per link, primary addresses before secondary ones.
    // ip addr show
    public func interfaceAddresses(family: IPFamily? = nil) throws(NetlinkError) -> [InterfaceAddress] {
        var cache: OpaquePointer?
        try check(rtnl_addr_alloc_cache(sock, &cache), "RTM_GETADDR dump")
        var out: [InterfaceAddress] = []
        forEachObject(in: cache!) { o in
            guard let ip = IPAddress(nlAddr: rtnl_addr_get_local(o)),
                family == nil || ip.family == family,
                let n = IPNetwork(address: ip, prefixLength: Int(rtnl_addr_get_prefixlen(o)))
            else { return }
            out.append(
                InterfaceAddress(
                    network: n, interface: rtnl_addr_get_ifindex(o), flags: rtnl_addr_get_flags(o),
                    scope: UInt8(truncatingIfNeeded: rtnl_addr_get_scope(o))))
        }
        return out
    }

    /// Adds `address` to the link. `.exists` when it is already there. IPv4 addresses get the
    /// broadcast address of their prefix, as `ip addr add ... brd +` and Go's netlink do.
    // ip addr add <address> [brd +] dev <index>
    public func addAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError) {
        let a = rtnl_addr_alloc()!
        defer { rtnl_addr_put(a) }
        rtnl_addr_set_ifindex(a, index)
        let local = address.nlAddr()
        defer { nl_addr_put(local) }
        try check(rtnl_addr_set_local(a, local), "set local \(address)")
        if address.family == .v4 && address.prefixLength < 31 {
            let brd = address.lastAddress.nlAddr()
            defer { nl_addr_put(brd) }
            try check(rtnl_addr_set_broadcast(a, brd), "set broadcast \(address)")
        }
        try check(rtnl_addr_add(sock, a, NLM_F_EXCL), "RTM_NEWADDR \(address) ifindex \(index)")
    }

    /// Removes `address` from the link. `.notFound`-like errors when it is not there.
    // ip addr del <address> dev <index>
    public func deleteAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError) {
        let a = rtnl_addr_alloc()!
        defer { rtnl_addr_put(a) }
        rtnl_addr_set_ifindex(a, index)
        let local = address.nlAddr()
        defer { nl_addr_put(local) }
        try check(rtnl_addr_set_local(a, local), "set local \(address)")
        try check(rtnl_addr_delete(sock, a, 0), "RTM_DELADDR \(address) ifindex \(index)")
    }

    /// Unicast routes of `family` in `table` (main by default).
    // ip [-6] route show table <table>
    public func routes(family: IPFamily, table: UInt32 = 254) throws(NetlinkError) -> [Route] {
        try routes(family: family, table: table, interface: nil)
    }

    /// Unicast routes of `family` in `table` whose next hop leaves through the link `interface`
    /// (all of them when nil). One dump; replies are parsed one by one, not through a cache.
    /// Never a blackhole or another type (see the file's note).
    // ip [-6] route show table <table> [dev <interface>] type unicast
    public func routes(family: IPFamily, table: UInt32 = 254, interface: Int32?) throws(NetlinkError) -> [Route] {
        try routes(family: family, table: table, interface: interface, type: .unicast)
    }

    /// Blackhole routes of `family` in `table`.
    // ip [-6] route show table <table> type blackhole
    public func blackholeRoutes(family: IPFamily, table: UInt32 = 254) throws(NetlinkError) -> [Route] {
        try routes(family: family, table: table, interface: nil, type: .blackhole)
    }

    private func routes(family: IPFamily, table: UInt32, interface: Int32?, type: RouteType) throws(NetlinkError)
        -> [Route]
    {
        var out: [Route] = []
        try dump(
            "RTM_GETROUTE dump",
            request: { () throws(NetlinkError) -> Request in
                Request(
                    type: Int32(RTM_GETROUTE), flags: NLM_F_DUMP,
                    header: rtmsg(
                        rtm_family: UInt8(family.af), rtm_dst_len: 0, rtm_src_len: 0, rtm_tos: 0, rtm_table: 0,
                        rtm_protocol: 0, rtm_scope: 0, rtm_type: 0, rtm_flags: 0))
            }, restart: { out.removeAll() },
            parse: { hdr in
                var o: OpaquePointer?
                guard rtnl_route_parse(hdr, &o) >= 0, let o else { return }
                defer { rtnl_route_put(o) }
                guard rtnl_route_get_family(o) == family.af, rtnl_route_get_table(o) == table,
                    rtnl_route_get_type(o) == type.rawValue
                else { return }
                let d = rtnl_route_get_dst(o)
                let dst: IPNetwork
                if let d, let ip = IPAddress(nlAddr: d) {
                    dst = IPNetwork(address: ip, prefixLength: Int(nl_addr_get_prefixlen(d)))!
                } else {
                    dst = IPNetwork(address: IPAddress(family: family, value: 0), prefixLength: 0)!
                }
                var r = Route(
                    destination: dst, table: table, priority: rtnl_route_get_priority(o),
                    scope: rtnl_route_get_scope(o),
                    proto: rtnl_route_get_protocol(o), type: type)
                if rtnl_route_get_nnexthops(o) > 0, let nh = rtnl_route_nexthop_n(o, 0) {
                    r.gateway = IPAddress(nlAddr: rtnl_route_nh_get_gateway(nh))
                    let i = rtnl_route_nh_get_ifindex(nh)
                    r.interface = i > 0 ? i : nil
                    r.onlink = rtnl_route_nh_get_flags(nh) & 0x4 != 0
                }
                if let interface, r.interface != interface { return }
                out.append(r)
            })
        return out
    }

    /// Adds a route; `.exists` when one with the same destination, table, TOS and priority is
    /// there, whatever its type (NLM_F_EXCL).
    // ip route add [blackhole] <dst> [via <gw>] [dev <if>] [onlink] [metric <p>] [mtu <m>] [advmss <a>] [table <t>]
    public func addRoute(_ route: Route) throws(NetlinkError) {
        try modifyRoute(route, add: true, flags: NLM_F_EXCL)
    }

    /// Adds a route or overwrites the one with the same destination, table, TOS and priority
    /// (NLM_F_CREATE|NLM_F_REPLACE): its gateway, interface and flags become `route`'s. Idempotent.
    // ip route replace <dst> [via <gw>] [dev <if>] [onlink] [metric <p>] [mtu <m>] [advmss <a>] [table <t>]
    public func replaceRoute(_ route: Route) throws(NetlinkError) {
        try modifyRoute(route, add: true, flags: NLM_F_REPLACE)
    }

    /// Deletes a route matching destination, table, type, and (if set) gateway and interface: a
    /// unicast route's deletion never removes a blackhole to the same destination.
    // ip route del [blackhole] <dst> [via <gw>] [dev <if>] [table <t>]
    public func deleteRoute(_ route: Route) throws(NetlinkError) {
        try modifyRoute(route, add: false, flags: 0)
    }

    private func modifyRoute(_ route: Route, add: Bool, flags: Int32) throws(NetlinkError) {
        let r = rtnl_route_alloc()!
        defer { rtnl_route_put(r) }
        let fam = route.destination.family
        try check(rtnl_route_set_family(r, UInt8(fam.af)), "set family")
        let dst = route.destination.nlAddr()
        defer { nl_addr_put(dst) }
        try check(rtnl_route_set_dst(r, dst), "set dst \(route.destination)")
        rtnl_route_set_table(r, route.table)
        // The kernel compares the type on delete too (fib_table_delete).
        try check(rtnl_route_set_type(r, route.type.rawValue), "set type \(route.type)")
        if add {
            rtnl_route_set_protocol(r, route.proto ?? 3)  // RTPROT_BOOT, as `ip route add`
            // iproute2's defaults: link scope for a unicast route without a gateway, else global.
            let linkScope = route.type == .unicast && route.gateway == nil
            rtnl_route_set_scope(r, route.scope ?? (linkScope ? 253 : 0))
        } else {
            // RT_SCOPE_NOWHERE matches any scope on delete, protocol 0 any protocol (libnl would
            // send RTPROT_STATIC, which the kernel compares with the route's and then misses).
            rtnl_route_set_scope(r, 255)
            rtnl_route_set_protocol(r, 0)
        }
        if let p = route.priority { rtnl_route_set_priority(r, p) }
        if let m = route.mtu { try check(rtnl_route_set_metric(r, Int32(RTAX_MTU), m), "set mtu") }
        if let m = route.advmss { try check(rtnl_route_set_metric(r, Int32(RTAX_ADVMSS), m), "set advmss") }
        if route.type.isReject && (route.gateway != nil || route.interface != nil) {
            throw .invalidArgument("a \(route.type) route to \(route.destination) has no next hop")
        }
        if route.gateway != nil || route.interface != nil {
            let nh = rtnl_route_nh_alloc()!
            if let i = route.interface { rtnl_route_nh_set_ifindex(nh, i) }
            if let gw = route.gateway {
                let g = gw.nlAddr()
                rtnl_route_nh_set_gateway(nh, g)
                nl_addr_put(g)
            }
            if route.onlink { rtnl_route_nh_set_flags(nh, 0x4) }  // RTNH_F_ONLINK
            rtnl_route_add_nexthop(r, nh)  // the route owns nh from here
        }
        // Printed only for an error: formatting it for every route of a large cluster costs more
        // than libnl's encoding.
        func what() -> String {
            (route.type == .unicast ? "" : "\(route.type) ")
                + "\(route.destination) via \(route.gateway.map(\.description) ?? "-") dev \(route.interface.map(String.init) ?? "-")"
        }
        if add {
            try check(rtnl_route_add(sock, r, flags), "RTM_NEWROUTE \(what())")
        } else {
            try check(rtnl_route_delete(sock, r, 0), "RTM_DELROUTE \(what())")
        }
    }
}
