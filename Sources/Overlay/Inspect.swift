// Read-only drift inspection: what `reconcile` would change on this node, without changing it.
//
// The inspection is the daemon's reconcile up to the point where it would write: the same mode
// (from the config, as `registerNetwork` builds it, but without creating its device), the same
// kernel read (`KernelState.read`: one route dump, the device's neighbours and FDB), the same
// per-peer plan (`peerPlan`) and the same `diff`. So podnetctl and podnetd cannot disagree on what
// is drift: an entry is "missing" or "wrong" exactly when reconcile would set it, and "stale"
// exactly when reconcile would remove it.
//
// From the diff, each wanted entry is ok (reconcile leaves it), missing (nothing in the kernel
// that reconcile would overwrite) or wrong (the kernel's entry that reconcile would replace or
// remove for it: a route of the same destination, the neighbour of the gateway's address, the
// FDB entry of the VtepMAC or of the peer's public IP). The kernel entries reconcile would remove
// and that are no peer's "wrong" entry are stale. A missing tunnel device is judged as reconcile
// judges the new, empty device it would create: every entry on it is missing.
//
// What `prepare` fixes before a pass -- an incompatible device, its MTU, its address, its state --
// is reported as device problems. Nothing is created, changed or deleted: only dumps are sent.

import Addressing
import Netlink

/// The kernel compared with what the peers need, as reconcile judges it.
public struct Inspection: Equatable, Sendable {
    /// The lease's BackendType: "vxlan", "host-gw", "ipip", "bgp".
    public var backendType: String
    /// The tunnel device: "flannel.1", "flannel.ipip"; nil for host-gw.
    public var device: String?
    /// False when the tunnel device is missing: every entry on it is then missing (reconcile
    /// would create the device and program them all). True for host-gw.
    public var deviceFound: Bool
    /// The device's MAC as found (vxlan: what this node's lease must publish as VtepMAC).
    public var deviceMAC: MACAddress?
    /// What reconcile would fix on the device itself before comparing entries, one sentence
    /// each: "flannel.1 is down", "flannel.1 has MTU 1400, want 1450", ...
    public var deviceProblems: [String]
    /// The MTU pods get on this node (subnet.env's FLANNEL_MTU).
    public var mtu: Int
    /// One per peer given, by subnet.
    public var peers: [PeerInspection]
    /// Kernel entries the network owns that no peer wants: what reconcile would remove.
    public var stale: [StaleEntry]

    public init(
        backendType: String, device: String?, deviceFound: Bool, deviceMAC: MACAddress? = nil,
        deviceProblems: [String] = [], mtu: Int, peers: [PeerInspection], stale: [StaleEntry]
    ) {
        self.backendType = backendType; self.device = device; self.deviceFound = deviceFound
        self.deviceMAC = deviceMAC; self.deviceProblems = deviceProblems; self.mtu = mtu; self.peers = peers
        self.stale = stale
    }

    /// True when reconcile would change nothing.
    public var isConsistent: Bool {
        deviceFound && deviceProblems.isEmpty && stale.isEmpty && peers.allSatisfy(\.isConsistent)
    }
}

/// One peer's entries in the kernel.
public struct PeerInspection: Equatable, Sendable {
    public var peer: Peer
    /// The mode gives this peer nothing, and why (as the daemon logs it); its entries are then
    /// all `.ok` (nothing is wanted), and what the kernel still has for it is in `stale`.
    public var skipped: String?
    /// The route to the peer's subnet.
    public var route: EntryState
    /// vxlan, encapsulated peers only: the permanent neighbour of the gateway `<subnet>.0`.
    public var neighbour: EntryState?
    /// vxlan, encapsulated peers only: the FDB entry sending the VtepMAC to the public IP.
    public var fdb: EntryState?
    /// True when the peer's entries are on the tunnel device; false for host-gw and DirectRouting
    /// (a route through the underlay interface), and for skipped peers.
    public var viaDevice: Bool
    /// The lladdr of the gateway's neighbour in the kernel, when `neighbour` is wrong because
    /// of it: not the lease's VtepMAC.
    public var neighbourMAC: MACAddress?
    /// The MAC of the FDB entry `fdb` found wrong, when it is not the lease's VtepMAC (an entry
    /// to the peer's public IP under an old VtepMAC).
    public var fdbMAC: MACAddress?

