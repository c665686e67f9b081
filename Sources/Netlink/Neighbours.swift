// Neighbours (ARP/NDP entries) and bridge forwarding database (FDB) entries.
//
// Both are RTM_*NEIGH messages: a neighbour has family AF_INET/AF_INET6 and maps an IP address to
// a MAC on a device; an FDB entry has family AF_BRIDGE and maps a MAC to a port or, on a VXLAN
// device with NTF_SELF, to the remote VTEP's IP (NDA_DST).

import Addressing
import CLibNL

/// A neighbour entry as podnet programs and reads it (`ip neigh`).
public struct Neighbour: Equatable, Sendable {
    public var address: IPAddress
    /// NDA_LLADDR; nil for entries still being resolved (INCOMPLETE, FAILED).
    public var mac: MACAddress?
    public var interface: Int32
    /// NUD_* bits, e.g. `Neighbour.permanent`.
    public var state: UInt16

    /// NUD_PERMANENT: never expires, never re-resolved.
    public static let permanent: UInt16 = 0x80
    public var isPermanent: Bool { state & Self.permanent != 0 }

    public init(address: IPAddress, mac: MACAddress?, interface: Int32, state: UInt16 = Neighbour.permanent) {
        self.address = address; self.mac = mac; self.interface = interface; self.state = state
    }
}

/// A bridge FDB entry (`bridge fdb`). On a VXLAN device, `destination` is the remote VTEP.
public struct FDBEntry: Equatable, Sendable {
    public var mac: MACAddress
    public var interface: Int32
    /// NDA_DST: the remote VTEP for VXLAN entries; nil for bridge-port entries.
    public var destination: IPAddress?
    /// NUD_* bits; `Neighbour.permanent` for static entries.
    public var state: UInt16
    /// NTF_* bits: NTF_SELF (0x02) for the device's own table, NTF_MASTER (0x04) for its bridge's.
    public var flags: UInt8
    /// NDA_MASTER: the bridge of a port entry.
    public var master: Int32?

    public static let selfFlag: UInt8 = 0x02
    public var isPermanent: Bool { state & Neighbour.permanent != 0 }
    public var isSelf: Bool { flags & Self.selfFlag != 0 }

    public init(
        mac: MACAddress, interface: Int32, destination: IPAddress?, state: UInt16 = Neighbour.permanent,
        flags: UInt8 = FDBEntry.selfFlag, master: Int32? = nil
    ) {
        self.mac = mac; self.interface = interface; self.destination = destination; self.state = state
        self.flags = flags; self.master = master
    }
}

// Constants from linux/neighbour.h and linux/rtnetlink.h, typed once.
private let afBridge: UInt8 = 7  // AF_BRIDGE
private let ndaDst = Int32(NDA_DST), ndaLLAddr = Int32(NDA_LLADDR)
private let ndaIfindex = Int32(NDA_IFINDEX)
private let newNeigh = Int32(RTM_NEWNEIGH), delNeigh = Int32(RTM_DELNEIGH), getNeigh = Int32(RTM_GETNEIGH)

extension NetlinkSession {
    /// Neighbours of `family` on the link `interface`, in every state. One dump, filtered by the
    /// kernel (NDA_IFINDEX).
    // ip [-6] neigh show dev <interface>
    public func neighbours(interface: Int32, family: IPFamily = .v4) throws(NetlinkError) -> [Neighbour] {
        var out: [Neighbour] = []
        try dump(
            "RTM_GETNEIGH dump ifindex \(interface)",
            request: { () throws(NetlinkError) -> Request in
                let r = Request(
                    type: getNeigh, flags: NLM_F_DUMP,
                    header: ndmsg(
                        ndm_family: UInt8(family.af), ndm_pad1: 0, ndm_pad2: 0,
                        ndm_ifindex: interface, ndm_state: 0, ndm_flags: 0, ndm_type: 0))
                do throws(NetlinkError) { try r.put(ndaIfindex, u32: UInt32(bitPattern: interface)) } catch {
                    r.free(); throw error
                }
                return r
            }, restart: { out.removeAll() },
            parse: { hdr in
                var n: OpaquePointer?
                guard rtnl_neigh_parse(hdr, &n) >= 0, let n else { return }
                defer { rtnl_neigh_put(n) }
                guard rtnl_neigh_get_ifindex(n) == interface, rtnl_neigh_get_family(n) == family.af,
                    let ip = IPAddress(nlAddr: rtnl_neigh_get_dst(n))
                else { return }
                out.append(
                    Neighbour(
                        address: ip, mac: MACAddress(nlAddr: rtnl_neigh_get_lladdr(n)), interface: interface,
                        state: UInt16(truncatingIfNeeded: rtnl_neigh_get_state(n))))
            })
        return out
    }

    /// Creates or overwrites the entry for `neighbour.address` (NLM_F_CREATE|NLM_F_REPLACE), with
    /// the entry's state (permanent unless set otherwise). Idempotent.
    // ip neigh replace <address> lladdr <mac> dev <interface> nud permanent
    public func replaceNeighbour(_ neighbour: Neighbour) throws(NetlinkError) {
        guard let mac = neighbour.mac else { throw .invalidArgument("neighbour \(neighbour.address) without lladdr") }
        let r = Request(
            type: newNeigh, flags: NLM_F_CREATE | NLM_F_REPLACE,
            header: ndmsg(
                ndm_family: UInt8(neighbour.address.family.af), ndm_pad1: 0, ndm_pad2: 0,
                ndm_ifindex: neighbour.interface, ndm_state: neighbour.state, ndm_flags: 0, ndm_type: 0))
        do throws(NetlinkError) {
            try r.put(ndaDst, bytes: neighbour.address.bytes)
            try r.put(ndaLLAddr, bytes: mac.bytes)
        } catch { r.free(); throw error }
        try send(r, "RTM_NEWNEIGH \(neighbour.address) lladdr \(mac) ifindex \(neighbour.interface)")
    }

