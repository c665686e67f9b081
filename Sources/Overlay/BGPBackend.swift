// The bgp backend: no tunnel, pod subnets routed straight to next hops on the underlay as in
// host-gw, but the next hops come from BGP instead of the leases, so that nodes in different
// racks (L2 segments joined by routers) reach each other through their routers.
//
// The BGP speaker itself runs in the daemon (NodeAgent's `BGPRouting`); this network is its
// kernel side. It keeps two inputs and installs their intersection:
// - the leases, from the lease watch as for every backend (`setPeer`, `removePeer`, `reconcile`):
//   a learned prefix is installed only while a lease for exactly that subnet exists, so the
//   routes are always the leases' subnets, whatever a router announces; and the leases' public
//   IPs are the node-to-node mesh's neighbours, reported on `events`;
// - the best next hop BGP learned per prefix (`setRoute`), from the speaker.
// A route is `<subnet> via <next hop> dev <iface> proto 98`, planned and reconciled by the same
// code as host-gw's, so everything podnet owns in the kernel is judged alike.
//
// Graceful restart: when the daemon starts and finds routes of its own in the kernel (a restart),
// it keeps them while the sessions come back ("deferral"): learned routes are added and replaced,
// but nothing is swept until `endDeferral` (every neighbour's End-of-RIB, or the restart time).
//
// Config, in the spirit of Calico's BGPConfiguration and BGPPeer resources:
//
//     "Backend": {
//       "Type": "bgp",
//       "ASNumber": 64512,             the nodes' AS (default 64512)
//       "NodeToNodeMesh": true,        iBGP sessions between all nodes (default true)
//       "Peers": [                     external peers (routers)
//         {"PeerIP": "192.168.50.1", "ASNumber": 65001, "NodePrefix": "192.168.50.0/24"},
//         {"PeerIP": "192.168.60.1", "ASNumber": 65002, "NodePrefix": "192.168.60.0/24"}
//       ],
//       "ListenPort": 179, "HoldTime": 90, "GracefulRestartTime": 120
//     }
//
// A peer with a NodePrefix is a neighbour only of the nodes whose public IP lies in it: one
// cluster-wide config gives each rack's nodes their own top-of-rack router.

import Addressing
import Logging
import Netlink
import Synchronization

/// The bgp backend's options (the `Backend` object of a config of type "bgp").
public struct BGPConfig: Equatable, Sendable {
    /// An external neighbour: a router.
    public struct Neighbour: Equatable, Sendable {
        public var address: IPAddress
        public var asNumber: UInt32
        /// Only nodes whose public IP is in this prefix peer with it; all nodes when nil.
        public var nodePrefix: IPNetwork?
        public var port: UInt16

        public init(address: IPAddress, asNumber: UInt32, nodePrefix: IPNetwork? = nil, port: UInt16 = 179) {
            self.address = address; self.asNumber = asNumber; self.nodePrefix = nodePrefix; self.port = port
        }
    }

    /// The nodes' AS (Calico's default 64512, the first private 2-octet AS).
    public var asNumber: UInt32 = 64512
    /// iBGP sessions between every two nodes, their addresses from the leases.
    public var nodeToNodeMesh = true
    public var neighbours: [Neighbour] = []
    /// The port the speaker listens on, and the port mesh neighbours are reached at.
    public var listenPort: UInt16 = 179
    /// The hold time our OPEN proposes (0, or 3 s and more).
    public var holdTime: UInt16 = 90
    /// The restart time our graceful-restart capability announces (how long routers keep this
    /// node's routes while podnetd restarts), and how long a restart keeps the kernel's routes
    /// waiting for the neighbours. 0 turns graceful restart off.
    public var gracefulRestartTime: UInt16 = 120

    public init() {}

    /// The external neighbours of a node with public IP `address`.
    public func neighbours(ofNode address: IPAddress) -> [Neighbour] {
        neighbours.filter { $0.nodePrefix?.contains(address) ?? true }
    }
}

