// The network all three backends share: device upkeep, the peer plan, reconcile and single-peer
// updates. A backend contributes a `NetworkMode`: its device and what one peer gets.

import Addressing
import Logging
import Netlink
import Synchronization

/// What one peer gets from a mode.
enum Plan: Equatable, Sendable {
    case program(PeerEntries)
    /// Nothing, for this reason (logged once).
    case skip(String)
}

/// A tunnel device a network keeps in shape.
protocol TunnelDevice: Sendable {
    var name: String { get }
    /// The MTU `ensure` gives the device.
    var mtu: Int { get }
    /// Whether `ensure` keeps `link`, the device found under `name` (its MTU corrected); it
    /// deletes and recreates any other.
    func isCompatible(_ link: Link) -> Bool
    /// Creates the device, or keeps an existing compatible one (its MTU corrected) and recreates
    /// an incompatible one. `lastKnown` is the device as last seen, if it was: a device created
    /// again gets its MAC back where the kind has one, so peers need no update. Returns the device
    /// and whether it was created.
    func ensure(_ dataPath: any DataPath, lastKnown: Link?, logger: Logger) throws(OverlayError) -> (
        link: Link, created: Bool
    )
}

/// A backend whose network is a `PeerNetwork` of one mode (all of podnet's): what the read-only
/// inspection needs to judge the kernel as the network would, without creating anything.
protocol ModeBackend: Backend {
    /// The mode `registerNetwork` gives its network.
    var mode: any NetworkMode { get }
    /// The MTU pods get (the network's `mtu`).
    var mtu: Int { get }
    /// `registerNetwork`, keeping the overlay devices named in `keepingDevices` (its own, and the
    /// other family's in a dual-stack pair) when it removes those of other modes: the public
    /// `registerNetwork` keeps only the backend's own device.
    func registerNetwork(dataPath: any DataPath, logger: Logger, keepingDevices: Set<String>) throws(OverlayError)
        -> any OverlayNetwork
}

extension ModeBackend {
    /// The devices a single-family network keeps: its own, if it has one.
    var ownDevices: Set<String> { Set([mode.device?.name].compactMap { $0 }) }
}

/// What differs between backends.
protocol NetworkMode: Sendable {
    var backendType: String { get }
    var device: (any TunnelDevice)? { get }
    /// Whether the device's neighbours and FDB entries are programmed per peer (vxlan).
    var ownsNeighbours: Bool { get }
    /// The entries that make `peer` reachable. `connected`: prefixes the underlay interface reaches
    /// without a gateway.
    func plan(_ peer: Peer, device: Link?, connected: [IPNetwork]) -> Plan
    func leaseAttributes(device: Link?) -> LeaseAttributes
}

/// Runs a netlink call, its error wrapped as `OverlayError.netlink`.
func netlink<T>(_ body: () throws(NetlinkError) -> T) throws(OverlayError) -> T {
    do { return try body() } catch { throw .netlink(error) }
}

final class PeerNetwork: OverlayNetwork {
    let mode: any NetworkMode
    let dataPath: any DataPath
    let interface: ExternalInterface
    let network: IPNetwork
    /// The network's address family: every dump, address and peer is of this family.
    var family: IPFamily { network.family }
    let mtu: Int
    let logger: Logger

    private struct State: Sendable {
        var attributes: LeaseAttributes
        var attributesChanged = false
        var device: Link?
        var subnet: IPNetwork?
        var connected: [IPNetwork] = []
        /// What was last programmed (or found correct) per peer subnet.
        var programmed: [IPNetwork: PeerEntries] = [:]
        /// Peers given nothing, and why; a reason is logged when it first appears.
        var skipped: [IPNetwork: String] = [:]
    }
    private let state: Mutex<State>

