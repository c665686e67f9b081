// The node's side of the overlay that is not per peer: finding the external interface, and
// removing the tunnel devices of modes no longer in use.

import Addressing
import Logging
import Netlink

extension ExternalInterface {
    /// The interface `name` (flanneld's `--iface`), or the one the IPv4 default route leaves
    /// through; its first global IPv4 address; `publicIP` (`--public-ip`) or that address.
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
        let addresses = try netlink { () throws(NetlinkError) in try dataPath.addresses(link: link.index, family: .v4) }
        guard let address = addresses.first(where: { $0.address.isGlobalUnicast }) else {
            throw .interfaceNotFound("interface \(link.name) has no IPv4 address")
        }
        if let publicIP, publicIP.family != .v4 {
            throw .invalidConfiguration("public IP \(publicIP) is not an IPv4 address")
        }
        return ExternalInterface(
            name: link.name, index: link.index, mtu: link.mtu, address: address, publicIP: publicIP)
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
