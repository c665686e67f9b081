// VXLAN backend.
//
// Design note. Every node has one VXLAN device, flannel.<VNI>: local = the node's public IP,
// dev = the external interface, learning off, no group and no remote, so it sends only where its
// FDB says. Its address is <own subnet>.0/32 (no prefix route), its MTU the underlay's less 50
// (outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14). For each peer (subnet S, public IP P,
// VTEP MAC M) the kernel gets three entries on the device:
//
//   route      S via S.0 dev flannel.<VNI> onlink    IP: S is behind the gateway S.0, which is on
//                                                    the device though no prefix covers it
//   neighbour  S.0 lladdr M nud permanent            ARP: the gateway's MAC is M, never resolved
//   FDB        M dst P self permanent                L2: frames for M are encapsulated to P
//
// This is flanneld's layout, so a podnet node and a flanneld node interoperate, and an inner
// packet needs no ARP, multicast or miss notification: the kernel resolves all three from its
// tables. The cost is three entries per peer, each one netlink round trip to set: 1000 peers are
// 3000 requests on one socket, the same work as `ip -batch` plus `bridge -batch` of the same
// entries. A reconcile adds three dumps (routes, neighbours and FDB of the device), then changes
// only the difference; a steady-state pass changes nothing.
//
// IPv6 (an IPv6 network, alone or as the IPv6 half of a dual-stack pair) is the same layout on a
// device of its own, flannel-v6.<VNI>, next to flannel.<VNI> as flanneld has it: local = the
// node's public IPv6 address (IFLA_VXLAN_LOCAL6), its address <own IPv6 subnet>::/128, and per
// peer `S via S:: dev flannel-v6.<VNI> onlink`, the neighbour S:: lladdr M (an NDP entry, never
// solicited) and `M dst <peer's PublicIPv6>`. Its MTU is the underlay's less 70 (outer IPv6 40 +
// UDP 8 + VXLAN 8 + inner Ethernet 14); flanneld takes 50 there too, which makes full-size
// packets exceed the underlay MTU. The device has accept_ra=0, as flanneld sets it: router
// advertisements must never configure addresses or routes on the overlay.
//
// With DirectRouting, a peer whose public IP is on a subnet the external interface reaches
// directly gets one plain route, S via P dev <iface>, and no neighbour or FDB entry: no
// encapsulation between nodes of one L2 segment.
//
// The device is "ensured": created when missing; an existing one with the same VNI, local address,
// port, learning, GBP and underlying device is kept with its MAC (so peers need no update after a
// restart) and its MTU corrected; any other is deleted and created again, and everything on it is
// programmed again. A device created again (deleted by hand, or incompatible) gets its old MAC
// back, so peers' entries stay valid; should the MAC still change (udev's MACAddressPolicy), the
// report says the lease must be published again.

import Addressing
import Logging
import Netlink

/// The vxlan backend's configuration: flanneld's `Backend` object for `"Type": "vxlan"`, read by
/// `NetworkConfig`.
public struct VXLANConfig: Equatable, Sendable {
    /// `VNI`; the device is `flannel.<VNI>` (IPv6: `flannel-v6.<VNI>`).
    public var vni: UInt32 = 1
    /// `Port`: the UDP port; 0 in flannel's config means the kernel default, 8472.
    public var port: UInt16 = 8472
    /// `MTU`: the underlay MTU to assume; the interface's when nil. The device gets 50 less (IPv6:
    /// 70 less).
    public var mtu: Int?
    /// `GBP`: group-based policy.
    public var gbp = false
    /// `Learning`: let the device learn remote MACs (off: the FDB is programmed).
    public var learning = false
    /// `DirectRouting`: peers on the interface's L2 segment get a plain route, no encapsulation.
    public var directRouting = false
    /// The MAC a newly created device gets, e.g. the VtepMAC this node's lease already publishes;
    /// random when nil. An existing compatible device keeps its own. Not part of flannel's config.
    public var mac: MACAddress?

    public init(
        vni: UInt32 = 1, port: UInt16 = 8472, mtu: Int? = nil, gbp: Bool = false, learning: Bool = false,
        directRouting: Bool = false, mac: MACAddress? = nil
    ) {
        self.vni = vni; self.port = port; self.mtu = mtu; self.gbp = gbp; self.learning = learning
        self.directRouting = directRouting; self.mac = mac
    }
}

public struct VXLANBackend: Backend {
    public let interface: ExternalInterface
    public let network: IPNetwork
    public let config: VXLANConfig
    public var backendType: String { "vxlan" }