    init(
        mode: any NetworkMode, dataPath: any DataPath, interface: ExternalInterface, network: IPNetwork, mtu: Int,
        device: Link?, logger: Logger
    ) {
        self.mode = mode; self.dataPath = dataPath; self.interface = interface; self.network = network; self.mtu = mtu
        var logger = logger
        logger[metadataKey: "overlay.backend"] = "\(mode.backendType)"
        self.logger = logger
        state = Mutex(State(attributes: mode.leaseAttributes(device: device), device: device))
    }

    var backendType: String { mode.backendType }
    var deviceName: String? { mode.device?.name }
    var leaseAttributes: LeaseAttributes { state.withLock { $0.attributes } }

    func start(subnet: IPNetwork) throws(OverlayError) {
        guard subnet.family == family, network.contains(subnet.address), subnet.prefixLength >= network.prefixLength
        else {
            throw .invalidConfiguration("subnet \(subnet) is not an \(family.name) subnet of the network \(network)")
        }
        try state.withLock { (s: inout State) throws(OverlayError) in
            s.subnet = subnet.network
            var report = ReconcileReport()
            try prepare(&s, &report)
            let routes = try netlink { () throws(NetlinkError) in
                try dataPath.routes(family: family, table: 254, interface: interface.index)
            }
            let addresses = try netlink { () throws(NetlinkError) in
                try dataPath.addresses(link: interface.index, family: family)
            }
            s.connected = connectedPrefixes(
                interface: interface.index, family: family, addresses: addresses, routes: routes)
            logger.info(
                "overlay: network started",
                metadata: [
                    "overlay.subnet": "\(subnet.network)", "overlay.mtu": "\(mtu)",
                    "overlay.device": "\(deviceName ?? "-")",
                ])
        }
    }

    func reconcile(peers: [Peer]) throws(OverlayError) -> ReconcileReport {
        try state.withLock { (s: inout State) throws(OverlayError) -> ReconcileReport in
            guard let subnet = s.subnet else { throw .notStarted }
            var report = ReconcileReport()
            try prepare(&s, &report)
            let device = s.device
            let ownership = Ownership(
                network: network, ownSubnet: subnet, device: device?.index,
                ownsNeighbours: mode.ownsNeighbours && device != nil, interface: interface.index, family: family)
            // The one read of the kernel per pass.
            let kernel: KernelState
            (kernel, s.connected) = try KernelState.read(dataPath, ownership: ownership)

            var desired: [IPNetwork: PeerEntries] = [:]
            var skipped: [IPNetwork: String] = [:]
            for peer in peers {
                switch plan(peer, &s) {
                case .program(let entries)?: desired[peer.subnet] = entries
                case .skip(let reason)?: skipped[peer.subnet] = reason
                case nil: break
                }
            }
            noteSkips(skipped, replacingAll: true, &s, &report)
            let changes = diff(desired: desired, kernel: kernel, ownership: ownership)
            let failed = apply(changes, to: dataPath, report: &report, logger: logger)
            s.programmed = desired.filter { !failed.contains($0.key) }
            report.leaseAttributesChanged = s.attributesChanged
            s.attributesChanged = false
            if report.changes > 0 || !report.failures.isEmpty {
                logger.info(
                    "overlay: reconciled",
                    metadata: [
                        "overlay.peers": "\(desired.count)", "overlay.programmed": "\(report.programmed.total)",
                        "overlay.removed": "\(report.removed.total)", "overlay.failures": "\(report.failures.count)",
                    ])
            }
            return report
        }
    }