    /// Deletes the entry for `address` on the link; `.notFound` when there is none.
    // ip neigh del <address> dev <interface>
    public func deleteNeighbour(_ address: IPAddress, interface: Int32) throws(NetlinkError) {
        let r = Request(
            type: delNeigh, flags: 0,
            header: ndmsg(
                ndm_family: UInt8(address.family.af), ndm_pad1: 0, ndm_pad2: 0,
                ndm_ifindex: interface, ndm_state: 0, ndm_flags: 0, ndm_type: 0))
        do throws(NetlinkError) { try r.put(ndaDst, bytes: address.bytes) } catch { r.free(); throw error }
        try send(r, "RTM_DELNEIGH \(address) ifindex \(interface)")
    }

    /// The FDB entries of the link `interface`: on a VXLAN device its own table (NTF_SELF), on a
    /// bridge port the bridge's entries for that port as well. One dump, filtered by the kernel
    /// (ifi_index in the request's ifinfomsg, as `bridge fdb show dev` sends it).
    // bridge fdb show dev <interface>
    public func fdbEntries(interface: Int32) throws(NetlinkError) -> [FDBEntry] {
        var out: [FDBEntry] = []
        try dump(
            "RTM_GETNEIGH AF_BRIDGE dump ifindex \(interface)",
            request: { () throws(NetlinkError) -> Request in
                Request(
                    type: getNeigh, flags: NLM_F_DUMP,
                    header: ifinfomsg(
                        ifi_family: afBridge, __ifi_pad: 0, ifi_type: 0, ifi_index: interface, ifi_flags: 0,
                        ifi_change: 0))
            }, restart: { out.removeAll() },
            parse: { hdr in
                var n: OpaquePointer?
                guard rtnl_neigh_parse(hdr, &n) >= 0, let n else { return }
                defer { rtnl_neigh_put(n) }
                guard rtnl_neigh_get_ifindex(n) == interface, let mac = MACAddress(nlAddr: rtnl_neigh_get_lladdr(n))
                else {
                    return
                }
                let master = rtnl_neigh_get_master(n)
                out.append(
                    FDBEntry(
                        mac: mac, interface: interface, destination: IPAddress(nlAddr: rtnl_neigh_get_dst(n)),
                        state: UInt16(truncatingIfNeeded: rtnl_neigh_get_state(n)),
                        flags: UInt8(truncatingIfNeeded: rtnl_neigh_get_flags(n)), master: master > 0 ? master : nil))
            })
        return out
    }

    /// Points `entry.mac` at `entry.destination` in the device's own table (NTF_SELF), replacing
    /// the entry's remote if the MAC is already there (NLM_F_CREATE|NLM_F_REPLACE). Idempotent.
    // bridge fdb replace <mac> dev <interface> dst <destination> self permanent
    public func replaceFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try modifyFDB(entry, type: newNeigh, flags: NLM_F_CREATE | NLM_F_REPLACE, verb: "replace")
    }

    /// Adds one more remote for `entry.mac` (NLM_F_CREATE|NLM_F_APPEND): VXLAN head-end replication.
    /// The kernel appends only for the all-zeros and multicast MACs (flood lists); for a unicast
    /// MAC that has an entry it changes nothing. `.exists` when that exact remote is there.
    // bridge fdb append <mac> dev <interface> dst <destination> self permanent
    public func appendFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try modifyFDB(entry, type: newNeigh, flags: NLM_F_CREATE | NLM_F_APPEND, verb: "append")
    }

    /// Deletes the remote `entry.destination` of `entry.mac` (the whole entry when it was the last
    /// remote, or when `destination` is nil); `.notFound` when there is no such entry.
    // bridge fdb del <mac> dev <interface> [dst <destination>] self
    public func deleteFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try modifyFDB(entry, type: delNeigh, flags: 0, verb: "del")
    }

    private func modifyFDB(_ entry: FDBEntry, type: Int32, flags: Int32, verb: String) throws(NetlinkError) {
        let r = Request(
            type: type, flags: flags,
            header: ndmsg(
                ndm_family: afBridge, ndm_pad1: 0, ndm_pad2: 0, ndm_ifindex: entry.interface,
                ndm_state: type == delNeigh ? 0 : entry.state, ndm_flags: entry.flags, ndm_type: 0))
        do throws(NetlinkError) {
            try r.put(ndaLLAddr, bytes: entry.mac.bytes)
            if let dst = entry.destination { try r.put(ndaDst, bytes: dst.bytes) }
        } catch { r.free(); throw error }
        try send(
            r,
            "RTM_\(type == delNeigh ? "DEL" : "NEW")NEIGH fdb \(verb) \(entry.mac) dst \(entry.destination.map(\.description) ?? "-") ifindex \(entry.interface)"
        )
    }
}
