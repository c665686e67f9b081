// The node's side of the overlay that is not per peer: finding the external interface, and
// removing the tunnel devices of modes no longer in use.

import Addressing
import Logging
import Netlink

extension ExternalInterface {
    /// The interface `name` (flanneld's `--iface`), or the one the IPv4 default route leaves
    /// through; its preferred IPv4 address (`preferredAddresses`); `publicIP` (`--public-ip`)
    /// or that address.
    public static func find(
        name: String? = nil, publicIP: IPAddress? = nil,
        dataPath: any DataPath
    ) throws(OverlayError) -> ExternalInterface {
        let link: Link
        if let name {
            guard let l = try netlink({ () throws(NetlinkError) in try dataPath.link(named: name) }) else {
                throw .interfaceNotFound("interface \(name) does not exist")
            }
            link = l
        } else {
            let routes = try netlink { () throws(NetlinkError) in
                try dataPath.routes(family: .v4, table: 254, interface: nil)
            }
            guard
                let index = routes.filter({ $0.destination.prefixLength == 0 && $0.interface != nil })
                    .min(by: { ($0.priority ?? 0) < ($1.priority ?? 0) })?.interface,
                let l = try netlink({ () throws(NetlinkError) in try dataPath.links() }).first(where: {
                    $0.index == index
                })
            else { throw .interfaceNotFound("no IPv4 default route: name the interface to use") }
            link = l
        }
        let addresses = try netlink { () throws(NetlinkError) in try dataPath.interfaceAddresses(family: .v4) }
        guard let address = preferredAddresses(addresses.filter { $0.interface == link.index }).first else {
            throw .interfaceNotFound("interface \(link.name) has no IPv4 address")
        }
        return try using(link, address: address.network, publicIP: publicIP)
    }

    /// `link` as the external interface with `address` (one of its addresses), advertised as
    /// `publicIP` or, when nil, as that address. Fails as flanneld does for an MTU of 0, and for a
    /// public IP that is not IPv4.
    public static func using(_ link: Link, address: IPNetwork, publicIP: IPAddress?) throws(OverlayError)
        -> ExternalInterface
    {
        guard link.mtu > 0 else { throw .interfaceNotFound("interface \(link.name) has no MTU") }
        if let publicIP, publicIP.family != address.family {
            throw .invalidConfiguration(
                "public IP \(publicIP) is not an \(address.family == .v4 ? "IPv4" : "IPv6") address")
        }
        if address.family == .v6 {
            // An IPv6-only node: its IPv6 address is its only one.
            return ExternalInterface(
                name: link.name, index: link.index, mtu: link.mtu, address: address, publicIP: publicIP,
                ipv6Address: address, publicIPv6: publicIP)
        }
        return ExternalInterface(
            name: link.name, index: link.index, mtu: link.mtu, address: address, publicIP: publicIP)
    }

    /// The addresses of `family` in `addresses` an interface may be used with, best first: IPv4 as
    /// `preferredAddresses`; IPv6 as flanneld's GetInterfaceIP6Addrs, global unicast only (a
    /// link-local address names no node beyond its link), not deprecated or failed DAD, permanent
    /// before dynamic; otherwise in the kernel's order.
    public static func preferredAddresses(_ addresses: [InterfaceAddress], family: IPFamily) -> [InterfaceAddress] {
        guard family == .v6 else { return preferredAddresses(addresses) }
        return addresses.enumerated().filter { e in
            let a = e.element
            return a.network.family == .v6 && a.network.address.isGlobalUnicast && !a.isDeprecated
                && a.flags & InterfaceAddress.dadFailed == 0
        }
        .sorted { l, r in
            l.element.isPermanent != r.element.isPermanent ? l.element.isPermanent : l.offset < r.offset
        }
        .map(\.element)
    }

    /// The IPv4 addresses of `addresses` an interface may be used with, best first, as flanneld
    /// picks them (pkg/ip's GetInterfaceIP4Addrs): global or link-local unicast, not deprecated;
    /// global before link-local, permanent (set by hand) before those with a lifetime (DHCP),
    /// primary before secondary; otherwise in the kernel's order.
    public static func preferredAddresses(_ addresses: [InterfaceAddress]) -> [InterfaceAddress] {
        let linkLocal = IPNetwork("169.254.0.0/16")!
        func usable(_ a: InterfaceAddress) -> Bool {
            let ip = a.network.address
            return ip.family == .v4 && !a.isDeprecated && (ip.isGlobalUnicast || linkLocal.contains(ip))
        }
        func rank(_ a: InterfaceAddress) -> (Int, Int, Int) {
            (linkLocal.contains(a.network.address) ? 1 : 0, a.isPermanent ? 0 : 1, a.isSecondary ? 1 : 0)
        }
        return addresses.enumerated().filter { usable($0.element) }
            .sorted { l, r in
                rank(l.element) != rank(r.element) ? rank(l.element) < rank(r.element) : l.offset < r.offset
            }
            .map(\.element)
    }
}

/// Names of the tunnel devices podnet (and flanneld) create: `flannel.<VNI>` (vxlan) and
/// `flannel.ipip`.
func isOverlayDevice(_ link: Link) -> Bool {
    if link.name == IPIPBackend.deviceName { return link.kind == "ipip" }
    guard link.name.hasPrefix("flannel."), link.kind == "vxlan" else { return false }
    return link.name.dropFirst("flannel.".count).allSatisfy(\.isNumber)
}

/// Deletes the overlay devices other than `keep`: what a previous mode or VNI left. Their routes,
/// neighbours and FDB entries go with them.
func removeOtherOverlayDevices(keeping keep: String?, dataPath: any DataPath, logger: Logger) throws(OverlayError) {
    let links: [Link]
    do { links = try dataPath.links() } catch { throw .netlink(error) }
    for l in links where l.name != keep && isOverlayDevice(l) {
        logger.info("overlay: removing the device of another mode", metadata: ["overlay.device": "\(l.name)"])
        do { try dataPath.deleteLink(l.index) } catch  where error.isNotFound {} catch { throw .netlink(error) }
    }
}
