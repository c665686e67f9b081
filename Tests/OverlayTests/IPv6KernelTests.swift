// The IPv6 data path against the kernel, each test in namespaces it creates and deletes: two nodes
// joined by a veth with IPv4 and IPv6 underlay addresses (fd77::1/64 and fd77::2/64), vxlan's
// flannel-v6.<VNI> with its per-peer entries as `ip -6`/`bridge` show them, reconcile repairs,
// DirectRouting, host-gw, a dual-stack pair, and pods pinging across over IPv6.

import Addressing
import Foundation
import Netlink
import Overlay
import TestSupport
import Testing

/// `withUnderlay`, with IPv6 too: fd77::1/64 and fd77::2/64 on `ul0`, added `nodad`, so they are
/// usable at once (never tentative: no duplicate address detection to wait for). So is a
/// link-local address each (fe80::77:1, fe80::77:2): the kernel sends no neighbour solicitation
/// for a packet of another interface's source until the link has a usable link-local address.
/// Two nodes on the dual-stack underlay, each with the IPv6 network `make` builds for its
/// interface started (a: fd00:5:0:1::/64, b: fd00:5:0:2::/64) and a pod-side address .1 of it.
func twoIPv6Nodes(
    _ a: TestNamespace, _ b: TestNamespace, _ make: (ExternalInterface) -> any Backend
) throws -> (any OverlayNetwork, any OverlayNetwork) {
    let na = try make(try a.underlay(families: [.v6])).registerNetwork(dataPath: try a.dataPath())
    let nb = try make(try b.underlay(families: [.v6])).registerNetwork(dataPath: try b.dataPath())
    try na.start(subnet: IPNetwork("fd00:5:0:1::/64")!)
    try nb.start(subnet: IPNetwork("fd00:5:0:2::/64")!)
    try a.addPodInterface6("fd00:5:0:1::1/64")
    try b.addPodInterface6("fd00:5:0:2::1/64")
    return (na, nb)
}

func withDualStackUnderlay<T>(_ body: (TestNamespace, TestNamespace) throws -> T) throws -> T {
    try withUnderlay { a, b in
        for (i, n) in [a, b].enumerated() {
            try n.sh(
                "ip -6 addr add fd77::\(i + 1)/64 dev ul0 nodad && ip -6 addr add fe80::77:\(i + 1)/64 dev ul0 nodad")
        }
        return try body(a, b)
    }
}

extension TestNamespace {
    /// The external interface `ul0` with the address families of `families`.
    func underlay(families: [IPFamily]) throws -> ExternalInterface {
        try ExternalInterface.find(name: "ul0", families: families, dataPath: try dataPath())
    }

    /// `pod0` holding `address` (a pod-ish IPv6 address, nodad), up: one end of a veth pair whose
    /// other end is up too, so that the link has a carrier (no dummy module needed).
    func addPodInterface6(_ address: String) throws {
        try sh(
            "ip link add pod0 type veth peer name pod0p && ip link set pod0p up "
                + "&& ip -6 addr add \(address) dev pod0 nodad && ip link set pod0 up")
    }

