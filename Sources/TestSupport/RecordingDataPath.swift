// An in-memory kernel for tests of the overlay (and of whatever drives it) without privileges or
// kernel modules. It follows the kernel's rules where the overlay depends on them: NLM_F_EXCL
// link creation, replace keyed like the kernel's (a route by destination and metric, a neighbour
// by address, an FDB entry by MAC), deleting a link removes everything on it, an address adds its
// prefix route, and a gateway needs a connected route unless the route is onlink. Routes have
// types: a route dump lists unicast routes only, blackholes are listed apart, and a route lookup
// (`ip route get`) picks the longest prefix, then the lowest metric, and fails like the kernel
// for a blackhole (EINVAL) or no route (ENETUNREACH).

import Addressing
import NetNS
import Netlink
import Overlay
import Synchronization

/// One call into the data path, with the exact objects handed over.
public enum DataPathCall: Equatable, Sendable {
    case link(String), links
    case addVXLAN(name: String, VXLANAttributes, mtu: Int?, mac: MACAddress?)
    case addIPIP(name: String, IPIPAttributes, mtu: Int?)
    case setLink(Int32, LinkChange)
    case deleteLink(Int32)
    case addresses(link: Int32)
    case interfaceAddresses
    case addAddress(IPNetwork, link: Int32)
    case deleteAddress(IPNetwork, link: Int32)
    case routes(interface: Int32?)
    case blackholeRoutes
    case addRoute(Route)
    case replaceRoute(Route)
    case deleteRoute(Route)
    case lookupRoute(IPAddress)
    case neighbours(interface: Int32)
    case replaceNeighbour(Neighbour)
    case deleteNeighbour(IPAddress, interface: Int32)
    case fdbEntries(interface: Int32)
    case replaceFDB(FDBEntry)
    case deleteFDB(FDBEntry)
    case writeSysctl(String, String)

    /// False for reads (dumps and lookups).
    public var isChange: Bool {
        switch self {
        case .link, .links, .addresses, .interfaceAddresses, .routes, .blackholeRoutes, .lookupRoute, .neighbours,
            .fdbEntries:
            false
        default: true
        }
    }
}

/// The state of the in-memory kernel: one network namespace.
public struct FakeKernel: Sendable {
    public var links: [Link] = []
    public var addresses: [Int32: [IPNetwork]] = [:]
    /// IFA_F_* flags of an address; `InterfaceAddress.permanent` (an address added by hand) for
    /// those not listed.
    public var addressFlags: [IPAddress: UInt32] = [:]
    /// Main table only, of every type.
    public var routes: [Route] = []
    public var neighbours: [Neighbour] = []
    public var fdb: [FDBEntry] = []
    /// /proc/sys values written, by key (`net/ipv6/conf/<dev>/accept_ra`).
    public var sysctls: [String: String] = [:]
    /// Link kinds whose creation fails with EOPNOTSUPP, like a kernel without the module.
    public var unsupportedKinds: Set<String> = []
    var nextIndex: Int32 = 1

    public init() {}

    /// Adds a plain interface (an underlay NIC) with `address`, up, and its prefix route.
    @discardableResult
    public mutating func addInterface(_ name: String, address: IPNetwork, mtu: Int = 1500) -> Int32 {
        let index = nextIndex
        nextIndex += 1
        links.append(
            Link(index: index, name: name, kind: "veth", mtu: mtu, mac: .randomLocal(), flags: 0x1, operState: 6))
        addresses[index] = [address]
        routes.append(Route(destination: address.network, interface: index, scope: 253, proto: 2))
        return index
    }

    public func link(named name: String) -> Link? { links.first { $0.name == name } }

    /// The address with its flags, and the scope the kernel gives it (host for 127/8 and ::1,
    /// link for 169.254/16 and fe80::/10, global otherwise).
    func details(_ address: IPNetwork, on interface: Int32) -> InterfaceAddress {
        let a = address.address
        let linkLocal = IPNetwork(a.family == .v4 ? "169.254.0.0/16" : "fe80::/10")!
        let scope: UInt8 = a.isLoopback ? 254 : (linkLocal.contains(a) ? 253 : 0)
        return InterfaceAddress(
            network: address, interface: interface, flags: addressFlags[a] ?? InterfaceAddress.permanent,
            scope: scope)
    }
}

