// What a leaf speaker keeps of its neighbours' routes: one Adj-RIB-In per neighbour, the import
// policy that decides what may enter it, and the choice of one best route per prefix. A leaf
// (a podnet node) never passes on what it learns, so there is no Loc-RIB to advertise from.
//
// Graceful restart (RFC 4724 §4.2) is kept here too: a neighbour whose session went down with its
// routes kept has them marked stale; UPDATEs replace them; its End-of-RIB, or the end of its
// restart time, sweeps what is still stale.

import Addressing

/// One neighbour's route to a prefix, with what selection compares.
public struct BGPRoute: Equatable, Sendable {
    public var nextHop: IPAddress
    public var localPref: UInt32
    public var asPathLength: Int
    public var origin: UInt8
    public var med: UInt32
    /// Learned over eBGP.
    public var external: Bool
    public var peerRouterID: UInt32
    /// Kept across the neighbour's restart, not yet sent again.
    public var stale = false

    public init(
        nextHop: IPAddress, localPref: UInt32 = 100, asPathLength: Int = 0, origin: UInt8 = 0, med: UInt32 = 0,
        external: Bool = false, peerRouterID: UInt32 = 0
    ) {
        self.nextHop = nextHop; self.localPref = localPref; self.asPathLength = asPathLength; self.origin = origin
        self.med = med; self.external = external; self.peerRouterID = peerRouterID
    }

    /// The route `attributes` describe, learned from a neighbour (eBGP when `external`). Nil
    /// without a next hop.
    public init?(_ attributes: BGPPathAttributes, external: Bool, peerRouterID: UInt32) {
        guard let nextHop = attributes.nextHop ?? attributes.mpReach?.nextHops.first else { return nil }
        self.init(
            nextHop: nextHop, localPref: external ? 100 : attributes.localPref ?? 100,
            asPathLength: attributes.effectiveASPath.count, origin: attributes.origin ?? 2,
            med: attributes.multiExitDisc ?? 0, external: external, peerRouterID: peerRouterID)
    }

    /// RFC 4271 §9.1.2.2 in short: a usable next hop first, then highest LOCAL_PREF, shortest
    /// AS_PATH, lowest ORIGIN, lowest MED, eBGP over iBGP, lowest router ID.
    func isBetter(than other: BGPRoute, usable: (IPAddress) -> Bool) -> Bool {
        let (u1, u2) = (usable(nextHop), usable(other.nextHop))
        if u1 != u2 { return u1 }
        if localPref != other.localPref { return localPref > other.localPref }
        if asPathLength != other.asPathLength { return asPathLength < other.asPathLength }
        if origin != other.origin { return origin < other.origin }
        if med != other.med { return med < other.med }
        if external != other.external { return external }
        return peerRouterID < other.peerRouterID
    }
}

/// Which learned prefixes a node accepts: exactly the pod subnets of its cluster, never its own,
/// never through itself, never looped.
public struct BGPImportPolicy: Sendable {
    /// The cluster's pod network and its subnets' length.
    public var network: IPNetwork
    public var subnetLength: Int
    /// This node's own subnet.
    public var ownSubnet: IPNetwork?
    public var localAS: UInt32
    public var routerID: UInt32
    /// This node's addresses: a next hop among them is refused.
    public var localAddresses: Set<IPAddress>

    public init(
        network: IPNetwork, subnetLength: Int, ownSubnet: IPNetwork?, localAS: UInt32, routerID: UInt32,
        localAddresses: Set<IPAddress>
    ) {
        self.network = network; self.subnetLength = subnetLength; self.ownSubnet = ownSubnet
        self.localAS = localAS; self.routerID = routerID; self.localAddresses = localAddresses
    }

    /// Why `prefix` with `attributes` from a neighbour (eBGP when `external`) is refused; nil
    /// when it is accepted.
    public func refusal(of prefix: IPNetwork, attributes: BGPPathAttributes, external: Bool) -> String? {
        guard prefix.family == network.family, network.contains(prefix.address),
            prefix.prefixLength == subnetLength, !prefix.hasHostBits
        else { return "not a /\(subnetLength) pod subnet of \(network)" }
        if let own = ownSubnet, prefix.overlaps(own) { return "this node's own subnet" }
        guard let nextHop = attributes.nextHop ?? attributes.mpReach?.nextHops.first else { return "no next hop" }
        if localAddresses.contains(nextHop) { return "its next hop \(nextHop) is this node" }
        if network.contains(nextHop) { return "its next hop \(nextHop) is inside the pod network" }
        if external && attributes.effectiveASPath.contains(localAS) { return "AS loop: \(localAS) is in its AS_PATH" }
        if attributes.originatorID == routerID { return "it originated here (ORIGINATOR_ID)" }
        return nil
    }
}

/// Every neighbour's accepted routes, keyed by the neighbour's address.
public struct BGPRIB: Sendable {
    private var routes: [String: [IPNetwork: BGPRoute]] = [:]

    public init() {}

    /// Sets `neighbour`'s route to `prefix` (replacing a stale one).
    public mutating func set(_ prefix: IPNetwork, _ route: BGPRoute, from neighbour: String) {
        routes[neighbour, default: [:]][prefix] = route
    }

    /// Removes `neighbour`'s route to `prefix`; true when there was one.
    @discardableResult
    public mutating func withdraw(_ prefix: IPNetwork, from neighbour: String) -> Bool {
        routes[neighbour]?.removeValue(forKey: prefix) != nil
    }

    /// Marks all of `neighbour`'s routes stale (its session went down, routes kept).
    public mutating func markStale(_ neighbour: String) {
        guard var mine = routes[neighbour] else { return }
        for key in mine.keys { mine[key]?.stale = true }
        routes[neighbour] = mine
    }

    /// Removes `neighbour`'s stale routes and returns their prefixes.
    public mutating func sweepStale(_ neighbour: String) -> [IPNetwork] {
        guard let mine = routes[neighbour] else { return [] }
        let stale = mine.filter(\.value.stale).map(\.key)
        for p in stale { routes[neighbour]?[p] = nil }
        return stale
    }

    /// Forgets `neighbour` and returns the prefixes it offered.
    public mutating func remove(_ neighbour: String) -> [IPNetwork] {
        routes.removeValue(forKey: neighbour).map { Array($0.keys) } ?? []
    }

    /// How many prefixes `neighbour` offers.
    public func count(from neighbour: String) -> Int { routes[neighbour]?.count ?? 0 }

    /// The best route to `prefix` among all neighbours'; `usable` says which next hops the kernel
    /// can use.
    public func best(_ prefix: IPNetwork, usable: (IPAddress) -> Bool) -> BGPRoute? {
        var best: BGPRoute?
        for neighbour in routes.keys.sorted() {
            guard let r = routes[neighbour]?[prefix] else { continue }
            if let b = best, !r.isBetter(than: b, usable: usable) { continue }
            best = r
        }
        return best
    }
}
