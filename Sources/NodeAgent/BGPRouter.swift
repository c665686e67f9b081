// The bgp backend's routing decisions, as a state machine on values: inputs (a session event, the
// node's subnet or the set of nodes changed, a timer) in, effects (start or stop a session, send
// UPDATEs, set a kernel route, end the restart deferral, arm a timer) out. `BGPRouting` carries
// the effects out with the speaker, the kernel thread and the clock; every decision is tested
// here without sockets.
//
// - Neighbours: the config's external peers whose NodePrefix holds this node's public IP, and,
//   with the node-to-node mesh on, every node holding a lease (iBGP). Of two mesh nodes only the
//   one with the lower router ID connects; the other waits, so that they never collide.
// - Announce: this node's subnet, next hop its public IP, to every neighbour once established,
//   followed by End-of-RIB; a new subnet replaces the old one (withdrawn).
// - Learn: what `BGPImportPolicy` accepts enters the neighbour's Adj-RIB-In; per prefix the best
//   route's next hop goes to the kernel, and nothing when no neighbour offers one.
// - Sessions that go down: their routes go, unless the neighbour announced graceful restart and
//   the loss was unexpected; then they stay, stale, for its restart time or until its End-of-RIB.
// - A restarted node (its kernel routes were kept) sweeps nothing until every neighbour has sent
//   End-of-RIB or its own restart time has passed.

import Addressing
import BGP
import Overlay

enum BGPInput: Sendable {
    case session(neighbour: String, BGPPeerEventValue)
    case network(BGPNetworkEvent)
    /// A neighbour's restart time has passed: its routes still stale go (if `generation` is
    /// still the neighbour's: it did not go down again since).
    case staleExpired(neighbour: String, generation: Int)
    case deferralExpired
    /// Time passes (uptime gauges); nothing to decide.
    case tick
}

/// A session event, as the router sees it (the speaker's `BGPPeerEvent`).
enum BGPPeerEventValue: Sendable {
    case established(BGPNegotiated)
    case update(BGPUpdate)
    case refresh
    case down(reason: String, keepRoutes: Bool)
}

enum BGPEffect: Sendable, Equatable {
    case addNeighbour(BGPSessionConfiguration, address: IPAddress, port: UInt16)
    case removeNeighbour(String)
    case send([BGPUpdate], to: String)
    /// The kernel's route to each prefix: via the next hop, or none.
    case routes([IPNetwork: IPAddress?])
    case endDeferral
    case timer(Duration, BGPInputKey)
}

/// The timers a router arms (an Equatable stand-in for `BGPInput`).
enum BGPInputKey: Sendable, Equatable {
    case staleExpired(neighbour: String, generation: Int)
    case deferralExpired

    var input: BGPInput {
        switch self {
        case .staleExpired(let n, let g): .staleExpired(neighbour: n, generation: g)
        case .deferralExpired: .deferralExpired
        }
    }
}

struct BGPRouter: Sendable {
    let config: BGPConfig
    let publicIP: IPAddress
    let routerID: UInt32
    /// The kernel held our routes at start.
    let restarted: Bool
    var policy: BGPImportPolicy
    /// Whether the kernel can use a next hop (on a directly reached prefix).
    let usable: @Sendable (IPAddress) -> Bool

    struct Neighbour: Sendable {
        var asNumber: UInt32
        var port: UInt16
        var mesh: Bool
        var negotiated: BGPNegotiated?
        var endOfRIB = false
        var generation = 0
        /// Prefix announcements received, accepted or not.
        var received = 0
        var refused = 0
        var lastRefusal: String?
    }
    private(set) var neighbours: [String: Neighbour] = [:]
    private(set) var rib = BGPRIB()
    private(set) var installed: [IPNetwork: IPAddress] = [:]
    private(set) var ownSubnet: IPNetwork?
    private(set) var deferring: Bool
    private var nodes: Set<IPAddress> = []

    init(
        config: BGPConfig, publicIP: IPAddress, network: IPNetwork, subnetLength: Int, restarted: Bool,
        localAddresses: Set<IPAddress>, usable: @escaping @Sendable (IPAddress) -> Bool
    ) {
        self.config = config; self.publicIP = publicIP; self.restarted = restarted; self.usable = usable
        routerID = UInt32(truncatingIfNeeded: publicIP.value)
        policy = BGPImportPolicy(
            network: network, subnetLength: subnetLength, ownSubnet: nil, localAS: config.asNumber,
            routerID: routerID, localAddresses: localAddresses.union([publicIP]))
        deferring = restarted
    }