    public init(
        peer: Peer, skipped: String? = nil, route: EntryState = .ok, neighbour: EntryState? = nil,
        fdb: EntryState? = nil, viaDevice: Bool = false, neighbourMAC: MACAddress? = nil, fdbMAC: MACAddress? = nil
    ) {
        self.peer = peer; self.skipped = skipped; self.route = route; self.neighbour = neighbour; self.fdb = fdb
        self.viaDevice = viaDevice; self.neighbourMAC = neighbourMAC; self.fdbMAC = fdbMAC
    }

    /// The MAC the kernel has for this peer when it is not the lease's VtepMAC.
    public var kernelMAC: MACAddress? { neighbourMAC ?? fdbMAC }

    public var isConsistent: Bool { route == .ok && (neighbour ?? .ok) == .ok && (fdb ?? .ok) == .ok }
}

/// A wanted entry, compared with the kernel. Entries are written as `ip route`, `ip neigh` and
/// `bridge fdb` show them: "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink",
/// "10.244.2.0 dev flannel.1 lladdr 02:42:c0:a8:32:0c PERMANENT",
/// "02:42:c0:a8:32:0c dev flannel.1 dst 192.168.50.12 self permanent". A route's protocol is shown
/// only when it is not podnet's (98), so a wanted route never shows it.
public enum EntryState: Equatable, Sendable {
    /// In the kernel as wanted: reconcile leaves it.
    case ok
    /// Not in the kernel: reconcile would add `wanted`.
    case missing(wanted: String)
    /// The kernel has `found` instead: reconcile would replace it with `wanted` (or remove it and
    /// add `wanted`).
    case wrong(found: String, wanted: String)
}

/// A kernel entry the network owns that no peer wants.
public struct StaleEntry: Equatable, Sendable {
    public enum Kind: String, Equatable, Sendable { case route, neighbour, fdb }
    public var kind: Kind
    /// As `ip route` / `ip neigh` / `bridge fdb` show it.
    public var entry: String
    /// The peer subnet it served, as far as the entry says: a route's destination; for a
    /// neighbour, the SubnetLen subnet of its address (the gateway `<subnet>.0`); nil for FDB
    /// entries.
    public var subnet: IPNetwork?
    /// A neighbour's lladdr, an FDB entry's MAC.
    public var mac: MACAddress?
    /// Where it sends: a route's gateway, an FDB entry's dst.
    public var remote: IPAddress?

    public init(kind: Kind, entry: String, subnet: IPNetwork? = nil, mac: MACAddress? = nil, remote: IPAddress? = nil) {
        self.kind = kind; self.entry = entry; self.subnet = subnet; self.mac = mac; self.remote = remote
    }
}

