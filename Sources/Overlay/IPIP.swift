// ipip backend: IPv4-in-IPv4 through one point-to-multipoint device, flannel.ipip (local = the
// interface address, no remote, TTL inherited, no path-MTU discovery: flanneld's settings). Each
// peer gets one route, `<subnet> via <public IP> dev flannel.ipip onlink`: the gateway is the
// outer destination, onlink because no prefix on the device covers it. 20 bytes of outer header:
// MTU = interface MTU - 20. With DirectRouting a peer on the interface's L2 segment gets a plain
// route on the interface instead, as in vxlan.
//
// Kernels without the ipip module answer the device's creation with EOPNOTSUPP ("Unknown device
// type"); registerNetwork then fails with a message that says to load it, before any lease exists.

import Addressing
import Logging
import Netlink

/// The ipip backend's configuration: flanneld's `Backend` object for `"Type": "ipip"`.
public struct IPIPConfig: Equatable, Sendable {
    /// `DirectRouting`: peers on the interface's L2 segment get a plain route, no encapsulation.
    public var directRouting = false

    public init(directRouting: Bool = false) { self.directRouting = directRouting }
}

public struct IPIPBackend: Backend {
    public static let deviceName = "flannel.ipip"
    public let interface: ExternalInterface
    public let network: IPNetwork
    public let config: IPIPConfig
    public var backendType: String { "ipip" }

    public init(interface: ExternalInterface, network: IPNetwork, config: IPIPConfig = IPIPConfig()) {
        self.interface = interface; self.network = network.network; self.config = config
    }

    public var mtu: Int { interface.mtu - 20 }

    public func registerNetwork(dataPath: any DataPath, logger: Logger) throws(OverlayError) -> any OverlayNetwork {
        try registerNetwork(dataPath: dataPath, logger: logger, keepingDevices: [Self.deviceName])
    }

    func registerNetwork(dataPath: any DataPath, logger: Logger, keepingDevices: Set<String>) throws(OverlayError)
        -> any OverlayNetwork
    {
        // Before anything is created or removed: an IPv6 network is a configuration error.
        guard network.family == .v4 else {
            throw .invalidConfiguration(
                "ipip: the ipip backend is IPv4-only (as in flanneld), it cannot carry the IPv6 network \(network): "
                    + "use vxlan or host-gw for IPv6")
        }
        guard interface.address.family == .v4 else {
            throw .invalidConfiguration("ipip: \(interface.name) has no IPv4 address")
        }
        guard mtu >= 68 else {
            throw .invalidConfiguration("ipip: MTU \(mtu) (interface \(interface.mtu) less 20) is below 68")
        }
        try removeOtherOverlayDevices(keeping: keepingDevices, dataPath: dataPath, logger: logger)
        let mode = ipipMode
        let (link, _) = try mode.ipip.ensure(dataPath, lastKnown: nil, logger: logger)
        return PeerNetwork(
            mode: mode, dataPath: dataPath, interface: interface, network: network, mtu: mtu,
            device: link, logger: logger)
    }

    /// The device this backend ensures and what each peer gets.
    var ipipMode: IPIPMode {
        IPIPMode(
            ipip: IPIPDevice(
                attributes: IPIPAttributes(
                    local: interface.address.address, remote: nil, underlyingInterface: interface.index, ttl: 0,
                    pathMTUDiscovery: false),
                mtu: mtu), interface: interface, directRouting: config.directRouting)
    }
}

extension IPIPBackend: ModeBackend {
    var mode: any NetworkMode { ipipMode }
}

struct IPIPDevice: TunnelDevice {
    var name: String { IPIPBackend.deviceName }
    let attributes: IPIPAttributes
    let mtu: Int

    func isCompatible(_ link: Link) -> Bool {
        guard let a = link.ipip else { return false }
        return a.local == attributes.local && a.remote == nil && a.underlyingInterface == attributes.underlyingInterface
    }

    func ensure(_ dataPath: any DataPath, lastKnown: Link?, logger: Logger) throws(OverlayError) -> (
        link: Link, created: Bool
    ) {
        if let existing = try netlink({ () throws(NetlinkError) in try dataPath.link(named: name) }) {
            // Not ours to delete (flanneld refuses the same way).
            guard existing.kind == "ipip" else { throw .deviceConflict(name: name, kind: existing.kind) }
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
                "overlay: the existing device is incompatible; recreating it", metadata: ["overlay.device": "\(name)"])
            try netlink { () throws(NetlinkError) in try dataPath.deleteLink(existing.index) }
        }
        do {
            try dataPath.addIPIP(name: name, attributes, mtu: mtu)
        } catch .libnl(.notSupported, let op, let message) {
            throw .ipipUnsupported(.libnl(.notSupported, operation: op, message: message))
        } catch {
            throw .netlink(error)
        }
        guard let link = try netlink({ () throws(NetlinkError) in try dataPath.link(named: name) }) else {
            throw .netlink(
                .libnl(.notFound, operation: "RTM_GETLINK \(name) after creating it", message: "Object not found"))
        }
        logger.info(
            "overlay: created the device", metadata: ["overlay.device": "\(name)", "overlay.mtu": "\(link.mtu)"])
        return (link, true)
    }
}

struct IPIPMode: NetworkMode {
    let ipip: IPIPDevice
    let interface: ExternalInterface
    let directRouting: Bool

    var backendType: String { "ipip" }
    var device: (any TunnelDevice)? { ipip }
    var ownsNeighbours: Bool { false }

    func leaseAttributes(device: Link?) -> LeaseAttributes {
        LeaseAttributes(publicIP: interface.publicIP, backendType: "ipip")
    }

    func plan(_ peer: Peer, device: Link?, connected: [IPNetwork]) -> Plan {
        if directRouting && connected.contains(where: { $0.contains(peer.publicIP) }) {
            return .program(
                PeerEntries(route: Route(destination: peer.subnet, gateway: peer.publicIP, interface: interface.index)))
        }
        guard let device else { return .skip("the ipip device is missing") }
        return .program(
            PeerEntries(
                route: Route(
                    destination: peer.subnet, gateway: peer.publicIP, interface: device.index,
                    onlink: true)))
    }
}
