// Route lookup (RTM_GETROUTE, `ip route get`), address flags, and the node's blackhole route,
// against the kernel in throw-away namespaces.

import Addressing
import NetNS
import Netlink
import NodeAgent
import Overlay
import TestSupport
import Testing

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct BlackholeAndRouteGetTests {
    func session(_ ns: TestNamespace) throws -> NetlinkSession {
        try NetworkNamespace(path: ns.path).run { try NetlinkSession() }
    }

    @Test func lookupRouteAnswersAsIPRouteGet() throws {
        try withNode { ns in
            try ns.sh(
                "ip route add default via 192.168.77.2 dev ul0 && ip link add v0 type veth peer name v1 "
                    + "&& ip addr add 10.20.0.1/16 dev v0 && ip link set v0 up && ip link set v1 up")
            let nl = try session(ns)
            let ul0 = try #require(try nl.link(named: "ul0")).index
            let v0 = try #require(try nl.link(named: "v0")).index
            let lo = try #require(try nl.link(named: "lo")).index

            #expect(try ns.sh("ip route get 8.8.8.8").hasPrefix("8.8.8.8 via 192.168.77.2 dev ul0 src 192.168.77.1"))
            #expect(
                try nl.lookupRoute(to: ip("8.8.8.8"))
                    == RouteLookup(interface: ul0, gateway: ip("192.168.77.2"), source: ip("192.168.77.1")))
            #expect(try nl.lookupRoute(to: ip("10.20.5.5")) == RouteLookup(interface: v0, source: ip("10.20.0.1")))
            let local = try nl.lookupRoute(to: ip("192.168.77.1"))
            #expect(local == RouteLookup(type: .local, interface: lo, source: ip("192.168.77.1")))

            // No route: the errno's text, and the socket is still in step afterwards.
            try ns.sh("ip route del default")
            do throws(NetlinkError) {
                _ = try nl.lookupRoute(to: ip("8.8.8.8"))
                Issue.record("a lookup without a route must fail")
            } catch {
                #expect(error.description == "RTM_GETROUTE 8.8.8.8: Network is unreachable")
            }
            #expect(try nl.link(named: "v0")?.index == v0)
            #expect(try nl.lookupRoute(to: ip("10.20.5.5")).interface == v0)
            #expect(try nl.addresses(link: v0, family: .v4) == [net("10.20.0.1/16")])
        }
    }

    @Test func addressFlagsAreReadAndGuideTheChoice() throws {
        try withNode { ns in
            // A dynamic address first, then a deprecated one, then one set by hand, then a secondary.
            try ns.sh(
                "ip link add v0 type veth peer name v1 && ip link set v0 up "
                    + "&& ip addr add 10.30.0.2/24 dev v0 valid_lft 600 preferred_lft 600 "
                    + "&& ip addr add 10.31.0.2/24 dev v0 preferred_lft 0 "
                    + "&& ip addr add 10.32.0.2/24 dev v0 && ip addr add 10.32.0.3/24 dev v0")
            let nl = try session(ns)
            let v0 = try #require(try nl.link(named: "v0")).index
            let all = try nl.interfaceAddresses(family: .v4).filter { $0.interface == v0 }
            let byAddress = Dictionary(uniqueKeysWithValues: all.map { ($0.network, $0) })
            #expect(byAddress.count == 4)
            #expect(byAddress[net("10.30.0.2/24")].map { !$0.isPermanent && !$0.isDeprecated } == true)
            #expect(byAddress[net("10.31.0.2/24")]?.isDeprecated == true)
            #expect(byAddress[net("10.32.0.2/24")].map { $0.isPermanent && !$0.isSecondary } == true)
            #expect(byAddress[net("10.32.0.3/24")]?.isSecondary == true)
            #expect(all.allSatisfy { $0.scope == 0 })
            #expect(
                ExternalInterface.preferredAddresses(all).map(\.network) == [
                    net("10.32.0.2/24"), net("10.32.0.3/24"), net("10.30.0.2/24"),
                ])
            #expect(try ExternalInterface.find(name: "v0", dataPath: try ns.dataPath()).address == net("10.32.0.2/24"))
        }
    }

    @Test func theBlackholeCatchesTrafficOnlyWhenTheLocalRouteIsGone() throws {
        try withUnderlay { a, b in
            try a.sh("ip addr add 10.77.3.1/24 dev ul0")
            try b.sh("ip addr add 10.77.3.2/24 dev ul0")
            let dp = try a.dataPath()
            let ul0 = try #require(try dp.link(named: "ul0")).index
            let blackhole = BlackholeRoute(subnet: net("10.77.3.0/24"), dataPath: dp)
            #expect(try blackhole.ensure())
            #expect(try !blackhole.ensure())
            #expect(try a.lines("ip route show type blackhole") == ["blackhole 10.77.3.0/24 metric 4294967295"])
            #expect(
                try dp.blackholeRoutes(family: .v4, table: 254)
                    == [Route(destination: net("10.77.3.0/24"), priority: .max, scope: 0, proto: 3, type: .blackhole)])
            #expect(try dp.routes(family: .v4, table: 254, interface: nil).allSatisfy { $0.type == .unicast })

            // The address's prefix route wins: the neighbour on the link answers.
            #expect(try a.sh("ip route get 10.77.3.2").contains("dev ul0"))
            #expect(try dp.lookupRoute(to: ip("10.77.3.2")).interface == ul0)
            #expect(a.ping("10.77.3.2", from: "10.77.3.1"))

            // Without it, the blackhole: a local sender gets EINVAL, nothing leaves.
            try a.sh("ip addr del 10.77.3.1/24 dev ul0")
            #expect(throws: (any Error).self) { try a.sh("ip route get 10.77.3.2") }
            do throws(NetlinkError) {
                _ = try dp.lookupRoute(to: ip("10.77.3.2"))
                Issue.record("the lookup must hit the blackhole")
            } catch {
                #expect(error == .libnl(.invalid, operation: "RTM_GETROUTE 10.77.3.2", message: "Invalid argument"))
            }
            #expect(try !blackhole.ensure())

            // Deleting a unicast route to the prefix does not remove the blackhole.
            #expect(throws: NetlinkError.self) { try dp.deleteRoute(Route(destination: net("10.77.3.0/24"))) }
            #expect(try dp.blackholeRoutes(family: .v4, table: 254).count == 1)

            // Gone, no route at all (no default route here): ENETUNREACH, until ensure restores it.
            try dp.deleteRoute(blackhole.route)
            do throws(NetlinkError) {
                _ = try dp.lookupRoute(to: ip("10.77.3.2"))
                Issue.record("no route is left")
            } catch { #expect(error.description.hasSuffix("Network is unreachable")) }
            #expect(try blackhole.ensure())
            #expect(throws: NetlinkError.self) { try dp.lookupRoute(to: ip("10.77.3.2")) }
        }
    }

    @Test func anAddressAddedAfterTheBlackholeStillWins() throws {
        // The case flanneld's metric-0 blackhole gets wrong: the bridge gets its address after
        // the blackhole is in place, and the kernel appends its prefix route behind it.
        try withUnderlay { a, b in
            try b.sh("ip addr add 10.77.3.2/24 dev ul0")
            let dp = try a.dataPath()
            #expect(try BlackholeRoute(subnet: net("10.77.3.0/24"), dataPath: dp).ensure())
            try a.sh("ip addr add 10.77.3.1/24 dev ul0")
            #expect(try dp.lookupRoute(to: ip("10.77.3.2")).interface == (try dp.link(named: "ul0"))?.index)
            #expect(a.ping("10.77.3.2", from: "10.77.3.1"))

            // flanneld's, for comparison: metric 0, added first, shadows the prefix route.
            try a.sh("ip addr del 10.77.3.1/24 dev ul0 && ip route add blackhole 10.77.3.0/24")
            try a.sh("ip addr add 10.77.3.1/24 dev ul0")
            do throws(NetlinkError) {
                _ = try dp.lookupRoute(to: ip("10.77.3.2"))
                Issue.record("flanneld's blackhole shadows the prefix route")
            } catch { #expect(error.description.hasSuffix("Invalid argument")) }
        }
    }
}
