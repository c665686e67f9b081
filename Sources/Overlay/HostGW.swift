// host-gw backend: no tunnel. Each peer's subnet is routed to the peer's public IP on the external
// interface -- `ip route replace <subnet> via <public IP> dev <iface>` -- one route per peer, the
// data path of flannel's host-gw and of Calico's BGP mode. It needs L2 adjacency: a peer's public
// IP must be on a subnet the interface reaches directly, or the kernel would refuse the gateway
// (or, with onlink forced, send into a void); such a peer is skipped and logged. The node's own
// public IP must be an address of the interface, since peers use it as their next hop. An IPv6
// network is the same with the IPv6 sides: `<v6 subnet> via <peer's PublicIPv6> dev <iface>`,
// and this node's public IPv6 address must be on the interface.

import Addressing
import Logging
import Netlink

public struct HostGWBackend: Backend {
    public let interface: ExternalInterface
    public let network: IPNetwork
    public var backendType: String { "host-gw" }

    public init(interface: ExternalInterface, network: IPNetwork) {
        self.interface = interface; self.network = network.network
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
            keepingDevices: keepingDevices, logger: logger)
        return PeerNetwork(
            mode: mode, dataPath: dataPath, interface: interface, network: network, mtu: mtu, device: nil,
            logger: logger)
    }
}

/// What a backend that routes pod subnets straight to next hops on the underlay (host-gw, bgp)
/// checks and clears before its network starts: the public IP of the network's family an address
/// of the interface (peers use it as their next hop), and no tunnel device of another mode left
/// (but those in `keepingDevices`: the other family's, in a dual stack). `ipv4Only` backends
/// (bgp) refuse an IPv6 network.
func prepareDirectRouting(
    interface: ExternalInterface, network: IPNetwork, backendType: String, dataPath: any DataPath,
    keepingDevices: Set<String> = [], ipv4Only: Bool = false, logger: Logger
) throws(OverlayError) {
    let family = network.family
    guard family == .v4 || !ipv4Only else {
        throw .invalidConfiguration("\(backendType): only IPv4 networks are supported, not \(network)")
    }
    guard let publicIP = interface.publicIP(family) else {
        throw .invalidConfiguration(
            "\(backendType): \(interface.name) has no public \(family.name) address for the network \(network)")
    }
    let addresses: [IPNetwork]
    do { addresses = try dataPath.addresses(link: interface.index, family: nil) } catch { throw .netlink(error) }
    guard addresses.contains(where: { $0.address == publicIP }) else {
        throw .publicIPNotOnInterface(publicIP: publicIP, interface: interface.name)
    }
    try removeOtherOverlayDevices(keeping: keepingDevices, dataPath: dataPath, logger: logger)
}

extension HostGWBackend: ModeBackend {
    var mode: any NetworkMode { HostGWMode(interface: interface, family: network.family) }
}

/// Routes straight to a next hop on the interface: the lease's public IP (host-gw), or the next
/// hop BGP learned for the subnet (bgp, whose "peers" carry it as their public IP).
struct HostGWMode: NetworkMode {
    let interface: ExternalInterface
    var backendType = "host-gw"
    var device: (any TunnelDevice)? { nil }
    var ownsNeighbours: Bool { false }

    /// The network's family: an IPv6 network publishes its public IP as PublicIPv6.
    var family: IPFamily = .v4

    func leaseAttributes(device: Link?) -> LeaseAttributes {
        guard family == .v6, let v6 = interface.publicIP(.v6) else {
            return LeaseAttributes(publicIP: interface.publicIP, backendType: backendType)
        }
        return .ipv6(publicIP: v6, backendType: backendType, vni: nil, vtepMAC: nil)
    }

    func plan(_ peer: Peer, device: Link?, connected: [IPNetwork]) -> Plan {
        guard connected.contains(where: { $0.contains(peer.publicIP) }) else {
            if backendType == "bgp" {
                return .skip("its BGP next hop \(peer.publicIP) is not on a subnet \(interface.name) reaches directly")
            }
            return .skip(
                "its public IP \(peer.publicIP) is not on a subnet \(interface.name) reaches directly: "
                    + "unreachable in host-gw mode (use vxlan, or ipip, across routers)")
        }
        return .program(
            PeerEntries(route: Route(destination: peer.subnet, gateway: peer.publicIP, interface: interface.index)))
    }
}
