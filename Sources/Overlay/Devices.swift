// The node's side of the overlay that is not per peer: finding the external interface, and
// removing the tunnel devices of modes no longer in use.

import Addressing
import Logging
import Netlink

extension ExternalInterface {
    /// The interface `name` (flanneld's `--iface`), or the one the default route of the first of
    /// `families` leaves through, with an address of every family in `families`: its preferred
    /// IPv4 address (`preferredAddresses`) and its preferred global IPv6 address
    /// (`preferredIPv6Addresses`); `publicIP` (`--public-ip`) and `publicIPv6` (`--public-ipv6`)
    /// or those addresses. With `families` `[.v6]` (an IPv6-only cluster) the interface needs no
    /// IPv4 address, and `address`/`publicIP` hold the IPv6 ones.
    public static func find(
        name: String? = nil, publicIP: IPAddress? = nil, publicIPv6: IPAddress? = nil,
        families: [IPFamily] = [.v4], dataPath: any DataPath
    ) throws(OverlayError) -> ExternalInterface {
        guard let primary = families.first else {
            throw .invalidConfiguration("no address family asked for: IPv4, IPv6 or both")
        }
        let link: Link
        if let name {
            guard let l = try netlink({ () throws(NetlinkError) in try dataPath.link(named: name) }) else {
                throw .interfaceNotFound("interface \(name) does not exist")
            }
            link = l
        } else {
            let routes = try netlink { () throws(NetlinkError) in
                try dataPath.routes(family: primary, table: 254, interface: nil)
            }
            guard
                let index = routes.filter({ $0.destination.prefixLength == 0 && $0.interface != nil })
                    .min(by: { ($0.priority ?? 0) < ($1.priority ?? 0) })?.interface,
                let l = try netlink({ () throws(NetlinkError) in try dataPath.links() }).first(where: {
                    $0.index == index
                })
            else {
                throw .interfaceNotFound(
                    "no \(primary == .v4 ? "IPv4" : "IPv6") default route: name the interface to use")
            }
            link = l
        }
        let addresses = try netlink { () throws(NetlinkError) in try dataPath.interfaceAddresses(family: nil) }
            .filter { $0.interface == link.index }
        var v4: IPNetwork?, v6: IPNetwork?
        if families.contains(.v4) {
            guard let a = preferredAddresses(addresses).first else {
                throw .interfaceNotFound("interface \(link.name) has no IPv4 address")
            }
            v4 = a.network
        }
        if families.contains(.v6) {
            guard let a = preferredIPv6Addresses(addresses).first else {
                throw .interfaceNotFound("interface \(link.name) has no global IPv6 address")
            }
            v6 = a.network
        }
        if let v4 {
            return try using(link, address: v4, publicIP: publicIP, ipv6Address: v6, publicIPv6: publicIPv6)
        }
        // IPv6 only: the IPv6 address is the interface's address.
        if let publicIP, publicIP.family != .v6 {
            throw .invalidConfiguration("public IP \(publicIP) is not an IPv6 address (the cluster is IPv6-only)")
        }
        return try using(
            link, address: v6!, publicIP: publicIP ?? publicIPv6, ipv6Address: v6, publicIPv6: publicIPv6 ?? publicIP)
    }