    /// The sessions to start, and the deferral timer of a restart.
    mutating func start() -> [BGPEffect] {
        var effects = syncNeighbours()
        if deferring {
            let wait = config.gracefulRestartTime == 0 ? 120 : Int(config.gracefulRestartTime)
            effects.append(.timer(.seconds(wait), .deferralExpired))
        }
        return effects
    }

    mutating func handle(_ input: BGPInput) -> [BGPEffect] {
        switch input {
        case .network(.subnet(let subnet)):
            return setSubnet(subnet)
        case .network(.withdrawn):
            return withdrawSubnet()
        case .network(.nodes(let addresses)):
            nodes = addresses
            return syncNeighbours()
        case .session(let address, let event):
            guard neighbours[address] != nil else { return [] }
            return handle(event, from: address)
        case .staleExpired(let address, let generation):
            guard neighbours[address]?.generation == generation, neighbours[address]?.negotiated == nil else {
                return []
            }
            return reselect(rib.sweepStale(address))
        case .deferralExpired:
            return endDeferral()
        case .tick:
            return []
        }
    }

    private mutating func handle(_ event: BGPPeerEventValue, from address: String) -> [BGPEffect] {
        switch event {
        case .established(let negotiated):
            neighbours[address]?.negotiated = negotiated
            neighbours[address]?.endOfRIB = false
            var effects: [BGPEffect] = [.send(announcement(to: address) + [.endOfRIB(.ipv4Unicast)], to: address)]
            // Back without graceful restart: what was kept from before goes at once.
            if negotiated.peerGracefulRestart == nil { effects += reselect(rib.sweepStale(address)) }
            return effects
        case .update(let update):
            return apply(update, from: address)
        case .refresh:
            return [.send(announcement(to: address) + [.endOfRIB(.ipv4Unicast)], to: address)]
        case .down(_, let keepRoutes):
            let restartTime = neighbours[address]?.negotiated?.peerGracefulRestart?.restartTime ?? 0
            neighbours[address]?.negotiated = nil
            neighbours[address]?.endOfRIB = false
            neighbours[address]?.generation += 1
            guard keepRoutes, restartTime > 0, let generation = neighbours[address]?.generation else {
                return reselect(rib.remove(address))
            }
            rib.markStale(address)
            return [.timer(.seconds(Int(restartTime)), .staleExpired(neighbour: address, generation: generation))]
        }
    }

    private mutating func apply(_ update: BGPUpdate, from address: String) -> [BGPEffect] {
        guard let n = neighbours[address], let negotiated = n.negotiated else { return [] }
        var changed: [IPNetwork] = []
        for prefix in update.allWithdrawn where rib.withdraw(prefix, from: address) { changed.append(prefix) }
        let external = negotiated.peerAS != config.asNumber
        let announced = update.announced
        neighbours[address]?.received += announced.count
        if !announced.isEmpty {
            for prefix in announced {
                if let reason = policy.refusal(of: prefix, attributes: update.attributes, external: external) {
                    neighbours[address]?.refused += 1
                    neighbours[address]?.lastRefusal = "\(prefix): \(reason)"
                    // A prefix refused now loses what the neighbour sent for it before.
                    if rib.withdraw(prefix, from: address) { changed.append(prefix) }
                } else if let route = BGPRoute(
                    update.attributes, external: external, peerRouterID: negotiated.peerRouterID)
                {
                    rib.set(prefix, route, from: address)
                    changed.append(prefix)
                }
            }
        }
        var effects: [BGPEffect] = []
        if update.endOfRIB == .ipv4Unicast {
            neighbours[address]?.endOfRIB = true
            changed += rib.sweepStale(address)
            if deferring && neighbours.values.allSatisfy(\.endOfRIB) { effects += endDeferral() }
        }
        return reselect(changed) + effects
    }

    private mutating func withdrawSubnet() -> [BGPEffect] {
        guard let old = ownSubnet else { return [] }
        ownSubnet = nil
        return neighbours.sorted(by: { $0.key < $1.key }).filter { $0.value.negotiated != nil }.map {
            .send([BGPUpdate(withdrawn: [old])], to: $0.key)
        }
    }