    /// - Parameters:
    ///   - interface: the external interface; its public IP of the network's family becomes the
    ///     device's local address.
    ///   - network: the overlay network (flannel's `Network`, e.g. 10.5.0.0/16, or `IPv6Network`).
    public init(interface: ExternalInterface, network: IPNetwork, config: VXLANConfig = VXLANConfig()) {
        self.interface = interface; self.network = network.network; self.config = config
    }

    /// `flannel.<VNI>`, or `flannel-v6.<VNI>` for an IPv6 network.
    public var deviceName: String { network.family == .v4 ? "flannel.\(config.vni)" : "flannel-v6.\(config.vni)" }
    /// The encapsulation's bytes: outer IPv4 (20) or IPv6 (40) header, UDP 8, VXLAN 8, inner
    /// Ethernet 14.
    public var overhead: Int { network.family == .v4 ? 50 : 70 }
    /// The device's MTU: the underlay's less `overhead`.
    public var mtu: Int { (config.mtu ?? interface.mtu) - overhead }

    public func registerNetwork(dataPath: any DataPath, logger: Logger) throws(OverlayError) -> any OverlayNetwork {
        try registerNetwork(dataPath: dataPath, logger: logger, keepingDevices: ownDevices)
    }

    func registerNetwork(dataPath: any DataPath, logger: Logger, keepingDevices: Set<String>) throws(OverlayError)
        -> any OverlayNetwork
    {
        guard (1...16_777_215).contains(config.vni) else {
            throw .invalidConfiguration("vxlan: VNI \(config.vni) is not in 1...16777215")
        }
        guard mtu >= (network.family == .v4 ? 68 : 1280) else {
            throw .invalidConfiguration(
                "vxlan: MTU \(mtu) (underlay \(mtu + overhead) less \(overhead)) is below "
                    + "\(network.family == .v4 ? "68" : "IPv6's minimum 1280")")
        }
        guard let local = interface.publicIP(network.family) else {
            throw .invalidConfiguration(
                "vxlan: \(interface.name) has no public \(network.family.name) address for the \(network.family.name) network \(network)"
            )
        }
        try removeOtherOverlayDevices(keeping: keepingDevices, dataPath: dataPath, logger: logger)
        let mode = vxlanMode(local: local)
        let (link, _) = try mode.vxlan.ensure(dataPath, lastKnown: nil, logger: logger)
        return PeerNetwork(
            mode: mode, dataPath: dataPath, interface: interface, network: network, mtu: mtu,
            device: link, logger: logger)
    }

    /// The device this backend ensures and what each peer gets, with `local` the device's local
    /// address (the interface's public IP of the network's family).
    func vxlanMode(local: IPAddress) -> VXLANMode {
        VXLANMode(
            device: VXLANDevice(
                name: deviceName,
                attributes: VXLANAttributes(
                    vni: config.vni, local: local, port: config.port, learning: config.learning,
                    underlyingInterface: interface.index, gbp: config.gbp), mtu: mtu, mac: config.mac),
            interfaceIndex: interface.index, publicIP: local, directRouting: config.directRouting)
    }
}

extension VXLANBackend: ModeBackend {
    var mode: any NetworkMode {
        // Without a public address of the family registerNetwork refuses; the inspection judges
        // the device as having none.
        vxlanMode(local: interface.publicIP(network.family) ?? IPAddress(family: network.family, value: 0))
    }
}

struct VXLANDevice: TunnelDevice {
    let name: String
    let attributes: VXLANAttributes
    let mtu: Int
    let mac: MACAddress?

    /// flannel's vxlanLinksIncompat, stricter on learning (ours must be off when configured off).
    func isCompatible(_ link: Link) -> Bool {
        guard link.kind == "vxlan", let a = link.vxlan else { return false }
        return a.vni == attributes.vni && a.local == attributes.local && (a.port ?? 8472) == (attributes.port ?? 8472)
            && a.learning == attributes.learning && a.gbp == attributes.gbp
            && a.underlyingInterface == attributes.underlyingInterface
    }

    /// Whether the device carries IPv6 (its local address is IPv6).
    var isIPv6: Bool { attributes.local?.family == .v6 }

    /// `ensure`, then, for an IPv6 device first seen or created, accept_ra=0 (as flanneld, errors
    /// logged and ignored: with IPv6 disabled in the kernel there would be nothing to carry
    /// anyway). A steady-state pass writes nothing.
    func ensure(_ dataPath: any DataPath, lastKnown: Link?, logger: Logger) throws(OverlayError) -> (
        link: Link, created: Bool
    ) {
        let result = try ensureDevice(dataPath, lastKnown: lastKnown, logger: logger)
        if isIPv6 && (result.created || lastKnown == nil) {
            do { try dataPath.writeSysctl("net/ipv6/conf/\(name)/accept_ra", "0") } catch {
                logger.info(
                    "overlay: cannot turn off router advertisements on the device",
                    metadata: ["overlay.device": "\(name)", "error": "\(error)"])
            }
        }
        return result
    }