extension NetworkConfig {
    /// Read only: compares the kernel with what `peers` need on a node using `interface` with the
    /// lease `ownSubnet`, as the daemon's reconcile judges it. Creates, changes and deletes
    /// nothing. `peers` are those the daemon programs: the leases `check(peer:)` accepts, other
    /// than this node's own (a peer with `ownSubnet` is reported skipped).
    public func inspect(
        interface: ExternalInterface, ownSubnet: IPNetwork, peers: [Peer], dataPath: any DataPath
    ) throws(OverlayError) -> Inspection {
        let backend: any ModeBackend
        // Dual stack: the pods' MTU is the smaller of the two families' (DualStackNetwork's).
        var podMTU: Int
        do {
            let kind = try BackendRegistry.kind(backendType)
            backend = kind.make(self, network, interface)
            podMTU = backend.mtu
            if isDualStack, let ipv6 { podMTU = min(podMTU, kind.make(self, ipv6.network, interface).mtu) }
        } catch {
            throw .invalidConfiguration(error.description)
        }
        let mode = backend.mode, own = ownSubnet.network
        let links = try netlink { () throws(NetlinkError) in try dataPath.links() }

        // The device as `prepare` would find it; a placeholder (index 0, no kernel entry can be
        // on it) when missing, so that peers are planned as on the device reconcile would create.
        var device: Link?, found: Link?, deviceProblems: [String] = []
        if let tunnel = mode.device {
            found = links.first { $0.name == tunnel.name }
            if let link = found {
                deviceProblems = try problems(of: link, tunnel: tunnel, ownSubnet: own, dataPath: dataPath)
            }
            device = found ?? Link(index: 0, name: tunnel.name, mtu: tunnel.mtu)
        }
        let ownership = Ownership(
            network: network, ownSubnet: own, device: found?.index, ownsNeighbours: mode.ownsNeighbours,
            interface: interface.index, family: network.family)
        let (kernel, connected) = try KernelState.read(dataPath, ownership: ownership)

        var desired: [IPNetwork: PeerEntries] = [:], skipped: [IPNetwork: String] = [:]
        var latest: [IPNetwork: Peer] = [:]
        for peer in peers {
            latest[peer.subnet] = peer
            var planned = peer
            if backendType == "bgp" {
                // BGP chose the next hop: the route of ours to the subnet through a next hop the
                // interface reaches is what the daemon wants. Without one, a node on this segment
                // should have been learned from the mesh; another rack's only from a router.
                let reached = { (ip: IPAddress) in connected.contains { $0.contains(ip) } }
                if let r = kernel.routes.first(where: {
                    $0.destination == peer.subnet && ownership.owns($0) && $0.gateway.map(reached) == true
                }), let gateway = r.gateway {
                    planned.publicIP = gateway
                } else if !reached(peer.publicIP) {
                    skipped[peer.subnet] = "no route learned over BGP (its node is on another segment)"
                    desired[peer.subnet] = nil
                    continue
                }
            }
            switch peerPlan(
                planned, mode: mode, network: network, interface: interface, ownSubnet: own, device: device,
                connected: connected)
            {
            case .program(let entries)?: desired[peer.subnet] = entries; skipped[peer.subnet] = nil
            case .skip(let reason)?: skipped[peer.subnet] = reason; desired[peer.subnet] = nil
            case nil: skipped[peer.subnet] = "this node's own subnet"; desired[peer.subnet] = nil
            }
        }
        let changes = diff(desired: desired, kernel: kernel, ownership: ownership)
        let names = EntryNames(links: links, device: device)

        var judge = Judge(kernel: kernel, changes: changes, ownership: ownership, names: names)
        var inspected: [PeerInspection] = []
        for peer in latest.values.sorted(by: { $0.subnet.address < $1.subnet.address }) {
            guard let entries = desired[peer.subnet] else {
                inspected.append(PeerInspection(peer: peer, skipped: skipped[peer.subnet] ?? "not planned"))
                continue
            }
            inspected.append(judge.inspect(peer, entries, deviceIndex: device?.index))
        }
        return Inspection(
            backendType: backendType, device: mode.device?.name, deviceFound: mode.device == nil || found != nil,
            deviceMAC: found?.mac, deviceProblems: deviceProblems, mtu: podMTU, peers: inspected,
            stale: judge.stale(subnetLength: subnetLength))
    }