private func notFound(_ what: String) -> NetlinkError {
    .libnl(.notFound, operation: what, message: "Object not found")
}
private func exists(_ what: String) -> NetlinkError { .libnl(.exists, operation: what, message: "Object exists") }

public final class RecordingDataPath: DataPath {
    private let state: Mutex<(kernel: FakeKernel, calls: [DataPathCall])>

    public init(_ kernel: FakeKernel = FakeKernel()) {
        state = Mutex((kernel, []))
    }

    /// Every call so far, reads included, in order.
    public var calls: [DataPathCall] { state.withLock { $0.calls } }
    /// The calls that change the kernel, in order.
    public var changes: [DataPathCall] { calls.filter(\.isChange) }
    public func clearCalls() { state.withLock { $0.calls.removeAll() } }

    /// The kernel's state now.
    public var kernel: FakeKernel { state.withLock { $0.kernel } }
    /// Changes the kernel behind the overlay's back (an administrator's `ip` command), unrecorded.
    public func modify<T: Sendable>(_ body: (inout FakeKernel) -> T) -> T {
        state.withLock { s in
            defer { wake(s.kernel) }
            return body(&s.kernel)
        }
    }

    /// Returns once `condition` holds for the kernel (checked now and after every call): for
    /// tests of code that programs the kernel from another task.
    public func waitUntil(_ condition: @escaping @Sendable (FakeKernel) -> Bool) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            state.withLock { s in
                if condition(s.kernel) { c.resume() } else { waiters.withLock { $0.append((condition, c)) } }
            }
        }
    }

    private typealias Waiter = (
        condition: @Sendable (FakeKernel) -> Bool, continuation: CheckedContinuation<Void, Never>
    )
    /// Taken inside `state`'s lock only.
    private let waiters = Mutex<[Waiter]>([])

    private func wake(_ kernel: FakeKernel) {
        waiters.withLock { list in
            list.removeAll { w in
                guard w.condition(kernel) else { return false }
                w.continuation.resume()
                return true
            }
        }
    }

    private func record<T: Sendable>(_ call: DataPathCall, _ body: (inout FakeKernel) throws(NetlinkError) -> T)
        throws(NetlinkError) -> T
    {
        try state.withLock { (s: inout (kernel: FakeKernel, calls: [DataPathCall])) throws(NetlinkError) -> T in
            s.calls.append(call)
            defer { wake(s.kernel) }
            return try body(&s.kernel)
        }
    }

    public func link(named name: String) throws(NetlinkError) -> Link? {
        try record(.link(name)) { $0.link(named: name) }
    }
    public func links() throws(NetlinkError) -> [Link] { try record(.links) { $0.links } }

    public func addVXLAN(name: String, _ attributes: VXLANAttributes, mtu: Int?, mac: MACAddress?) throws(NetlinkError)
    {
        try record(.addVXLAN(name: name, attributes, mtu: mtu, mac: mac)) { k throws(NetlinkError) in
            var a = attributes
            a.port = a.port ?? 8472
            try Self.addLink(&k, name: name, kind: "vxlan", mtu: mtu ?? 1450, mac: mac ?? .randomLocal(), vxlan: a)
        }
    }

    public func addIPIP(name: String, _ attributes: IPIPAttributes, mtu: Int?) throws(NetlinkError) {
        try record(.addIPIP(name: name, attributes, mtu: mtu)) { k throws(NetlinkError) in
            try Self.addLink(&k, name: name, kind: "ipip", mtu: mtu ?? 1480, mac: nil, ipip: attributes)
        }
    }

    private static func addLink(
        _ k: inout FakeKernel, name: String, kind: String, mtu: Int, mac: MACAddress?,
        vxlan: VXLANAttributes? = nil, ipip: IPIPAttributes? = nil
    ) throws(NetlinkError) {
        let op = "RTM_NEWLINK \(kind) \(name)"
        if k.unsupportedKinds.contains(kind) {
            throw .libnl(.notSupported, operation: op, message: "Operation not supported")
        }
        if k.link(named: name) != nil { throw exists(op) }
        k.links.append(Link(index: k.nextIndex, name: name, kind: kind, mtu: mtu, mac: mac, vxlan: vxlan, ipip: ipip))
        k.nextIndex += 1
    }

    public func setLink(_ index: Int32, _ change: LinkChange) throws(NetlinkError) {
        try record(.setLink(index, change)) { k throws(NetlinkError) in
            guard let i = k.links.firstIndex(where: { $0.index == index }) else {
                throw notFound("RTM_NEWLINK change ifindex \(index)")
            }
            if let up = change.up {
                k.links[i].flags = up ? k.links[i].flags | 0x1 : k.links[i].flags & ~0x1
                if !up { k.routes.removeAll { $0.interface == index } }  // the kernel flushes them
            }
            if let mtu = change.mtu { k.links[i].mtu = mtu }
            if let mac = change.mac { k.links[i].mac = mac }
            if let name = change.name { k.links[i].name = name }
            if let master = change.master { k.links[i].master = master }
        }
    }

    public func deleteLink(_ index: Int32) throws(NetlinkError) {
        try record(.deleteLink(index)) { k throws(NetlinkError) in
            guard k.links.contains(where: { $0.index == index }) else { throw notFound("RTM_DELLINK ifindex \(index)") }
            if let name = k.links.first(where: { $0.index == index })?.name {
                k.sysctls = k.sysctls.filter { !$0.key.contains("/conf/\(name)/") }
            }
            k.links.removeAll { $0.index == index }
            k.addresses[index] = nil
            k.routes.removeAll { $0.interface == index }
            k.neighbours.removeAll { $0.interface == index }
            k.fdb.removeAll { $0.interface == index }
        }
    }

    public func addresses(link index: Int32, family: IPFamily?) throws(NetlinkError) -> [IPNetwork] {
        try record(.addresses(link: index)) { k in
            (k.addresses[index] ?? []).filter { family == nil || $0.family == family }
        }
    }

    public func interfaceAddresses(family: IPFamily?) throws(NetlinkError) -> [InterfaceAddress] {
        try record(.interfaceAddresses) { k in
            k.links.flatMap { l in
                (k.addresses[l.index] ?? []).filter { family == nil || $0.family == family }.map {
                    k.details($0, on: l.index)
                }
            }
        }
    }

    public func addAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError) {
        try record(.addAddress(address, link: index)) { k throws(NetlinkError) in
            let op = "RTM_NEWADDR \(address) ifindex \(index)"
            guard k.links.contains(where: { $0.index == index }) else {
                throw .libnl(.noDevice, operation: op, message: "No such device")
            }
            if k.addresses[index, default: []].contains(where: { $0.address == address.address }) { throw exists(op) }
            k.addresses[index, default: []].append(address)
            if address.prefixLength < address.family.bitWidth {
                k.routes.append(Route(destination: address.network, interface: index, scope: 253, proto: 2))
            }
        }
    }

    public func deleteAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError) {
        try record(.deleteAddress(address, link: index)) { k throws(NetlinkError) in
            guard let i = k.addresses[index]?.firstIndex(where: { $0.address == address.address }) else {
                throw .libnl(
                    .other(99), operation: "RTM_DELADDR \(address) ifindex \(index)",
                    message: "Cannot assign requested address")
            }
            k.addresses[index]!.remove(at: i)
            k.routes.removeAll { $0.interface == index && $0.proto == 2 && $0.destination == address.network }
        }
    }

    public func routes(family: IPFamily, table: UInt32, interface: Int32?) throws(NetlinkError) -> [Route] {
        try record(.routes(interface: interface)) { k in
            k.routes.filter {
                $0.type == .unicast && $0.destination.family == family && $0.table == table
                    && (interface == nil || $0.interface == interface)
            }
            .map(Self.readBack)
        }
    }

    public func blackholeRoutes(family: IPFamily, table: UInt32) throws(NetlinkError) -> [Route] {
        try record(.blackholeRoutes) { k in
            k.routes.filter { $0.type == .blackhole && $0.destination.family == family && $0.table == table }
                .map(Self.readBack)
        }
    }

    /// A route as a dump returns it: with protocol, scope and metric (IPv6: 1024 by default)
    /// filled in.
    private static func readBack(_ route: Route) -> Route {
        var r = route
        r.proto = r.proto ?? 3
        r.scope = r.scope ?? (r.type == .unicast && r.gateway == nil ? 253 : 0)
        r.priority = r.metric
        return r
    }

    /// The kernel's checks of a new route's next hop.
    private static func checkNextHop(_ route: Route, in k: FakeKernel, _ what: String) throws(NetlinkError) {
        if let i = route.interface, !k.links.contains(where: { $0.index == i }) {
            throw .libnl(.noDevice, operation: what, message: "No such device")
        }
        if let gw = route.gateway, !route.onlink {
            let connected = k.routes.contains {
                $0.type == .unicast && $0.gateway == nil && $0.destination.contains(gw)
                    && (route.interface == nil || $0.interface == route.interface)
            }
            if !connected { throw .libnl(.other(22), operation: what, message: "Nexthop has invalid gateway") }
        }
    }

    /// The kernel's key of a route in a table: destination, table, metric (TOS is always 0 here).
    private static func sameKey(_ a: Route, _ b: Route) -> Bool {
        a.destination == b.destination && a.table == b.table && a.metric == b.metric
    }

    public func addRoute(_ route: Route) throws(NetlinkError) {
        try record(.addRoute(route)) { k throws(NetlinkError) in
            let what = "RTM_NEWROUTE \(route.type) \(route.destination)"
            try Self.checkNextHop(route, in: k, what)
            if k.routes.contains(where: { Self.sameKey($0, route) }) { throw exists(what) }
            k.routes.append(route)
        }
    }

    public func replaceRoute(_ route: Route) throws(NetlinkError) {
        try record(.replaceRoute(route)) { k throws(NetlinkError) in
            let what = "RTM_NEWROUTE \(route.destination) via \(route.gateway.map(\.description) ?? "-")"
            try Self.checkNextHop(route, in: k, what)
            if let i = k.routes.firstIndex(where: { Self.sameKey($0, route) }) {
                k.routes[i] = route
            } else {
                k.routes.append(route)
            }
        }
    }

    public func lookupRoute(to destination: IPAddress) throws(NetlinkError) -> RouteLookup {
        try record(.lookupRoute(destination)) { k throws(NetlinkError) in
            let what = "RTM_GETROUTE \(destination)"
            // The local table first: an address of this host goes through the loopback device.
            if let holder = k.addresses.first(where: { $0.value.contains { $0.address == destination } })?.key {
                return RouteLookup(
                    type: .local, interface: k.link(named: "lo")?.index ?? holder, source: destination)
            }
            let best = k.routes.filter { $0.table == 254 && $0.destination.contains(destination) }
                .min { a, b in
                    a.destination.prefixLength != b.destination.prefixLength
                        ? a.destination.prefixLength > b.destination.prefixLength
                        : a.metric < b.metric
                }
            guard let best else {
                throw .libnl(.other(1), operation: what, message: "Network is unreachable")  // ENETUNREACH
            }
            switch best.type {
            case .unicast:
                let source = best.interface.flatMap { k.addresses[$0]?.first { $0.family == destination.family } }
                return RouteLookup(interface: best.interface, gateway: best.gateway, source: source?.address)
            case .blackhole: throw .libnl(.invalid, operation: what, message: "Invalid argument")  // EINVAL
            case .prohibit: throw .libnl(.permission, operation: what, message: "Permission denied")  // EACCES
            default: throw .libnl(.other(1), operation: what, message: "No route to host")  // EHOSTUNREACH
            }
        }
    }

    public func deleteRoute(_ route: Route) throws(NetlinkError) {
        try record(.deleteRoute(route)) { k throws(NetlinkError) in
            let i = k.routes.firstIndex {
                $0.destination == route.destination && $0.table == route.table && $0.type == route.type
                    && (route.gateway == nil || $0.gateway == route.gateway)
                    && (route.interface == nil || $0.interface == route.interface)
                    && (route.priority == nil || $0.metric == route.priority)
            }
            guard let i else { throw notFound("RTM_DELROUTE \(route.destination)") }
            k.routes.remove(at: i)
        }
    }

    public func neighbours(interface: Int32, family: IPFamily) throws(NetlinkError) -> [Neighbour] {
        try record(.neighbours(interface: interface)) { k in
            k.neighbours.filter { $0.interface == interface && $0.address.family == family }
        }
    }

    public func replaceNeighbour(_ neighbour: Neighbour) throws(NetlinkError) {
        try record(.replaceNeighbour(neighbour)) { k throws(NetlinkError) in
            guard k.links.contains(where: { $0.index == neighbour.interface }) else {
                throw .libnl(.noDevice, operation: "RTM_NEWNEIGH \(neighbour.address)", message: "No such device")
            }
            if let i = k.neighbours.firstIndex(where: {
                $0.interface == neighbour.interface && $0.address == neighbour.address
            }) {
                k.neighbours[i] = neighbour
            } else {
                k.neighbours.append(neighbour)
            }
        }
    }

    public func deleteNeighbour(_ address: IPAddress, interface: Int32) throws(NetlinkError) {
        try record(.deleteNeighbour(address, interface: interface)) { k throws(NetlinkError) in
            guard let i = k.neighbours.firstIndex(where: { $0.interface == interface && $0.address == address }) else {
                throw notFound("RTM_DELNEIGH \(address)")
            }
            k.neighbours.remove(at: i)
        }
    }

    public func fdbEntries(interface: Int32) throws(NetlinkError) -> [FDBEntry] {
        try record(.fdbEntries(interface: interface)) { k in k.fdb.filter { $0.interface == interface } }
    }

    public func replaceFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try record(.replaceFDB(entry)) { k throws(NetlinkError) in
            guard k.links.contains(where: { $0.index == entry.interface }) else {
                throw .libnl(.noDevice, operation: "RTM_NEWNEIGH fdb \(entry.mac)", message: "No such device")
            }
            // The kernel replaces the first remote of the MAC.
            if let i = k.fdb.firstIndex(where: { $0.interface == entry.interface && $0.mac == entry.mac }) {
                k.fdb[i] = entry
            } else {
                k.fdb.append(entry)
            }
        }
    }

    /// A sysctl of a link (`net/ipv6/conf/<dev>/...`) exists only while the link does, as in
    /// /proc/sys: ENOENT otherwise.
    public func writeSysctl(_ key: String, _ value: String) throws(NetNSError) {
        state.withLock { s in s.calls.append(.writeSysctl(key, value)) }
        let parts = key.split(separator: "/")
        let known: Bool = state.withLock { s in
            guard parts.count == 5, parts[2] == "conf", !["all", "default"].contains(parts[3]) else { return true }
            return s.kernel.link(named: String(parts[3])) != nil
        }
        guard known else { throw .system(call: "open /proc/sys/\(key)", errno: 2) }
        state.withLock { s in
            s.kernel.sysctls[key] = value
            wake(s.kernel)
        }
    }

    public func deleteFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try record(.deleteFDB(entry)) { k throws(NetlinkError) in
            let matches = { (e: FDBEntry) in
                e.interface == entry.interface && e.mac == entry.mac
                    && (entry.destination == nil || e.destination == entry.destination)
            }
            guard k.fdb.contains(where: matches) else { throw notFound("RTM_DELNEIGH fdb \(entry.mac)") }
            k.fdb.removeAll(where: matches)
        }
    }
}
