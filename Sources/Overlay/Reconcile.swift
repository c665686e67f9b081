// Reconciliation: read the kernel once, compare with the entries the peers need, change only the
// difference. One route dump, one neighbour dump and one FDB dump per pass, whatever the number of
// peers; then one netlink request per entry that is missing, wrong or stale -- on a converged node
// a pass changes nothing.
//
// What a network owns (and so may remove) is decided by what is in the kernel, never by a record
// kept in memory, so entries left by a previous run, a crash or another mode are found too:
// - every main-table route of podnet's route protocol (`RouteProtocol.podnet`, 98), wherever it
//   points: podnetd marks every route it installs with it, so a route it installed for a lease
//   that was later rejected, deleted, or moved outside a changed Network is still found, also
//   after a restart;
// - on its tunnel device: every route with a gateway into the overlay network, every permanent
//   neighbour, every FDB entry with a remote;
// - on the underlay interface: gateway routes to subnet-sized prefixes of the overlay network that
//   `ip route add` (RTPROT_BOOT) installed -- host-gw and DirectRouting routes, flanneld's included.
//   Routes DHCP, a routing daemon or the kernel installed are never touched.
//
// flanneld installs its routes with RTPROT_BOOT (3), the default of vishvananda/netlink and of
// `ip route add`, so its routes cannot be told from an operator's; that is why it removes only
// routes into the network. A route of flanneld's that podnetd still wants is replaced once by the
// same route with podnet's protocol.

import Addressing
import Logging
import Netlink

/// rtm_protocol values, who installed a route (`ip route` shows the number, or a name from
/// /etc/iproute2/rt_protos).
public enum RouteProtocol {
    /// podnet's own: every route podnetd installs carries it, so podnetd can list and remove exactly
    /// its own routes. 98 is in no registry: not in the kernel's rtnetlink.h (0-4 kernel, 8-18,
    /// 42 babel, 99 openr, 186-192 routing daemons), not in iproute2's rt_protos, and not what other
    /// pod networks use (flanneld 3 boot, BIRD 12, kube-router 17, FRR 186). Name it for `ip route`
    /// with `echo "98 podnet" > /etc/iproute2/rt_protos.d/podnet.conf`.
    public static let podnet: UInt8 = 98
    /// RTPROT_BOOT: `ip route add`, and flanneld's routes.
    public static let boot: UInt8 = 3
}

/// The kernel entries that make one peer reachable. Set in this order: the neighbour and FDB entry
/// first, the route last (it makes traffic flow, and the kernel would otherwise ARP for the
/// gateway into a tunnel that cannot answer).
struct PeerEntries: Equatable, Sendable {
    var neighbour: Neighbour?
    var fdb: FDBEntry?
    var route: Route
}

/// What a network owns in the kernel.
struct Ownership: Sendable {
    /// The overlay network (flannel's Network): routes elsewhere are never touched.
    var network: IPNetwork
    /// This node's subnet: no peer entries for it.
    var ownSubnet: IPNetwork
    /// The tunnel device (vxlan, ipip); nil for host-gw.
    var device: Int32?
    /// Whether neighbours and FDB entries on the device are the network's (vxlan).
    var ownsNeighbours: Bool
    /// The underlay interface.
    var interface: Int32
    /// The network's address family: the family of every dump.
    var family: IPFamily

    func owns(_ r: Route) -> Bool {
        if r.table == 254 && r.proto == RouteProtocol.podnet { return true }
        guard r.table == 254, r.gateway != nil, r.destination != ownSubnet, network.contains(r.destination.address),
            r.destination.prefixLength >= network.prefixLength
        else { return false }
        if let device, r.interface == device { return true }
        return r.interface == interface && (r.proto ?? RouteProtocol.boot) == RouteProtocol.boot
            && r.destination.prefixLength == ownSubnet.prefixLength
    }
}

/// The kernel's state, read once per pass.
struct KernelState: Sendable {
    /// Main-table unicast routes of the network's family, all devices.
    var routes: [Route]
    /// Neighbours and FDB entries of the tunnel device (empty when the network owns none).
    var neighbours: [Neighbour] = []
    var fdb: [FDBEntry] = []