    /// What `prepare` would fix on the device `link`: recreate it when incompatible, correct its
    /// MTU, set its address `<subnet>.0/32` (removing other addresses of the network), bring it up.
    private func problems(of link: Link, tunnel: any TunnelDevice, ownSubnet: IPNetwork, dataPath: any DataPath)
        throws(OverlayError) -> [String]
    {
        var out: [String] = []
        if link.kind != backendType {
            // vxlan deletes and recreates it; ipip refuses to touch it (`deviceConflict`).
            out.append("\(link.name) is a \(link.kind ?? "kind-less") device, not \(backendType)")
        } else if !tunnel.isCompatible(link) {
            out.append("\(link.name) has other settings than podnetd gives it: podnetd recreates it")
        } else if link.mtu != tunnel.mtu {
            out.append("\(link.name) has MTU \(link.mtu), want \(tunnel.mtu)")
        }
        let have = try netlink { () throws(NetlinkError) in
            try dataPath.addresses(link: link.index, family: network.family)
        }
        let want = IPNetwork(address: ownSubnet.firstAddress, prefixLength: network.family.bitWidth)!
        if !have.contains(want) { out.append("\(link.name) lacks its address \(want)") }
        for a in have where a != want && network.contains(a.address) {
            out.append("\(link.name) has a stale address \(a)")
        }
        if !link.isUp { out.append("\(link.name) is down") }
        return out
    }
}

/// Turns the diff into per-peer states, remembering which kernel entries a peer's "wrong" state
/// names, so that they are not reported stale as well.
private struct Judge {
    let kernel: KernelState
    let changes: Changes
    let ownership: Ownership
    let names: EntryNames
    let set: [IPNetwork: Changes.PeerChange]
    var claimedRoutes: [Route] = []
    var claimedNeighbours: [Neighbour] = []
    var claimedFDB: [FDBEntry] = []

    init(kernel: KernelState, changes: Changes, ownership: Ownership, names: EntryNames) {
        self.kernel = kernel; self.changes = changes; self.ownership = ownership; self.names = names
        set = Dictionary(changes.set.map { ($0.subnet, $0) }, uniquingKeysWith: { $1 })
    }

    mutating func inspect(_ peer: Peer, _ entries: PeerEntries, deviceIndex: Int32?) -> PeerInspection {
        let change = set[peer.subnet]
        var result = PeerInspection(
            peer: peer, viaDevice: deviceIndex != nil && entries.route.interface == deviceIndex)
        if let wanted = change?.route {
            // What `replaceRoute` overwrites (the same destination and metric), else a route of
            // the network's to that destination that reconcile removes.
            let candidates = kernel.routes.filter { $0.destination == wanted.destination && $0.table == wanted.table }
            if let r = candidates.first(where: { $0.metric == wanted.metric })
                ?? candidates.first(where: ownership.owns)
            {
                claimedRoutes.append(r)
                result.route = .wrong(found: names.route(r), wanted: names.route(wanted))
            } else {
                result.route = .missing(wanted: names.route(wanted))
            }
        }
        if let wanted = entries.neighbour {
            result.neighbour = .ok
            if change?.neighbour != nil {
                if let n = kernel.neighbours.first(where: { $0.address == wanted.address }) {
                    claimedNeighbours.append(n)
                    result.neighbour = .wrong(found: names.neighbour(n), wanted: names.neighbour(wanted))
                    if let m = n.mac, m != wanted.mac { result.neighbourMAC = m }
                } else {
                    result.neighbour = .missing(wanted: names.neighbour(wanted))
                }
            }
        }
        if let wanted = entries.fdb {
            result.fdb = .ok
            if change?.fdb != nil {
                // The VtepMAC's own entry (to another remote, or not permanent), else an entry
                // reconcile removes that sends to the peer's public IP (under an old VtepMAC).
                let removed = changes.removeFDB
                if let f = kernel.fdb.first(where: { $0.mac == wanted.mac && $0.destination != nil && !claimed($0) })
                    ?? removed.first(where: { $0.destination == wanted.destination && !claimed($0) })
                {
                    claimedFDB.append(f)
                    result.fdb = .wrong(found: names.fdb(f), wanted: names.fdb(wanted))
                    if f.mac != wanted.mac { result.fdbMAC = f.mac }
                } else {
                    result.fdb = .missing(wanted: names.fdb(wanted))
                }
            }
        }
        return result
    }

