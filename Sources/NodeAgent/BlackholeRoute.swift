// The blackhole route for this node's own subnet (`--ip-blackhole-route`), as flanneld's
// (pkg/ip's AddBlackholeV4Route, called every `--iptables-resync` seconds): `blackhole <subnet>`
// in the main table, added when no blackhole route to exactly that prefix is there.
//
// What it is for: with a CNI plugin that puts no address of the subnet on a bridge (Canal, routed
// plugins with one /32 route per pod), the node has no route covering its own subnet, so a packet
// for an address of it that no pod holds (yet, or any more) follows the default route out of the
// node, or bounces between nodes until its TTL runs out. The blackhole drops it here.
//
// One deliberate difference: flanneld adds the route with metric 0. On a node with the bridge
// plugin, cni0 holds `<subnet>.1` and the kernel keeps a prefix route `<subnet> dev cni0 proto
// kernel`, also with metric 0. Adding the blackhole after it fails with EEXIST (the kernel keys a
// route by prefix, TOS and metric); adding it before the bridge gets its address is worse: the
// kernel appends its prefix route behind the blackhole, the blackhole wins every lookup, and
// traffic to the node's own pods is dropped. podnet adds the blackhole with the highest metric
// there is, `BlackholeRoute.metric` (4294967295): lookups take the longest prefix first, then the
// lowest metric, so the blackhole only catches traffic when no other route to the same or a
// longer prefix is usable (the bridge is gone, or never existed), whatever metric the other
// route has (0 for the kernel's prefix routes, 100 and up for NetworkManager's and DHCP's).
//
// A blackhole route flanneld left (metric 0) counts as present: it is neither replaced nor
// duplicated. The route is installed with protocol `boot`, as `ip route add` and flanneld do, and
// it is never taken for a stale peer route: the overlay's reconciliation lists unicast routes
// only.

import Addressing
import Netlink
import Overlay

/// Keeps a blackhole route to this node's subnet in the main table (see the file's note).
public struct BlackholeRoute: Sendable {
    /// The metric the route is added with: the highest, so that any other route to the same
    /// prefix is preferred.
    public static let metric: UInt32 = .max

    public let subnet: IPNetwork
    public let dataPath: any DataPath

    public init(subnet: IPNetwork, dataPath: any DataPath) {
        self.subnet = subnet.network; self.dataPath = dataPath
    }

    /// The route `ensure` adds.
    public var route: Route { .blackhole(subnet, priority: Self.metric, proto: RouteProtocol.boot) }

    /// Adds the route unless a blackhole route to exactly `subnet` is in the main table, with any
    /// metric. Returns whether it added it. Blocking (netlink).
    // ip route show type blackhole; ip route add blackhole <subnet> metric 4294967295
    public func ensure() throws -> Bool {
        if try present() { return false }
        do {
            try dataPath.addRoute(route)
        } catch  where error.isExists {
            // Added meanwhile by someone else: fine. Another type of route with this prefix and
            // metric: the kernel refuses the blackhole, and that is an error.
            if try present() { return false }
            throw error
        }
        return true
    }

    private func present() throws -> Bool {
        try dataPath.blackholeRoutes(family: subnet.family, table: 254).contains { $0.destination == subnet }
    }
}