    /// `link` as the external interface with `address` (one of its addresses), advertised as
    /// `publicIP` or, when nil, as that address; with `ipv6Address`, its IPv6 side, advertised as
    /// `publicIPv6` or that address. Fails as flanneld does for an MTU of 0, and for a public IP
    /// of the wrong family.
    public static func using(
        _ link: Link, address: IPNetwork, publicIP: IPAddress?, ipv6Address: IPNetwork? = nil,
        publicIPv6: IPAddress? = nil
    ) throws(OverlayError) -> ExternalInterface {
        guard link.mtu > 0 else { throw .interfaceNotFound("interface \(link.name) has no MTU") }
        if let publicIP, publicIP.family != address.family {
            throw .invalidConfiguration(
                "public IP \(publicIP) is not an \(address.family == .v4 ? "IPv4" : "IPv6") address")
        }
        if let publicIPv6, publicIPv6.family != .v6 {
            throw .invalidConfiguration("public IPv6 \(publicIPv6) is not an IPv6 address")
        }
        if let ipv6Address, ipv6Address.family != .v6 {
            throw .invalidConfiguration("\(ipv6Address) is not an IPv6 address")
        }
        if address.family == .v6 {
            // An IPv6-only node: its IPv6 address is its only one.
            return ExternalInterface(
                name: link.name, index: link.index, mtu: link.mtu, address: address, publicIP: publicIP,
                ipv6Address: ipv6Address ?? address, publicIPv6: publicIPv6 ?? publicIP)
        }
        return ExternalInterface(
            name: link.name, index: link.index, mtu: link.mtu, address: address, publicIP: publicIP,
            ipv6Address: ipv6Address, publicIPv6: publicIPv6)
    }

    /// The IPv6 addresses of `addresses` an interface may be used with, best first, as flanneld
    /// picks them (pkg/ip's GetInterfaceIP6Addrs): global unicast (unique local included; never
    /// link-local), neither deprecated nor failed in duplicate address detection; done with DAD
    /// before still tentative (an address added a moment ago, at boot, is tentative for a second
    /// or so, and failing then would only restart the daemon), permanent (set by hand) before those
    /// with a lifetime (SLAAC, DHCPv6), other than temporary (privacy) addresses before those;
    /// otherwise in the kernel's order.
    public static func preferredIPv6Addresses(_ addresses: [InterfaceAddress]) -> [InterfaceAddress] {
        func usable(_ a: InterfaceAddress) -> Bool {
            let ip = a.network.address
            return ip.family == .v6 && ip.isGlobalUnicast && !a.isDeprecated
                && a.flags & InterfaceAddress.dadFailed == 0
        }
        func rank(_ a: InterfaceAddress) -> (Int, Int, Int) {
            (a.isTentative ? 1 : 0, a.isPermanent ? 0 : 1, a.isSecondary ? 1 : 0)
        }
        return addresses.enumerated().filter { usable($0.element) }
            .sorted { l, r in
                rank(l.element) != rank(r.element) ? rank(l.element) < rank(r.element) : l.offset < r.offset
            }
            .map(\.element)
    }

    /// The addresses of `family` in `addresses` an interface may be used with, best first
    /// (`preferredAddresses` or `preferredIPv6Addresses`).
    public static func preferredAddresses(_ addresses: [InterfaceAddress], family: IPFamily) -> [InterfaceAddress] {
        family == .v6 ? preferredIPv6Addresses(addresses) : preferredAddresses(addresses)
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

/// Names of the tunnel devices podnet (and flanneld) create: `flannel.<VNI>` and
/// `flannel-v6.<VNI>` (vxlan), and `flannel.ipip`.
func isOverlayDevice(_ link: Link) -> Bool {
    if link.name == IPIPBackend.deviceName { return link.kind == "ipip" }
    guard link.kind == "vxlan" else { return false }
    for prefix in ["flannel.", "flannel-v6."] where link.name.hasPrefix(prefix) {
        let vni = link.name.dropFirst(prefix.count)
        return !vni.isEmpty && vni.allSatisfy(\.isNumber)
    }
    return false
}

/// Deletes the overlay devices not named in `keep`: what a previous mode, VNI or address family
/// left. Their routes, neighbours and FDB entries go with them. A dual-stack pair keeps both
/// families' devices; a single-family network keeps only its own.
func removeOtherOverlayDevices(keeping keep: Set<String>, dataPath: any DataPath, logger: Logger) throws(OverlayError) {
    let links: [Link]
    do { links = try dataPath.links() } catch { throw .netlink(error) }
    for l in links where !keep.contains(l.name) && isOverlayDevice(l) {
        logger.info("overlay: removing the device of another mode", metadata: ["overlay.device": "\(l.name)"])
        do { try dataPath.deleteLink(l.index) } catch  where error.isNotFound {} catch { throw .netlink(error) }
    }
}