    private func claimed(_ f: FDBEntry) -> Bool { claimedFDB.contains(f) }

    /// What reconcile removes and no peer's state names, routes first.
    func stale(subnetLength: Int) -> [StaleEntry] {
        var out: [StaleEntry] = []
        for r in changes.removeRoutes where !claimedRoutes.contains(r) {
            out.append(StaleEntry(kind: .route, entry: names.route(r), subnet: r.destination, remote: r.gateway))
        }
        for n in changes.removeNeighbours where !claimedNeighbours.contains(n) {
            out.append(
                StaleEntry(
                    kind: .neighbour, entry: names.neighbour(n),
                    subnet: IPNetwork(address: n.address, prefixLength: subnetLength)?.network, mac: n.mac))
        }
        for f in changes.removeFDB where !claimedFDB.contains(f) {
            out.append(StaleEntry(kind: .fdb, entry: names.fdb(f), mac: f.mac, remote: f.destination))
        }
        return out
    }
}

/// Writes kernel entries as iproute2 shows them, with device names for indexes.
struct EntryNames {
    let names: [Int32: String]

    init(links: [Link], device: Link?) {
        var names = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        if let device, names[device.index] == nil { names[device.index] = device.name }
        self.names = names
    }

    func name(_ index: Int32) -> String { names[index] ?? "if\(index)" }

    /// `ip route`: `<dst> via <gw> dev <dev> [proto <p>] [metric <m>] [onlink]`.
    func route(_ r: Route) -> String {
        var s = r.type == .unicast ? "" : "\(r.type) "
        s += "\(r.destination)"
        if let g = r.gateway { s += " via \(g)" }
        if let i = r.interface { s += " dev \(name(i))" }
        if let p = r.proto, p != RouteProtocol.podnet { s += " proto \(Self.protocolName(p))" }
        if let m = r.priority, m != 0 { s += " metric \(m)" }
        if r.table != 254 { s += " table \(r.table)" }
        if r.onlink { s += " onlink" }
        return s
    }

    /// `ip neigh`: `<address> dev <dev> lladdr <mac> <STATE>`.
    func neighbour(_ n: Neighbour) -> String {
        var s = "\(n.address) dev \(name(n.interface))"
        if let m = n.mac { s += " lladdr \(m)" }
        return s + " " + Self.stateNames(n.state)
    }

    /// `bridge fdb`: `<mac> dev <dev> dst <remote> self permanent`.
    func fdb(_ f: FDBEntry) -> String {
        var s = "\(f.mac) dev \(name(f.interface))"
        if let d = f.destination { s += " dst \(d)" }
        if f.isSelf { s += " self" }
        if f.isPermanent { s += " permanent" } else if f.state & 0x40 != 0 { s += " static" }
        return s
    }

    /// iproute2's names from /etc/iproute2/rt_protos for the protocols a node commonly has.
    static func protocolName(_ p: UInt8) -> String {
        switch p {
        case 2: "kernel"
        case 3: "boot"
        case 4: "static"
        case 16: "dhcp"
        default: "\(p)"
        }
    }

    /// NUD_* bits as `ip neigh` prints them.
    static func stateNames(_ state: UInt16) -> String {
        let all: [(UInt16, String)] = [
            (0x01, "INCOMPLETE"), (0x02, "REACHABLE"), (0x04, "STALE"), (0x08, "DELAY"), (0x10, "PROBE"),
            (0x20, "FAILED"), (0x40, "NOARP"), (0x80, "PERMANENT"),
        ]
        let set = all.filter { state & $0.0 != 0 }.map(\.1)
        return set.isEmpty ? "NONE" : set.joined(separator: " ")
    }
}