    private func ensureDevice(_ dataPath: any DataPath, lastKnown: Link?, logger: Logger) throws(OverlayError) -> (
        link: Link, created: Bool
    ) {
        // The MAC a new device gets: the configured one, else the one it had (the lease publishes
        // it and peers have it programmed), else a random one from the kernel.
        var mac = self.mac ?? lastKnown?.mac
        if let existing = try netlink({ () throws(NetlinkError) in try dataPath.link(named: name) }) {
            if isCompatible(existing) {
                if existing.mtu == mtu { return (existing, false) }
                logger.info(
                    "overlay: correcting the device MTU",
                    metadata: [
                        "overlay.device": "\(name)", "overlay.mtu": "\(existing.mtu) -> \(mtu)",
                    ])
                try netlink { () throws(NetlinkError) in try dataPath.setLink(existing.index, LinkChange(mtu: mtu)) }
                return (try netlink({ () throws(NetlinkError) in try dataPath.link(named: name) }) ?? existing, false)
            }
            logger.info(
                "overlay: the existing device is incompatible; recreating it",
                metadata: [
                    "overlay.device": "\(name)",
                    "overlay.found": "\(existing.kind ?? "-") \(existing.vxlan.map { "\($0)" } ?? "")",
                ])
            try netlink { () throws(NetlinkError) in try dataPath.deleteLink(existing.index) }
            mac = mac ?? existing.mac
        }
        do {
            try dataPath.addVXLAN(name: name, attributes, mtu: mtu, mac: mac)
        } catch  where error.isExists {
            // Created between our look and our add: take it if it is what we want.
            if let raced = try netlink({ () throws(NetlinkError) in try dataPath.link(named: name) }),
                isCompatible(raced)
            {
                return (raced, false)
            }
            throw .netlink(error)
        } catch {
            throw .netlink(error)
        }
        guard let link = try netlink({ () throws(NetlinkError) in try dataPath.link(named: name) }) else {
            throw .netlink(
                .libnl(.notFound, operation: "RTM_GETLINK \(name) after creating it", message: "Object not found"))
        }
        logger.info(
            "overlay: created the device",
            metadata: [
                "overlay.device": "\(name)", "overlay.vtep_mac": "\(link.mac?.description ?? "-")",
                "overlay.mtu": "\(link.mtu)",
            ])
        return (link, true)
    }
}

struct VXLANMode: NetworkMode {
    let vxlan: VXLANDevice
    let interfaceIndex: Int32
    let publicIP: IPAddress
    let directRouting: Bool

    init(device: VXLANDevice, interfaceIndex: Int32, publicIP: IPAddress, directRouting: Bool) {
        vxlan = device; self.interfaceIndex = interfaceIndex; self.publicIP = publicIP;
        self.directRouting = directRouting
    }

    var backendType: String { "vxlan" }
    var device: (any TunnelDevice)? { vxlan }
    var ownsNeighbours: Bool { true }

    /// An IPv6 network's public IP and VTEP MAC are the lease's PublicIPv6 and BackendV6Data.
    func leaseAttributes(device: Link?) -> LeaseAttributes {
        publicIP.family == .v4
            ? LeaseAttributes(publicIP: publicIP, backendType: "vxlan", vni: vxlan.attributes.vni, vtepMAC: device?.mac)
            : .ipv6(publicIP: publicIP, backendType: "vxlan", vni: vxlan.attributes.vni, vtepMAC: device?.mac)
    }

    func plan(_ peer: Peer, device: Link?, connected: [IPNetwork]) -> Plan {
        if directRouting && connected.contains(where: { $0.contains(peer.publicIP) }) {
            return .program(
                PeerEntries(route: Route(destination: peer.subnet, gateway: peer.publicIP, interface: interfaceIndex)))
        }
        guard let device else { return .skip("the vxlan device is missing") }
        guard let mac = peer.vtepMAC else { return .skip("its lease has no VtepMAC") }
        let gateway = peer.subnet.firstAddress
        return .program(
            PeerEntries(
                neighbour: Neighbour(address: gateway, mac: mac, interface: device.index),
                fdb: FDBEntry(mac: mac, interface: device.index, destination: peer.publicIP),
                route: Route(destination: peer.subnet, gateway: gateway, interface: device.index, onlink: true)))
    }
}