    func setPeer(_ peer: Peer) throws(OverlayError) -> ReconcileReport {
        try state.withLock { (s: inout State) throws(OverlayError) -> ReconcileReport in
            guard s.subnet != nil else { throw .notStarted }
            var report = ReconcileReport()
            let old = s.programmed[peer.subnet]
            var changes = Changes()
            switch plan(peer, &s) {
            case nil:
                return report
            case .skip(let reason)?:
                noteSkips([peer.subnet: reason], replacingAll: false, &s, &report)
                if let old { changes = removal(of: old, subnet: peer.subnet, s) }
                s.programmed[peer.subnet] = nil
                _ = apply(changes, to: dataPath, report: &report, logger: logger)
                return report
            case .program(let new)?:
                s.skipped[peer.subnet] = nil
                if new == old { return report }
                var set = Changes.PeerChange(subnet: peer.subnet)
                if new.neighbour != old?.neighbour { set.neighbour = new.neighbour }
                if new.fdb != old?.fdb { set.fdb = new.fdb }
                if new.route != old?.route { set.route = new.route }
                changes.set = [set]
                // A VtepMAC change leaves the old MAC's FDB entry behind unless removed; a peer
                // that became directly routed keeps no neighbour.
                if let f = old?.fdb, f.mac != new.fdb?.mac, !fdbShared(f, except: peer.subnet, s) {
                    changes.removeFDB = [f]
                }
                if let n = old?.neighbour, new.neighbour == nil { changes.removeNeighbours = [n] }
                let failed = apply(changes, to: dataPath, report: &report, logger: logger)
                s.programmed[peer.subnet] = failed.isEmpty ? new : nil
                return report
            }
        }
    }

    func removePeer(subnet: IPNetwork) throws(OverlayError) -> ReconcileReport {
        try state.withLock { (s: inout State) throws(OverlayError) -> ReconcileReport in
            guard s.subnet != nil else { throw .notStarted }
            var report = ReconcileReport()
            s.skipped[subnet.network] = nil
            guard let old = s.programmed.removeValue(forKey: subnet.network) else { return report }
            _ = apply(removal(of: old, subnet: subnet.network, s), to: dataPath, report: &report, logger: logger)
            return report
        }
    }

    /// Whether `address` is on a prefix the interface reached without a gateway at the last start
    /// or reconcile.
    func reachesDirectly(_ address: IPAddress) -> Bool {
        state.withLock { s in s.connected.contains { $0.contains(address) } }
    }

    // MARK: - Pieces

    /// Ensures the device (recreating it if needed), notes a MAC change, and puts this node's
    /// address on it.
    private func prepare(_ s: inout State, _ report: inout ReconcileReport) throws(OverlayError) {
        guard let device = mode.device else { return }
        let (link, created) = try device.ensure(dataPath, lastKnown: s.device, logger: logger)
        if created && s.device != nil {
            // Everything on the old device went with it: the diff against the new, empty one
            // programs all peers again.
            report.deviceRecreated = true
            s.programmed.removeAll()
        }
        s.device = link
        let attributes = mode.leaseAttributes(device: link)
        if attributes != s.attributes {
            logger.info(
                "overlay: lease attributes changed; the lease must be published again",
                metadata: [
                    "overlay.device": "\(device.name)",
                    "overlay.vtep_mac": "\((attributes.vtepMAC ?? attributes.ipv6VtepMAC)?.description ?? "-")",
                ])
            s.attributes = attributes
            s.attributesChanged = true
        }
        if let subnet = s.subnet {
            try ensureAddress(IPNetwork(address: subnet.firstAddress, prefixLength: family.bitWidth)!, on: link)
        }
    }

    /// `address` on the device and no other address of the overlay network (a previous lease's),
    /// then the device up. /32 (IPv6: /128), so the kernel adds no route covering other nodes'
    /// subnets.
    private func ensureAddress(_ address: IPNetwork, on link: Link) throws(OverlayError) {
        let have = try netlink { () throws(NetlinkError) in try dataPath.addresses(link: link.index, family: family) }
        for a in have where a != address && network.contains(a.address) {
            logger.info(
                "overlay: removing a stale address",
                metadata: ["overlay.device": "\(link.name)", "overlay.address": "\(a)"])
            try netlink { () throws(NetlinkError) in try dataPath.deleteAddress(a, link: link.index) }
        }
        if !have.contains(address) {
            do { try dataPath.addAddress(address, link: link.index) } catch  where error.isExists {} catch {
                throw .netlink(error)
            }
        }
        if !link.isUp {
            try netlink { () throws(NetlinkError) in try dataPath.setLink(link.index, LinkChange(up: true)) }
        }
    }