    private mutating func setSubnet(_ subnet: IPNetwork) -> [BGPEffect] {
        let old = ownSubnet
        guard old != subnet else { return [] }
        ownSubnet = subnet
        policy.ownSubnet = subnet
        var effects: [BGPEffect] = []
        for (address, n) in neighbours.sorted(by: { $0.key < $1.key }) where n.negotiated != nil {
            var updates = announcement(to: address)
            if let old { updates.insert(BGPUpdate(withdrawn: [old]), at: 0) }
            effects.append(.send(updates, to: address))
        }
        // Whatever a neighbour offered for what is now our own subnet is not for the kernel.
        var mine: [IPNetwork] = []
        for address in neighbours.keys where rib.withdraw(subnet, from: address) { mine.append(subnet) }
        return effects + reselect(mine)
    }

    /// This node's subnet for `address`: ORIGIN IGP, next hop our public IP; our AS in the path
    /// and no LOCAL_PREF for eBGP, an empty path and LOCAL_PREF 100 for iBGP.
    private func announcement(to address: String) -> [BGPUpdate] {
        guard let subnet = ownSubnet, let n = neighbours[address] else { return [] }
        var a = BGPPathAttributes()
        a.origin = 0
        a.nextHop = publicIP
        if n.asNumber == config.asNumber {
            a.asPath = []
            a.localPref = 100
        } else {
            a.asPath = [.sequence([config.asNumber])]
        }
        return [BGPUpdate(attributes: a, nlri: [subnet])]
    }

    /// Starts and stops sessions so that the neighbours are the config's for this node and, with
    /// the mesh, the nodes.
    private mutating func syncNeighbours() -> [BGPEffect] {
        var wanted: [String: (as: UInt32, port: UInt16, mesh: Bool, address: IPAddress)] = [:]
        if config.nodeToNodeMesh {
            for node in nodes where node != publicIP && node.family == .v4 {
                wanted["\(node)"] = (config.asNumber, config.listenPort, true, node)
            }
        }
        for p in config.neighbours(ofNode: publicIP) where p.address != publicIP {
            wanted["\(p.address)"] = (p.asNumber, p.port, false, p.address)
        }
        var effects: [BGPEffect] = []
        var gone: [IPNetwork] = []
        for (address, n) in neighbours.sorted(by: { $0.key < $1.key }) {
            if let w = wanted[address], w.as == n.asNumber, w.port == n.port { continue }
            neighbours[address] = nil
            effects.append(.removeNeighbour(address))
            gone += rib.remove(address)
        }
        for (address, w) in wanted.sorted(by: { $0.key < $1.key }) where neighbours[address] == nil {
            neighbours[address] = Neighbour(asNumber: w.as, port: w.port, mesh: w.mesh)
            var c = BGPSessionConfiguration(localAS: config.asNumber, peerAS: w.as, routerID: routerID)
            c.holdTime = config.holdTime
            if config.gracefulRestartTime > 0 { c.gracefulRestart = (config.gracefulRestartTime, restarted) }
            c.passive = w.mesh && routerID > UInt32(truncatingIfNeeded: w.address.value)
            effects.append(.addNeighbour(c, address: w.address, port: w.port))
        }
        var out = effects + reselect(gone)
        if deferring && !neighbours.isEmpty && neighbours.values.allSatisfy(\.endOfRIB) { out += endDeferral() }
        return out
    }

    private mutating func endDeferral() -> [BGPEffect] {
        guard deferring else { return [] }
        deferring = false
        return [.endDeferral]
    }

    /// The kernel changes for `prefixes` whose offers changed: the best next hop, or none.
    private mutating func reselect(_ prefixes: [IPNetwork]) -> [BGPEffect] {
        var routes: [IPNetwork: IPAddress?] = [:]
        for prefix in Set(prefixes) {
            let nextHop = rib.best(prefix, usable: usable)?.nextHop
            guard installed[prefix] != nextHop else { continue }
            installed[prefix] = nextHop
            routes[prefix] = .some(nextHop)
        }
        return routes.isEmpty ? [] : [.routes(routes)]
    }
}
