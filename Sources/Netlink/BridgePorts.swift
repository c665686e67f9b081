// Bridge port flags (hairpin mode, port isolation), set over netlink as the reference plugins set
// them (vishvananda/netlink's LinkSetHairpin and LinkSetIsolated): one RTM_SETLINK of family
// AF_BRIDGE for the port, carrying IFLA_PROTINFO (nested) with IFLA_BRPORT_MODE and
// IFLA_BRPORT_ISOLATED, each a u8. The kernel hands it to the bridge the port belongs to
// (br_setlink); a link that is no bridge port gets EINVAL/EOPNOTSUPP.
//
// Never through the sysfs brport files: sysfs shows the namespace it was mounted in, and a
// runtime that entered the node's namespace with setns (podman, containerd in a container, CRI-O,
// `nsenter --net`) keeps a sysfs of another namespace, where the port does not exist.
//
// libnl-route 3.7's rtnl_link_bridge_set_flags knows hairpin but not port isolation, so the
// request is built attribute by attribute, as iproute2's `bridge link set` builds it.

import CLibNL

private let afBridge: UInt8 = 7  // AF_BRIDGE
private let nlaFNested: Int32 = 1 << 15  // NLA_F_NESTED

extension NetlinkSession {
    /// Sets the bridge port flags of the link with index `index`; nil flags are left as they are.
    /// The link must be a port of a bridge.
    // bridge link set dev <index> [hairpin on|off] [isolated on|off]
    public func setBridgePort(_ index: Int32, hairpin: Bool? = nil, isolated: Bool? = nil) throws(NetlinkError) {
        guard hairpin != nil || isolated != nil else { return }
        let r = Request(
            type: Int32(RTM_SETLINK), flags: 0,
            header: ifinfomsg(
                ifi_family: afBridge, __ifi_pad: 0, ifi_type: 0, ifi_index: index, ifi_flags: 0,
                ifi_change: 0))
        guard let nest = nla_nest_start(r.msg, Int32(IFLA_PROTINFO) | nlaFNested) else {
            r.free()
            throw .invalidArgument("nla_nest_start IFLA_PROTINFO failed")
        }
        var what: [String] = []
        do throws(NetlinkError) {
            if let hairpin {
                try check(nla_put_u8(r.msg, Int32(IFLA_BRPORT_MODE), hairpin ? 1 : 0), "nla_put_u8 IFLA_BRPORT_MODE")
                what.append("hairpin \(hairpin ? "on" : "off")")
            }
            if let isolated {
                try check(
                    nla_put_u8(r.msg, Int32(IFLA_BRPORT_ISOLATED), isolated ? 1 : 0), "nla_put_u8 IFLA_BRPORT_ISOLATED")
                what.append("isolated \(isolated ? "on" : "off")")
            }
            try check(nla_nest_end(r.msg, nest), "nla_nest_end IFLA_PROTINFO")
        } catch {
            r.free()
            throw error
        }
        try send(r, "RTM_SETLINK bridge port ifindex \(index) \(what.joined(separator: " "))")
    }
}
