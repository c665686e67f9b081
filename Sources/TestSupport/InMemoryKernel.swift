// An in-memory kernel for the CNI plugins (PluginKernel), so that bridge, loopback and portmap run
// in-process without root. It keeps what a user would look at with `ip link`, `ip addr`,
// `ip route` and `sysctl`, per network namespace, and follows the kernel's rules where the
// plugins depend on them:
// - names are unique per namespace and creation is exclusive (NLM_F_EXCL: `.exists`);
// - a veth pair may span two namespaces (the peer moved by its namespace handle); deleting
//   either end, or the namespace of either end, deletes both; a veth is operationally up only
//   when both ends are up;
// - a link that is up cannot be renamed (EBUSY); deleting a bridge releases its ports;
// - an address on an up link adds its prefix route (proto kernel, scope link); a route through a
//   gateway needs a route to the gateway unless it is onlink; lo gets 127.0.0.1/8 and ::1 when it
//   comes up;
// - /proc/sys/net/.../conf/<if>/ exists only for links of that namespace.
// Calls run in "the calling thread's namespace": the host's, or the one entered with `run`.
// One plugin invocation at a time per kernel, as a plugin process is single-threaded.

import Addressing
import NetNS
import Netlink
import PluginKernel
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public final class InMemoryKernel: PluginKernel {
    /// What `ip` and `sysctl` would show in one network namespace.
    public struct Namespace: Sendable {
        public var links: [Link] = []
        public var addresses: [Int32: [IPNetwork]] = [:]
        /// Routes added explicitly; prefix routes of addresses are derived (`routes`).
        public var staticRoutes: [Route] = []
        public var sysctls: [String: String] = [:]
        /// Bridge port flags set over netlink, by port index.
        public var hairpin: [Int32: Bool] = [:]
        public var isolated: [Int32: Bool] = [:]
        var nextIndex: Int32 = 2

        public func link(named name: String) -> Link? { links.first { $0.name == name } }
        public func link(index: Int32) -> Link? { links.first { $0.index == index } }
        public func addresses(of name: String) -> [IPNetwork] {
            link(named: name).map { addresses[$0.index] ?? [] } ?? []
        }

        /// Main table routes, the prefix routes of addresses on up links first.
        public var routes: [Route] {
            var out: [Route] = []
            for l in links where l.isUp {
                for a in addresses[l.index] ?? [] where !a.address.isLoopback {
                    out.append(Route(destination: a.network, interface: l.index, scope: 253, proto: 2))
                }
            }
            return out + staticRoutes
        }
    }

    /// The operations that `fail(_:)` can make fail.
    public enum Operation: Hashable, Sendable {
        case addBridge, addVeth, setLink, setBridgePort, deleteLink, addAddress, deleteAddress, addRoute
        case writeSysctl
    }

    struct VethEnd: Hashable { var namespace: Int; var index: Int32 }

    struct State {
        var namespaces: [Int: Namespace] = [:]
        var paths: [String: Int] = [:]
        var notNamespaces: Set<String> = []
        var peers: [VethEnd: VethEnd] = [:]
        var current: [Int] = [0]
        var failures: [Operation: NetlinkError] = [:]
        var macs: UInt32 = 0
    }

    let state = Mutex(State())
    /// Fake descriptors: namespace `n` is handle `fdBase + n`.
    static let fdBase: Int32 = 1000
    /// The path of the host's namespace.
    public static let hostPath = "/proc/1/ns/net"

    /// A host namespace with `lo` (index 1, up, 127.0.0.1/8 and ::1/128) and nothing else.
    public init() {
        state.withLock { s in
            s.namespaces[0] = Self.fresh(loUp: true)
            s.paths[Self.hostPath] = 0
        }
    }

    /// What the kernel puts on `lo` when it comes up.
    static let loopbackAddresses = [IPNetwork("127.0.0.1/8")!, IPNetwork("::1/128")!]

    private static func fresh(loUp: Bool) -> Namespace {
        var ns = Namespace()
        ns.links = [
            Link(
                index: 1, name: "lo", mtu: 65536, mac: MACAddress(bytes: [0, 0, 0, 0, 0, 0])!,
                flags: loUp ? 0x9 : 0x8, operState: 0)
        ]
        if loUp { ns.addresses[1] = loopbackAddresses }
        return ns
    }

    // MARK: Setting up and inspecting

    /// Creates a namespace at `path` (as `ip netns add`), with `lo` down and without addresses, as
    /// the kernel creates it.
    public func addNamespace(_ path: String) {
        state.withLock { s in
            let id = (s.namespaces.keys.max() ?? 0) + 1
            s.namespaces[id] = Self.fresh(loUp: false)
            s.paths[path] = id
        }
    }

    /// Deletes the namespace at `path` (as `ip netns delete` of its last reference): its links go,
    /// and so do the other ends of its veths.
    public func removeNamespace(_ path: String) {
        state.withLock { s in
            guard let id = s.paths.removeValue(forKey: path), let ns = s.namespaces.removeValue(forKey: id) else {
                return
            }
            for l in ns.links {
                guard let peer = s.peers.removeValue(forKey: VethEnd(namespace: id, index: l.index)) else { continue }
                s.peers[peer] = nil
                Self.removeLink(&s, peer)
            }
        }
    }

    /// Makes `path` a plain file: opening it as a namespace fails with `.notANamespace`.
    public func addPlainFile(_ path: String) {
        state.withLock { _ = $0.notNamespaces.insert(path) }
    }

    /// The namespace at `path` (the host's when nil), as `ip` would show it now.
    public func namespace(at path: String? = nil) -> Namespace? {
        state.withLock { s in s.paths[path ?? Self.hostPath].flatMap { s.namespaces[$0] } }
    }

    /// The host namespace, as `ip` would show it now.
    public var host: Namespace { namespace()! }

    /// Changes the namespace at `path` (the host's when nil) directly, as a user with `ip` would.
    public func modify(_ path: String? = nil, _ body: (inout Namespace) -> Void) {
        state.withLock { s in
            guard let id = s.paths[path ?? Self.hostPath] else { return }
            body(&s.namespaces[id]!)
        }
    }

    /// Adds a link of `kind` in the namespace at `path` (the host's when nil), as `ip link add`.
    @discardableResult
    public func addLink(_ name: String, kind: String?, up: Bool = true, in path: String? = nil) -> Int32 {
        state.withLock { s in
            let id = s.paths[path ?? Self.hostPath]!
            return Self.newLink(&s, id, name: name, kind: kind, mtu: nil, mac: nil, up: up)
        }
    }

    /// Makes the next `operation` fail with `error`, in whatever namespace it runs.
    public func fail(
        _ operation: Operation,
        with error: NetlinkError = .libnl(.invalid, operation: "injected", message: "Invalid input data or parameter")
    ) {
        state.withLock { $0.failures[operation] = error }
    }

    // MARK: PluginKernel

    public func namespace(path: String) throws(NetNSError) -> any NamespaceHandle {
        let id = try state.withLock { (s: inout State) throws(NetNSError) -> Int in
            if s.notNamespaces.contains(path) { throw .notANamespace(path: path) }
            guard let id = s.paths[path] else { throw .notFound(path: path) }
            return id
        }
        return Handle(kernel: self, id: id, path: path)
    }

    public func currentNamespace() throws(NetNSError) -> any NamespaceHandle {
        let (id, path) = state.withLock { s in
            let id = s.current.last!
            return (id, s.paths.first { $0.value == id }?.key ?? "")
        }
        return Handle(kernel: self, id: id, path: path)
    }

    public func routeSocket() throws(NetlinkError) -> any RouteSocket {
        Socket(kernel: self, namespace: state.withLock { $0.current.last! })
    }

    public func writeSysctl(_ key: String, _ value: String) throws(NetNSError) {
        try state.withLock { (s: inout State) throws(NetNSError) in
            let id = s.current.last!
            try Self.checkSysctl(s, id, key)
            if s.failures.removeValue(forKey: .writeSysctl) != nil {
                throw .system(call: "write /proc/sys/\(key)", errno: EACCES)
            }
            s.namespaces[id]!.sysctls[key] = value
        }
    }

    public func readSysctl(_ key: String) throws(NetNSError) -> String {
        try state.withLock { (s: inout State) throws(NetNSError) -> String in
            let id = s.current.last!
            try Self.checkSysctl(s, id, key)
            // Unset keys read as the kernel's default for the ones the plugins read.
            return s.namespaces[id]!.sysctls[key] ?? "0"
        }
    }

    /// Deletes the link at once: the background unregister of the real kernel, finished.
    public func deleteLinkDeferred(
        _ link: Link, through socket: any RouteSocket,
        in namespace: any NamespaceHandle
    ) throws(NetlinkError) {
        try socket.deleteLink(link.index)
    }

    // MARK: The kernel's rules

    /// `net/ipv4/conf/<if>/...` and `net/ipv6/conf/<if>/...` exist only for existing links.
    private static func checkSysctl(_ s: State, _ id: Int, _ key: String) throws(NetNSError) {
        let parts = key.split(separator: "/")
        if parts.count >= 4, parts[0] == "net", parts[2] == "conf", !["all", "default"].contains(parts[3]),
            s.namespaces[id]!.link(named: String(parts[3])) == nil
        {
            throw .system(call: "open /proc/sys/\(key)", errno: ENOENT)
        }
    }

    fileprivate func enter(_ id: Int) { state.withLock { $0.current.append(id) } }
    fileprivate func leave() { state.withLock { _ = $0.current.popLast() } }

    fileprivate func withNamespace<T: Sendable>(
        _ id: Int, _ operation: Operation?, _ what: String,
        _ body: (inout State, Int) throws(NetlinkError) -> T
    ) throws(NetlinkError) -> T {
        try state.withLock { (s: inout State) throws(NetlinkError) -> T in
            guard s.namespaces[id] != nil else {
                throw .libnl(.noDevice, operation: what, message: "namespace of this socket is gone")
            }
            if let op = operation, let e = s.failures.removeValue(forKey: op) { throw e }
            return try body(&s, id)
        }
    }

    fileprivate static func newLink(
        _ s: inout State, _ id: Int, name: String, kind: String?, mtu: Int?, mac: MACAddress?,
        up: Bool = false
    ) -> Int32 {
        let index = s.namespaces[id]!.nextIndex
        s.namespaces[id]!.nextIndex += 1
        s.macs += 1
        let m =
            mac ?? MACAddress(bytes: [
                0x02, 0x42, 0, UInt8(s.macs >> 16 & 0xff), UInt8(s.macs >> 8 & 0xff), UInt8(s.macs & 0xff),
            ])!
        s.namespaces[id]!.links.append(
            Link(
                index: index, name: name, kind: kind, mtu: mtu ?? 1500, mac: m,
                flags: up ? 0x1 : 0))
        refreshOperState(&s)
        return index
    }

    /// Removes one link (not its peer) and everything on it.
    fileprivate static func removeLink(_ s: inout State, _ end: VethEnd) {
        guard s.namespaces[end.namespace] != nil else { return }
        s.namespaces[end.namespace]!.links.removeAll { $0.index == end.index }
        s.namespaces[end.namespace]!.addresses[end.index] = nil
        s.namespaces[end.namespace]!.staticRoutes.removeAll { $0.interface == end.index }
        s.namespaces[end.namespace]!.hairpin[end.index] = nil
        s.namespaces[end.namespace]!.isolated[end.index] = nil
        for i in s.namespaces[end.namespace]!.links.indices
        where s.namespaces[end.namespace]!.links[i].master == end.index {
            s.namespaces[end.namespace]!.links[i].master = nil
        }
        refreshOperState(&s)
    }

    /// IF_OPER_UP (6) for an up veth whose peer is up, LOWERLAYERDOWN (5) when the peer is down,
    /// DOWN (2) for a down link; UNKNOWN (0) for lo, UP for other up links.
    fileprivate static func refreshOperState(_ s: inout State) {
        for (id, ns) in s.namespaces {
            for (i, l) in ns.links.enumerated() {
                var state: UInt8
                if !l.isUp { state = 2 } else if l.name == "lo" { state = 0 } else { state = 6 }
                if l.isUp, l.kind == "veth", let peer = s.peers[VethEnd(namespace: id, index: l.index)] {
                    let peerUp = s.namespaces[peer.namespace]?.link(index: peer.index)?.isUp ?? false
                    state = peerUp ? 6 : 5
                }
                s.namespaces[id]!.links[i].operState = state
            }
        }
    }

    fileprivate func namespaceID(fd: Int32) -> Int? {
        state.withLock { s in s.namespaces[Int(fd - Self.fdBase)] != nil ? Int(fd - Self.fdBase) : nil }
    }

    // MARK: Handles and sockets

    final class Handle: NamespaceHandle {
        let kernel: InMemoryKernel
        let id: Int
        let path: String
        var fd: Int32 { InMemoryKernel.fdBase + Int32(id) }

        init(kernel: InMemoryKernel, id: Int, path: String) {
            self.kernel = kernel; self.id = id; self.path = path
        }

        func run<T>(_ body: () throws -> T) throws -> T {
            kernel.enter(id)
            defer { kernel.leave() }
            return try body()
        }
    }

    final class Socket: RouteSocket {
        let kernel: InMemoryKernel
        let namespace: Int

        init(kernel: InMemoryKernel, namespace: Int) {
            self.kernel = kernel; self.namespace = namespace
        }

        private func exists(_ what: String) -> NetlinkError {
            .libnl(.exists, operation: what, message: "Object exists")
        }
        private func notFound(_ what: String) -> NetlinkError {
            .libnl(.noDevice, operation: what, message: "No such device")
        }

        func link(named name: String) throws(NetlinkError) -> Link? {
            try kernel.withNamespace(namespace, nil, "RTM_GETLINK \(name)") { s, id throws(NetlinkError) in
                s.namespaces[id]!.link(named: name)
            }
        }

        func link(index: Int32) throws(NetlinkError) -> Link? {
            try kernel.withNamespace(namespace, nil, "RTM_GETLINK \(index)") { s, id throws(NetlinkError) in
                s.namespaces[id]!.link(index: index)
            }
        }

        func links() throws(NetlinkError) -> [Link] {
            try kernel.withNamespace(namespace, nil, "RTM_GETLINK") { s, id throws(NetlinkError) in
                s.namespaces[id]!.links
            }
        }

        func addBridge(name: String, mtu: Int?) throws(NetlinkError) {
            let what = "RTM_NEWLINK \(name)"
            try kernel.withNamespace(namespace, .addBridge, what) { s, id throws(NetlinkError) in
                if s.namespaces[id]!.link(named: name) != nil { throw exists(what) }
                _ = InMemoryKernel.newLink(&s, id, name: name, kind: "bridge", mtu: mtu, mac: nil)
            }
        }

        func addVeth(name: String, peerName: String, peerNamespaceFD: Int32?, mtu: Int?, mac: MACAddress?)
            throws(NetlinkError)
        {
            let what = "RTM_NEWLINK \(name)"
            let peerNS = peerNamespaceFD.map { kernel.namespaceID(fd: $0) }
            try kernel.withNamespace(namespace, .addVeth, what) { s, id throws(NetlinkError) in
                guard let peerID = peerNS ?? id else {
                    throw .libnl(.invalid, operation: what, message: "bad namespace handle")
                }
                if s.namespaces[id]!.link(named: name) != nil || s.namespaces[peerID]!.link(named: peerName) != nil {
                    throw exists(what)
                }
                let a = InMemoryKernel.newLink(&s, id, name: name, kind: "veth", mtu: mtu, mac: mac)
                let b = InMemoryKernel.newLink(&s, peerID, name: peerName, kind: "veth", mtu: mtu, mac: nil)
                let ea = VethEnd(namespace: id, index: a), eb = VethEnd(namespace: peerID, index: b)
                s.peers[ea] = eb
                s.peers[eb] = ea
                if let i = s.namespaces[id]!.links.firstIndex(where: { $0.index == a }) {
                    s.namespaces[id]!.links[i].parentIndex = b
                }
                if let i = s.namespaces[peerID]!.links.firstIndex(where: { $0.index == b }) {
                    s.namespaces[peerID]!.links[i].parentIndex = a
                }
            }
        }

        func setLink(_ index: Int32, _ change: LinkChange) throws(NetlinkError) {
            let what = "RTM_SETLINK \(index)"
            try kernel.withNamespace(namespace, .setLink, what) { s, id throws(NetlinkError) in
                guard let i = s.namespaces[id]!.links.firstIndex(where: { $0.index == index }) else {
                    throw notFound(what)
                }
                var l = s.namespaces[id]!.links[i]
                if let name = change.name, name != l.name {
                    if l.isUp { throw .libnl(.busy, operation: what, message: "Device or resource busy") }
                    if s.namespaces[id]!.link(named: name) != nil { throw exists(what) }
                    l.name = name
                }
                if let m = change.master {
                    guard s.namespaces[id]!.link(index: m)?.kind == "bridge" else {
                        throw .libnl(.invalid, operation: what, message: "master is not a bridge")
                    }
                    l.master = m
                }
                if let up = change.up { l.flags = up ? l.flags | 0x1 : l.flags & ~0x1 }
                if let p = change.promiscuous { l.flags = p ? l.flags | 0x100 : l.flags & ~0x100 }
                if let mtu = change.mtu { l.mtu = mtu }
                if let mac = change.mac { l.mac = mac }
                s.namespaces[id]!.links[i] = l
                // Bringing lo up gives it the loopback addresses.
                if l.name == "lo", change.up == true {
                    for a in InMemoryKernel.loopbackAddresses
                    where !s.namespaces[id]!.addresses[index, default: []].contains(a) {
                        s.namespaces[id]!.addresses[index, default: []].append(a)
                    }
                }
                InMemoryKernel.refreshOperState(&s)
            }
        }

        func setBridgePort(_ index: Int32, hairpin: Bool?, isolated: Bool?) throws(NetlinkError) {
            let what = "RTM_SETLINK \(index) (AF_BRIDGE)"
            try kernel.withNamespace(namespace, .setBridgePort, what) { s, id throws(NetlinkError) in
                guard let l = s.namespaces[id]!.link(index: index) else { throw notFound(what) }
                guard l.master != nil else {
                    throw .libnl(.notSupported, operation: what, message: "Operation not supported")
                }
                if let h = hairpin { s.namespaces[id]!.hairpin[index] = h }
                if let v = isolated { s.namespaces[id]!.isolated[index] = v }
            }
        }

        func deleteLink(_ index: Int32) throws(NetlinkError) {
            let what = "RTM_DELLINK \(index)"
            try kernel.withNamespace(namespace, .deleteLink, what) { s, id throws(NetlinkError) in
                guard s.namespaces[id]!.link(index: index) != nil else { throw notFound(what) }
                let end = VethEnd(namespace: id, index: index)
                InMemoryKernel.removeLink(&s, end)
                if let peer = s.peers.removeValue(forKey: end) {
                    s.peers[peer] = nil
                    InMemoryKernel.removeLink(&s, peer)
                }
            }
        }

        func addresses(link index: Int32, family: IPFamily?) throws(NetlinkError) -> [IPNetwork] {
            try kernel.withNamespace(namespace, nil, "RTM_GETADDR") { s, id throws(NetlinkError) in
                (s.namespaces[id]!.addresses[index] ?? []).filter { family == nil || $0.family == family }
            }
        }

        func addAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError) {
            let what = "RTM_NEWADDR \(address)"
            try kernel.withNamespace(namespace, .addAddress, what) { s, id throws(NetlinkError) in
                guard s.namespaces[id]!.link(index: index) != nil else { throw notFound(what) }
                if s.namespaces[id]!.addresses[index, default: []].contains(address) { throw exists(what) }
                s.namespaces[id]!.addresses[index, default: []].append(address)
            }
        }

        func deleteAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError) {
            let what = "RTM_DELADDR \(address)"
            try kernel.withNamespace(namespace, .deleteAddress, what) { s, id throws(NetlinkError) in
                guard let i = s.namespaces[id]!.addresses[index]?.firstIndex(of: address) else {
                    throw .libnl(.notFound, operation: what, message: "Object not found")
                }
                s.namespaces[id]!.addresses[index]!.remove(at: i)
            }
        }

        func routes(family: IPFamily, table: UInt32) throws(NetlinkError) -> [Route] {
            try kernel.withNamespace(namespace, nil, "RTM_GETROUTE") { s, id throws(NetlinkError) in
                s.namespaces[id]!.routes.filter { $0.destination.family == family && $0.table == table }
            }
        }

        func addRoute(_ route: Route) throws(NetlinkError) {
            let what = "RTM_NEWROUTE \(route.destination)"
            try kernel.withNamespace(namespace, .addRoute, what) { s, id throws(NetlinkError) in
                let ns = s.namespaces[id]!
                if let i = route.interface, ns.link(index: i) == nil { throw notFound(what) }
                if let gw = route.gateway, !route.onlink,
                    !ns.routes.contains(where: { $0.gateway == nil && $0.destination.contains(gw) })
                {
                    throw .libnl(.other(101), operation: what, message: "Network is unreachable")
                }
                if ns.staticRoutes.contains(where: {
                    $0.destination == route.destination && $0.table == route.table && $0.priority == route.priority
                }) {
                    throw exists(what)
                }
                s.namespaces[id]!.staticRoutes.append(route)
            }
        }
    }
}