    /// The plan for `peer` (see `peerPlan`).
    private func plan(_ peer: Peer, _ s: inout State) -> Plan? {
        guard let own = s.subnet else { return nil }
        return peerPlan(
            peer, mode: mode, network: network, interface: interface, ownSubnet: own, device: s.device,
            connected: s.connected)
    }

    private func noteSkips(
        _ reasons: [IPNetwork: String], replacingAll: Bool, _ s: inout State, _ report: inout ReconcileReport
    ) {
        for (subnet, reason) in reasons.sorted(by: { $0.key.address < $1.key.address })
        where s.skipped[subnet] != reason {
            logger.info(
                "overlay: peer skipped", metadata: ["overlay.peer": "\(subnet)", "overlay.reason": "\(reason)"])
        }
        if replacingAll { s.skipped = reasons } else { s.skipped.merge(reasons) { $1 } }
        report.skipped = reasons
    }

    private func fdbShared(_ f: FDBEntry, except subnet: IPNetwork, _ s: State) -> Bool {
        s.programmed.contains { $0.key != subnet && $0.value.fdb?.mac == f.mac }
    }

    private func removal(of old: PeerEntries, subnet: IPNetwork, _ s: State) -> Changes {
        var c = Changes()
        c.removeRoutes = [old.route]
        if let n = old.neighbour { c.removeNeighbours = [n] }
        if let f = old.fdb, !fdbShared(f, except: subnet, s) { c.removeFDB = [f] }
        return c
    }
}

/// The plan for `peer` on a node with subnet `own`, or nil for this node's own lease. The lease
/// layer rejects hostile leases before they become peers (NetworkConfig.check(peer:)); the same
/// values are refused here again, so that no caller can put them into the kernel. Every route is
/// marked with podnet's route protocol. Peer, subnet and addresses are all of the network's
/// family: an IPv6 network plans the IPv6 sides of leases against the interface's IPv6 addresses.
/// Shared by reconcile and the read-only inspection, so that both want the same entries.
func peerPlan(
    _ peer: Peer, mode: any NetworkMode, network: IPNetwork, interface: ExternalInterface, ownSubnet own: IPNetwork,
    device: Link?, connected: [IPNetwork]
) -> Plan? {
    guard peer.subnet != own else { return nil }
    let family = network.family
    guard peer.subnet.family == family, peer.publicIP.family == family else {
        return .skip("not an \(family.name) lease")
    }
    guard network.contains(peer.subnet.address), peer.subnet.prefixLength >= network.prefixLength else {
        return .skip("its subnet is not inside the overlay network \(network)")
    }
    guard !peer.subnet.overlaps(own) else { return .skip("its subnet overlaps this node's \(own)") }
    let mine = [interface.address(family)?.address, interface.publicIP(family)].compactMap { $0 }
    for address in mine where peer.subnet.contains(address) {
        return .skip("its subnet contains this node's address \(address)")
    }
    guard !mine.contains(peer.publicIP) else {
        return .skip("it carries this node's public IP \(peer.publicIP)")
    }
    if let problem = peer.publicIP.underlayProblem { return .skip("its public IP \(peer.publicIP) is \(problem)") }
    guard !network.contains(peer.publicIP) else {
        return .skip("its public IP \(peer.publicIP) is inside the overlay network")
    }
    if let problem = peer.vtepMAC?.vtepProblem { return .skip("its VtepMAC \(peer.vtepMAC!) is \(problem)") }
    switch mode.plan(peer, device: device, connected: connected) {
    case .program(var entries):
        entries.route.proto = RouteProtocol.podnet
        return .program(entries)
    case .skip(let reason):
        return .skip(reason)
    }
}

extension IPFamily {
    /// "IPv4" or "IPv6", for messages.
    var name: String { self == .v4 ? "IPv4" : "IPv6" }
}