    /// `ip -6 route show dev <dev>` lines of routes with a gateway.
    func gatewayRoutes6(dev: String) throws -> [String] {
        try lines("ip -6 route show dev \(dev)").filter { $0.contains(" via ") }
    }
    /// `ip -6 neigh show dev <dev> nud permanent` lines.
    func permanentNeighbours6(dev: String) throws -> [String] {
        try lines("ip -6 neigh show dev \(dev) nud permanent")
    }
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct IPv6KernelTests {
    @Test func vxlanIPv6DeviceHasLocal6MTULess70AndNoRouterAdvertisements() throws {
        try withDualStackUnderlay { a, _ in
            let nw = try VXLANBackend(interface: try a.underlay(families: [.v6]), network: network6)
                .registerNetwork(dataPath: try a.dataPath())
            try nw.start(subnet: net("fd00:5:0:1::/64"))
            let details = try a.sh("ip -d link show flannel-v6.1")
            #expect(details.contains("mtu 1430"))
            #expect(details.contains("vxlan id 1 local fd77::1 dev ul0"))
            #expect(details.contains("nolearning"))
            #expect(try a.sh("cat /proc/sys/net/ipv6/conf/flannel-v6.1/accept_ra").hasPrefix("0"))
            #expect(nw.mtu == 1430)
            #expect(nw.leaseAttributes.publicIPv6 == ip("fd77::1") && nw.leaseAttributes.ipv6VtepMAC != nil)
            #expect(try a.lines("ip -6 addr show dev flannel-v6.1").contains { $0.hasPrefix("inet6 fd00:5:0:1::/128") })
            #expect(try a.sh("ip link show flannel-v6.1").contains("UP"))
        }
    }

    @Test func eachIPv6PeerGetsOneNeighbourOneFDBEntryAndOneOnlinkRoute() throws {
        try withDualStackUnderlay { a, _ in
            let nw = try VXLANBackend(interface: try a.underlay(families: [.v6]), network: network6)
                .registerNetwork(dataPath: try a.dataPath())
            try nw.start(subnet: net("fd00:5:0:1::/64"))
            let report = try nw.reconcile(peers: [peer6A, peer6B])
            #expect(report.programmed == EntryCounts(routes: 2, neighbours: 2, fdbEntries: 2))
            #expect(report.failures.isEmpty)
            let routes = try a.gatewayRoutes6(dev: "flannel-v6.1").sorted()
            #expect(routes.count == 2)
            #expect(routes.first?.hasPrefix("fd00:5:0:2::/64 via fd00:5:0:2:: proto 98") == true)
            #expect(routes.allSatisfy { $0.contains("onlink") })
            #expect(
                try a.permanentNeighbours6(dev: "flannel-v6.1").sorted() == [
                    "fd00:5:0:2:: lladdr 02:00:00:00:00:62 PERMANENT",
                    "fd00:5:0:3:: lladdr 02:00:00:00:00:63 PERMANENT",
                ])
            #expect(
                try a.fdbRemotes(dev: "flannel-v6.1").sorted() == [
                    "02:00:00:00:00:62 dst fd77::2 self permanent", "02:00:00:00:00:63 dst fd99::3 self permanent",
                ])
            // Converged: the kernel's metric 1024 satisfies the wanted route.
            #expect(try nw.reconcile(peers: [peer6A, peer6B]).changes == 0)
        }
    }

    @Test func reconcileRemovesStaleIPv6EntriesAndRestoresDeletedOnes() throws {
        try withDualStackUnderlay { a, _ in
            let nw = try VXLANBackend(interface: try a.underlay(families: [.v6]), network: network6)
                .registerNetwork(dataPath: try a.dataPath())
            try nw.start(subnet: net("fd00:5:0:1::/64"))
            // Left over from a previous run: a peer whose lease is gone.
            try a.sh(
                """
                ip -6 neigh replace fd00:5:0:9:: lladdr 02:00:00:00:00:69 dev flannel-v6.1 nud permanent
                bridge fdb append 02:00:00:00:00:69 dev flannel-v6.1 dst fd77::9 self permanent
                ip -6 route replace fd00:5:0:9::/64 via fd00:5:0:9:: dev flannel-v6.1 onlink
                """)
            var report = try nw.reconcile(peers: [peer6A, peer6B])
            #expect(report.removed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
            #expect(try !a.sh("ip -6 route; ip -6 neigh; bridge fdb").contains("fd00:5:0:9::"))
            #expect(try !a.sh("bridge fdb show dev flannel-v6.1").contains("02:00:00:00:00:69"))

            // Deleted by hand.
            try a.sh(
                """
                ip -6 route del fd00:5:0:2::/64
                ip -6 neigh del fd00:5:0:3:: dev flannel-v6.1
                bridge fdb del 02:00:00:00:00:63 dev flannel-v6.1 dst fd99::3 self
                """)
            report = try nw.reconcile(peers: [peer6A, peer6B])
            #expect(report.programmed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
            #expect(report.removed == EntryCounts())
            #expect(try a.gatewayRoutes6(dev: "flannel-v6.1").count == 2)
            #expect(try a.permanentNeighbours6(dev: "flannel-v6.1").count == 2)
            #expect(try a.fdbRemotes(dev: "flannel-v6.1").count == 2)

            // The device deleted by hand: recreated with its MAC and accept_ra=0, all programmed again.
            try a.sh("ip link del flannel-v6.1")
            report = try nw.reconcile(peers: [peer6A, peer6B])
            #expect(report.deviceRecreated && !report.leaseAttributesChanged)
            #expect(try a.sh("cat /proc/sys/net/ipv6/conf/flannel-v6.1/accept_ra").hasPrefix("0"))
            #expect(try a.gatewayRoutes6(dev: "flannel-v6.1").count == 2)
            #expect(try a.fdbRemotes(dev: "flannel-v6.1").count == 2)
        }
    }

    @Test func podsOnTwoNodesPingOverTheIPv6Overlay() throws {
        try withDualStackUnderlay { a, b in
            let (na, nb) = try twoIPv6Nodes(a, b) { VXLANBackend(interface: $0, network: network6) }
            _ = try na.reconcile(peers: [
                try peer(b, subnet: "fd00:5:0:2::/64", publicIP: "fd77::2", device: "flannel-v6.1")
            ])
            _ = try nb.reconcile(peers: [
                try peer(a, subnet: "fd00:5:0:1::/64", publicIP: "fd77::1", device: "flannel-v6.1")
            ])
            // Through the tunnel, not around it.
            #expect(try a.sh("ip -6 route get fd00:5:0:2::1").contains("dev flannel-v6.1"))
            #expect(a.ping("fd00:5:0:2::1", from: "fd00:5:0:1::1"))
            #expect(b.ping("fd00:5:0:1::1", from: "fd00:5:0:2::1"))
            // Peer B's lease goes: unreachable again.
            _ = try na.reconcile(peers: [])
            #expect(!a.ping("fd00:5:0:2::1", from: "fd00:5:0:1::1"))
        }
    }

    @Test func directRoutingIPv6UsesThePlainRouteOnTheSegmentAndTheTunnelBeyond() throws {
        try withDualStackUnderlay { a, b in
            let cfg = VXLANConfig(directRouting: true)
            let (na, nb) = try twoIPv6Nodes(a, b) { VXLANBackend(interface: $0, network: network6, config: cfg) }
            _ = try na.reconcile(peers: [
                try peer(b, subnet: "fd00:5:0:2::/64", publicIP: "fd77::2", device: "flannel-v6.1"), peer6B,
            ])
            _ = try nb.reconcile(peers: [
                try peer(a, subnet: "fd00:5:0:1::/64", publicIP: "fd77::1", device: "flannel-v6.1")
            ])
            #expect(
                try a.lines("ip -6 route show fd00:5:0:2::/64").first?.hasPrefix(
                    "fd00:5:0:2::/64 via fd77::2 dev ul0 proto 98") == true)
            #expect(try a.gatewayRoutes6(dev: "flannel-v6.1").count == 1)
            #expect(
                try a.permanentNeighbours6(dev: "flannel-v6.1") == ["fd00:5:0:3:: lladdr 02:00:00:00:00:63 PERMANENT"])
            #expect(try a.fdbRemotes(dev: "flannel-v6.1") == ["02:00:00:00:00:63 dst fd99::3 self permanent"])
            #expect(try a.sh("ip -6 route get fd00:5:0:2::1").contains("dev ul0"))
            #expect(a.ping("fd00:5:0:2::1", from: "fd00:5:0:1::1"))
        }
    }

    @Test func hostGWIPv6RoutesViaThePeersPublicIPv6() throws {
        try withDualStackUnderlay { a, b in
            let (na, nb) = try twoIPv6Nodes(a, b) { HostGWBackend(interface: $0, network: network6) }
            _ = try na.reconcile(peers: [Peer(subnet: net("fd00:5:0:2::/64"), publicIP: ip("fd77::2"))])
            _ = try nb.reconcile(peers: [Peer(subnet: net("fd00:5:0:1::/64"), publicIP: ip("fd77::1"))])
            #expect(
                try a.lines("ip -6 route show fd00:5:0:2::/64").first?.hasPrefix(
                    "fd00:5:0:2::/64 via fd77::2 dev ul0 proto 98") == true)
            #expect(a.ping("fd00:5:0:2::1", from: "fd00:5:0:1::1"))
            #expect(
                try na.reconcile(peers: [Peer(subnet: net("fd00:5:0:2::/64"), publicIP: ip("fd77::2"))]).changes == 0)
            // Deleted by hand: repaired.
            try a.sh("ip -6 route del fd00:5:0:2::/64")
            #expect(
                try na.reconcile(peers: [Peer(subnet: net("fd00:5:0:2::/64"), publicIP: ip("fd77::2"))]).programmed
                    .routes == 1)
            #expect(a.ping("fd00:5:0:2::1", from: "fd00:5:0:1::1"))
        }
    }

    @Test func aDualStackPairKeepsBothDevicesAndASingleFamilyConfigRemovesTheOther() throws {
        try withDualStackUnderlay { a, _ in
            let config = try NetworkConfig(
                json: Data(
                    #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#
                        .utf8))
            let dp = try a.dataPath()
            let dual = try config.makeBackend(interface: try a.underlay(families: [.v4, .v6])).registerNetwork(
                dataPath: dp)
            #expect(
                try a.lines("ip -br link show type vxlan").map { String($0.prefix { $0 != " " && $0 != "@" }) }.sorted()
                    == ["flannel-v6.1", "flannel.1"])
            try dual.start(subnet: net("10.5.1.0/24"), ipv6Subnet: net("fd00:5:0:1::/64"))
            // Registering again (a restart) keeps both with their MACs.
            let again = try config.makeBackend(interface: try a.underlay(families: [.v4, .v6])).registerNetwork(
                dataPath: dp)
            #expect(again.leaseAttributes == dual.leaseAttributes)
            #expect(again.leaseAttributes.vtepMAC != nil && again.leaseAttributes.ipv6VtepMAC != nil)

            // IPv4 only now: the IPv6 device goes.
            _ = try VXLANBackend(interface: try a.underlay(), network: network).registerNetwork(dataPath: dp)
            #expect(
                try a.lines("ip -br link show type vxlan").map { String($0.prefix { $0 != " " && $0 != "@" }) } == [
                    "flannel.1"
                ])
        }
    }

    @Test func dualStackPodsPingOverBothFamiliesThroughTheEventPath() throws {
        try withDualStackUnderlay { a, b in
            let config = try NetworkConfig(
                json: Data(
                    #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#
                        .utf8))
            let na = try config.makeBackend(interface: try a.underlay(families: [.v4, .v6]))
                .registerNetwork(dataPath: try a.dataPath())
            let nb = try config.makeBackend(interface: try b.underlay(families: [.v4, .v6]))
                .registerNetwork(dataPath: try b.dataPath())
            try na.start(subnet: net("10.5.1.0/24"), ipv6Subnet: net("fd00:5:0:1::/64"))
            try nb.start(subnet: net("10.5.2.0/24"), ipv6Subnet: net("fd00:5:0:2::/64"))
            for (n, i) in [(a, 1), (b, 2)] {
                try addPodBridge(n, gateway: "10.5.\(i).1/24")
                try n.addPodInterface6("fd00:5:0:\(i)::1/64")
            }
            // Each node's lease as the other sees it, both families.
            func lease(_ n: TestNamespace, _ i: Int) throws -> Peer {
                let v4 = try peer(n, subnet: "10.5.\(i).0/24", publicIP: "192.168.77.\(i)")
                let v6 = try peer(n, subnet: "fd00:5:0:\(i)::/64", publicIP: "fd77::\(i)", device: "flannel-v6.1")
                return Peer(
                    subnet: v4.subnet, publicIP: v4.publicIP, vtepMAC: v4.vtepMAC, ipv6Subnet: v6.subnet,
                    publicIPv6: v6.publicIP, ipv6VtepMAC: v6.vtepMAC)
            }
            let report = try na.setPeer(try lease(b, 2))
            #expect(report.programmed == EntryCounts(routes: 2, neighbours: 2, fdbEntries: 2))
            _ = try nb.setPeer(try lease(a, 1))
            #expect(a.ping("10.5.2.1", from: "10.5.1.1"))
            #expect(a.ping("fd00:5:0:2::1", from: "fd00:5:0:1::1"))
            #expect(try a.gatewayRoutes(dev: "flannel.1").count == 1)
            #expect(try a.gatewayRoutes6(dev: "flannel-v6.1").count == 1)
            // The lease goes: both families' entries with it.
            #expect(
                try na.removePeer(subnet: net("10.5.2.0/24")).removed
                    == EntryCounts(routes: 2, neighbours: 2, fdbEntries: 2))
            #expect(try a.gatewayRoutes6(dev: "flannel-v6.1").isEmpty)
        }
    }
}