    /// Reads what a pass compares: one route dump, the device's neighbours and FDB entries when
    /// the network owns them, and the prefixes the underlay interface reaches directly (from its
    /// addresses and those routes). Reconcile and the read-only inspection read alike.
    static func read(_ dataPath: any DataPath, ownership: Ownership) throws(OverlayError) -> (
        kernel: KernelState, connected: [IPNetwork]
    ) {
        var kernel = KernelState(
            routes: try netlink { () throws(NetlinkError) in
                try dataPath.routes(family: ownership.family, table: 254, interface: nil)
            })
        if ownership.ownsNeighbours, let device = ownership.device {
            kernel.neighbours = try netlink { () throws(NetlinkError) in
                try dataPath.neighbours(interface: device, family: ownership.family)
            }
            kernel.fdb = try netlink { () throws(NetlinkError) in try dataPath.fdbEntries(interface: device) }
        }
        let addresses = try netlink { () throws(NetlinkError) in
            try dataPath.addresses(link: ownership.interface, family: ownership.family)
        }
        return (
            kernel,
            connectedPrefixes(
                interface: ownership.interface, family: ownership.family, addresses: addresses, routes: kernel.routes)
        )
    }
}

/// The changes that turn the kernel's state into the desired one.
struct Changes: Equatable, Sendable {
    struct PeerChange: Equatable, Sendable {
        var subnet: IPNetwork
        var neighbour: Neighbour?
        var fdb: FDBEntry?
        var route: Route?
    }
    var removeRoutes: [Route] = []
    var removeFDB: [FDBEntry] = []
    var removeNeighbours: [Neighbour] = []
    /// Entries to create or correct, per peer, in subnet order.
    var set: [PeerChange] = []

    var isEmpty: Bool { removeRoutes.isEmpty && removeFDB.isEmpty && removeNeighbours.isEmpty && set.isEmpty }
}

extension Route {
    /// True when this route (as the kernel reports it) is `wanted`: the same forwarding, and the
    /// same protocol (a route of flanneld's is replaced by podnet's own, so that it is found again
    /// by its protocol once no longer wanted).
    func satisfies(_ wanted: Route) -> Bool {
        destination == wanted.destination && gateway == wanted.gateway && interface == wanted.interface
            && onlink == wanted.onlink && metric == wanted.metric && table == wanted.table
            && (proto ?? RouteProtocol.boot) == (wanted.proto ?? RouteProtocol.boot)
    }
}

/// Compares the desired entries with the kernel's and returns what to remove and what to set.
func diff(desired: [IPNetwork: PeerEntries], kernel: KernelState, ownership: Ownership) -> Changes {
    var changes = Changes()
    var set: [IPNetwork: Changes.PeerChange] = [:]
    func mark(_ subnet: IPNetwork, _ update: (inout Changes.PeerChange) -> Void) {
        update(&set[subnet, default: Changes.PeerChange(subnet: subnet)])
    }

    // Routes, keyed by destination. A desired route satisfied by one kernel route keeps it and
    // loses its duplicates (other metrics); an unsatisfied one is replaced, which overwrites the
    // kernel's route of the same metric, and the others of that destination go.
    var owned: [IPNetwork: [Route]] = [:]
    for r in kernel.routes where ownership.owns(r) { owned[r.destination, default: []].append(r) }
    for (subnet, entries) in desired {
        let wanted = entries.route
        let existing = owned.removeValue(forKey: wanted.destination) ?? []
        if let keep = existing.firstIndex(where: { $0.satisfies(wanted) }) {
            changes.removeRoutes += existing.enumerated().filter { $0.offset != keep }.map(\.element)
        } else {
            mark(subnet) { $0.route = wanted }
            changes.removeRoutes += existing.filter { $0.metric != wanted.metric }
        }
    }
    changes.removeRoutes += owned.values.joined()

    if ownership.ownsNeighbours {
        // Neighbours, keyed by address. Only permanent entries are ours: others are the kernel's
        // own resolution attempts and age out.
        var wantedNeighbours: [IPAddress: (IPNetwork, Neighbour)] = [:]
        for (subnet, entries) in desired { if let n = entries.neighbour { wantedNeighbours[n.address] = (subnet, n) } }
        var satisfied = Set<IPAddress>()
        for n in kernel.neighbours {
            if let (_, wanted) = wantedNeighbours[n.address] {
                if n.isPermanent && n.mac == wanted.mac { satisfied.insert(n.address) }
            } else if n.isPermanent {
                changes.removeNeighbours.append(n)
            }
        }
        for (address, (subnet, wanted)) in wantedNeighbours where !satisfied.contains(address) {
            mark(subnet) { $0.neighbour = wanted }
        }

        // FDB entries, keyed by MAC; a MAC may have several remotes (`bridge fdb append`), of
        // which only the wanted one stays.
        var wantedFDB: [MACAddress: (IPNetwork, FDBEntry)] = [:]
        for (subnet, entries) in desired.sorted(by: { $0.key.address < $1.key.address }) {
            if let f = entries.fdb { wantedFDB[f.mac] = (subnet, f) }
        }
        var satisfiedMACs = Set<MACAddress>()
        for f in kernel.fdb where f.destination != nil {
            if let (_, wanted) = wantedFDB[f.mac], f.destination == wanted.destination {
                if f.isPermanent { satisfiedMACs.insert(f.mac) }
            } else {
                changes.removeFDB.append(f)
            }
        }
        for (mac, (subnet, wanted)) in wantedFDB where !satisfiedMACs.contains(mac) {
            mark(subnet) { $0.fdb = wanted }
        }
    }

    changes.set = set.values.sorted { $0.subnet.address < $1.subnet.address }
    changes.removeRoutes.sort { $0.destination.address < $1.destination.address }
    changes.removeNeighbours.sort { $0.address < $1.address }
    changes.removeFDB.sort { $0.mac.description < $1.mac.description }
    return changes
}