extension BGPConfig {
    /// Reads the `Backend` object of a bgp config; `network` is the config's Network (a neighbour
    /// inside it would be a pod).
    init(_ o: GoObject, network: IPNetwork) throws(ConfigError) {
        self.init()
        func readAS(_ o: GoObject, _ name: String) throws(ConfigError) -> UInt32? {
            guard let n = try o.integer(name, in: 1...4_294_967_295) else { return nil }
            // AS_TRANS stands in for a 4-octet AS in 2-octet fields; no speaker may own it.
            guard n != 23456 else { throw ConfigError("\(o.path)\(name) 23456 is AS_TRANS, which no speaker may use") }
            return UInt32(truncatingIfNeeded: n)
        }
        asNumber = try readAS(o, "ASNumber") ?? 64512
        nodeToNodeMesh = try o.bool("NodeToNodeMesh") ?? true
        listenPort = UInt16(truncatingIfNeeded: try o.integer("ListenPort", in: 1...65_535) ?? 179)
        let hold = try o.integer("HoldTime", in: 0...65_535) ?? 90
        guard hold == 0 || hold >= 3 else {
            throw ConfigError(
                "\(o.path)HoldTime \(hold) is not allowed: use 0 (no keepalives) or at least 3 (RFC 4271)")
        }
        holdTime = UInt16(truncatingIfNeeded: hold)
        // The capability's restart time has 12 bits.
        gracefulRestartTime = UInt16(truncatingIfNeeded: try o.integer("GracefulRestartTime", in: 0...4095) ?? 120)
        for p in try o.objects("Peers") ?? [] {
            guard let text = try p.string("PeerIP") else { throw ConfigError("\(p.path)PeerIP is missing") }
            guard let address = IPAddress(text), address.family == .v4 else {
                throw ConfigError("\(p.path)PeerIP is not an IPv4 address: \"\(text)\"")
            }
            if let problem = address.underlayProblem {
                throw ConfigError("\(p.path)PeerIP \(address) is \(problem)")
            }
            guard !network.contains(address) else {
                throw ConfigError("\(p.path)PeerIP \(address) is inside the Network \(network)")
            }
            guard !neighbours.contains(where: { $0.address == address }) else {
                throw ConfigError("\(p.path)PeerIP \(address) is listed twice")
            }
            guard let peerAS = try readAS(p, "ASNumber") else { throw ConfigError("\(p.path)ASNumber is missing") }
            var prefix: IPNetwork?
            if let text = try p.string("NodePrefix") {
                guard let n = IPNetwork(text), n.family == .v4, !n.hasHostBits else {
                    throw ConfigError("\(p.path)NodePrefix is not an IPv4 prefix such as 192.168.50.0/24: \"\(text)\"")
                }
                prefix = n
            }
            let port = UInt16(truncatingIfNeeded: try p.integer("Port", in: 1...65_535) ?? 179)
            neighbours.append(Neighbour(address: address, asNumber: peerAS, nodePrefix: prefix, port: port))
        }
    }
}

public struct BGPBackend: Backend {
    public let interface: ExternalInterface
    public let network: IPNetwork
    public let subnetLength: Int
    public let config: BGPConfig
    public var backendType: String { "bgp" }

    public init(interface: ExternalInterface, network: IPNetwork, subnetLength: Int, config: BGPConfig) {
        self.interface = interface; self.network = network.network; self.subnetLength = subnetLength
        self.config = config
    }

    /// No encapsulation: pods get the interface's MTU.
    public var mtu: Int { interface.mtu }

    public func registerNetwork(dataPath: any DataPath, logger: Logger) throws(OverlayError) -> any OverlayNetwork {
        try registerNetwork(dataPath: dataPath, logger: logger, keepingDevices: [])
    }

    func registerNetwork(dataPath: any DataPath, logger: Logger, keepingDevices: Set<String>) throws(OverlayError)
        -> any OverlayNetwork
    {
        try prepareDirectRouting(
            interface: interface, network: network, backendType: backendType, dataPath: dataPath,
            keepingDevices: keepingDevices, ipv4Only: true, logger: logger)
        // Routes of ours in the kernel: podnetd restarted, and keeps them until BGP is back.
        let kept = try netlink { () throws(NetlinkError) in
            try dataPath.routes(family: .v4, table: 254, interface: nil)
        }.contains { $0.proto == RouteProtocol.podnet && network.contains($0.destination.address) }
        let inner = PeerNetwork(
            mode: mode, dataPath: dataPath, interface: interface, network: network, mtu: mtu, device: nil,
            logger: logger)
        return BGPNetwork(inner: inner, backend: self, restarted: kept, logger: logger)
    }
}

extension BGPBackend: ModeBackend {
    var mode: any NetworkMode { HostGWMode(interface: interface, backendType: "bgp") }
}

/// What the bgp network tells the speaker.
public enum BGPNetworkEvent: Sendable, Equatable {
    /// The node's subnet, at start and whenever a new lease gives another: announce it.
    case subnet(IPNetwork)
    /// The public IPs of the nodes holding a lease (the mesh's neighbours), after any change.
    case nodes(Set<IPAddress>)
    /// The node lost its lease: withdraw its subnet.
    case withdrawn
}

public final class BGPNetwork: OverlayNetwork {
    let inner: PeerNetwork
    public let backend: BGPBackend
    /// The kernel held routes of ours at start: podnetd restarted (graceful restart's R bit).
    public let restarted: Bool
    let logger: Logger
    public let events: AsyncStream<BGPNetworkEvent>
    private let continuation: AsyncStream<BGPNetworkEvent>.Continuation

    private struct State: Sendable {
        /// The leases of other nodes, by subnet.
        var leases: [IPNetwork: Peer] = [:]
        /// The best next hop BGP offers, by prefix.
        var routes: [IPNetwork: IPAddress] = [:]
        /// Routes are kept, not swept, until the neighbours have sent their routes again.
        var deferring: Bool
        var nodes: Set<IPAddress> = []
    }
    private let state: Mutex<State>
    private let withdrawnFlag = Mutex(false)

    init(inner: PeerNetwork, backend: BGPBackend, restarted: Bool, logger: Logger) {
        self.inner = inner; self.backend = backend; self.restarted = restarted; self.logger = logger
        state = Mutex(State(deferring: restarted))
        (events, continuation) = AsyncStream.makeStream()
    }

    public var backendType: String { "bgp" }
    public var mtu: Int { inner.mtu }
    public var leaseAttributes: LeaseAttributes { inner.leaseAttributes }
    public var deviceName: String? { nil }
    public var config: BGPConfig { backend.config }
    public var interface: ExternalInterface { backend.interface }

    public func start(subnet: IPNetwork) throws(OverlayError) {
        try inner.start(subnet: subnet)
        announce(subnet)
    }

    /// The node's lease was deleted: its subnet is withdrawn from every neighbour until `announce`
    /// (or `start`) gives it one again. A podnetd that exits then ends its sessions with a
    /// NOTIFICATION, so that routers drop the subnet at once instead of keeping it for a restart.
    public func withdrawSubnet() {
        withdrawnFlag.withLock { $0 = true }
        continuation.yield(.withdrawn)
    }

    /// Announces `subnet` (again) as the node's.
    public func announce(_ subnet: IPNetwork) {
        withdrawnFlag.withLock { $0 = false }
        continuation.yield(.subnet(subnet.network))
    }

    /// Whether the node's subnet is withdrawn (its lease lost).
    public var isWithdrawn: Bool { withdrawnFlag.withLock { $0 } }

    public func reconcile(peers: [Peer]) throws(OverlayError) -> ReconcileReport {
        try state.withLock { (s: inout State) throws(OverlayError) -> ReconcileReport in
            s.leases = Dictionary(peers.map { ($0.subnet, $0) }) { $1 }
            noteNodes(&s)
            guard s.deferring else { return try inner.reconcile(peers: desired(s)) }
            var report = ReconcileReport()
            for peer in desired(s) { report.merge(try inner.setPeer(peer)) }
            return report
        }
    }

    public func setPeer(_ peer: Peer) throws(OverlayError) -> ReconcileReport {
        try state.withLock { (s: inout State) throws(OverlayError) -> ReconcileReport in
            s.leases[peer.subnet] = peer
            noteNodes(&s)
            return try program(peer.subnet, s)
        }
    }

    public func removePeer(subnet: IPNetwork) throws(OverlayError) -> ReconcileReport {
        try state.withLock { (s: inout State) throws(OverlayError) -> ReconcileReport in
            s.leases[subnet.network] = nil
            noteNodes(&s)
            return try inner.removePeer(subnet: subnet.network)
        }
    }

    /// The best next hop BGP offers for `prefix` changed (nil: none any more). Installed while a
    /// lease holds the prefix.
    public func setRoute(_ prefix: IPNetwork, nextHop: IPAddress?) throws(OverlayError) -> ReconcileReport {
        try state.withLock { (s: inout State) throws(OverlayError) -> ReconcileReport in
            s.routes[prefix.network] = nextHop
            return try program(prefix.network, s)
        }
    }

    /// Ends a restart's deferral: from here on, routes nobody offers are removed.
    public func endDeferral() throws(OverlayError) -> ReconcileReport {
        try state.withLock { (s: inout State) throws(OverlayError) -> ReconcileReport in
            guard s.deferring else { return ReconcileReport() }
            s.deferring = false
            logger.info("bgp: the neighbours' routes are in; removing the routes kept from before the restart")
            return try inner.reconcile(peers: desired(s))
        }
    }

    /// Whether `address` is on a prefix the interface reaches without a gateway: a next hop the
    /// kernel can use.
    public func reachesDirectly(_ address: IPAddress) -> Bool { inner.reachesDirectly(address) }

    /// The routes to install: a learned next hop for a leased subnet.
    private func desired(_ s: State) -> [Peer] {
        s.routes.compactMap { prefix, nextHop in
            s.leases[prefix] == nil ? nil : Peer(subnet: prefix, publicIP: nextHop)
        }
    }

    private func program(_ subnet: IPNetwork, _ s: State) throws(OverlayError) -> ReconcileReport {
        if s.leases[subnet] != nil, let nextHop = s.routes[subnet] {
            return try inner.setPeer(Peer(subnet: subnet, publicIP: nextHop))
        }
        return try inner.removePeer(subnet: subnet)
    }

    private func noteNodes(_ s: inout State) {
        let nodes = Set(s.leases.values.map(\.publicIP))
        guard nodes != s.nodes else { return }
        s.nodes = nodes
        continuation.yield(.nodes(nodes))
    }
}