/// Applies `changes`: removals first, then per peer its neighbour, FDB entry and route. A failure
/// is recorded and the rest goes on; a peer whose neighbour or FDB entry failed does not get its
/// route. Returns the subnets of peers that could not be completed.
func apply(_ changes: Changes, to dataPath: any DataPath, report: inout ReconcileReport, logger: Logger) -> Set<
    IPNetwork
> {
    func attempt(_ what: @autoclosure () -> String, _ op: () throws(NetlinkError) -> Void) -> Bool {
        do {
            try op()
            return true
        } catch  where error.isNotFound {
            return true  // already gone: the goal of a removal
        } catch {
            report.failures.append("\(what()): \(error)")
            logger.info(
                "overlay: kernel change failed", metadata: ["overlay.change": "\(what())", "error": "\(error)"])
            return false
        }
    }
    for r in changes.removeRoutes {
        if attempt("remove route \(r.destination)", { () throws(NetlinkError) in try dataPath.deleteRoute(r) }) {
            report.removed.routes += 1
        }
    }
    for f in changes.removeFDB {
        if attempt(
            "remove fdb \(f.mac) dst \(f.destination.map(\.description) ?? "-")",
            { () throws(NetlinkError) in try dataPath.deleteFDB(f) })
        {
            report.removed.fdbEntries += 1
        }
    }
    for n in changes.removeNeighbours {
        if attempt(
            "remove neighbour \(n.address)",
            { () throws(NetlinkError) in try dataPath.deleteNeighbour(n.address, interface: n.interface) })
        {
            report.removed.neighbours += 1
        }
    }
    var failed = Set<IPNetwork>()
    for p in changes.set {
        if let n = p.neighbour {
            guard
                attempt(
                    "set neighbour \(n.address) for \(p.subnet)",
                    { () throws(NetlinkError) in try dataPath.replaceNeighbour(n) })
            else { failed.insert(p.subnet); continue }
            report.programmed.neighbours += 1
        }
        if let f = p.fdb {
            guard attempt("set fdb \(f.mac) for \(p.subnet)", { () throws(NetlinkError) in try dataPath.replaceFDB(f) })
            else { failed.insert(p.subnet); continue }
            report.programmed.fdbEntries += 1
        }
        if let r = p.route {
            guard attempt("set route \(r.destination)", { () throws(NetlinkError) in try dataPath.replaceRoute(r) })
            else { failed.insert(p.subnet); continue }
            report.programmed.routes += 1
        }
    }
    return failed
}

/// Prefixes of `family` reachable without a gateway through `interface`: its addresses' prefixes
/// and its main-table routes without a gateway (default routes excepted).
func connectedPrefixes(interface: Int32, family: IPFamily, addresses: [IPNetwork], routes: [Route]) -> [IPNetwork] {
    var out = addresses.filter { $0.family == family }.map(\.network)
    for r in routes
    where r.interface == interface && r.gateway == nil && r.table == 254 && r.destination.prefixLength > 0
        && r.destination.family == family
    {
        if !out.contains(r.destination) { out.append(r.destination) }
    }
    return out
}
