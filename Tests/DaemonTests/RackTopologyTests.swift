// The two-rack topology on its own, before podnetd speaks BGP: the routers (BIRD, or BIRD and
// FRR) and a stand-in node speaker (BIRD with the cluster AS) on one node per rack. Proves what
// the bgp backend's end-to-end tests rely on: the routers install both racks' pod routes, the
// nodes accept the other rack's route thanks to the routers' AS override (with standard loop
// detection), and the underlay between the racks is routed without BGP.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct RackTopologyTests {
        @Test(.enabled(if: RouterKind.bird.isInstalled, "BIRD 2 is not installed: run scripts/deps.sh"))
        func twoBIRDRoutersCarryPodRoutesBetweenRacks() throws {
            try checkTwoRacks(routers: [.bird, .bird])
        }

        @Test(
            .enabled(
                if: RouterKind.bird.isInstalled && RouterKind.frr.isInstalled,
                "BIRD 2 or FRR is not installed: run scripts/deps.sh"))
        func aBIRDAndAnFRRRouterCarryPodRoutesBetweenRacks() throws {
            try checkTwoRacks(routers: [.bird, .frr])
        }

        @Test(.enabled(if: RouterKind.bird.isInstalled, "BIRD 2 is not installed: run scripts/deps.sh"))
        func aRouterAnnouncesItsExtraRoutesToItsNodesOnly() throws {
            var options = ClusterOptions(backend: "host-gw", nodes: 0, podsPerNode: 0)
            options.racks = 2
            let extras = (0..<10_000).map { "10.\(100 + $0 / 256).\($0 % 256).0/24" } + ["0.0.0.0/0"]
            options.routerExtraRoutes = [1: extras]
            try Cluster.with(options) { c in
                let (n1, n2) = (try c.addNode(start: false), try c.addNode(start: false))
                let own = "10.244.201.0/24"
                let s1 = try c.startStandInSpeaker(on: n1, announcing: [own])
                let s2 = try c.startStandInSpeaker(on: n2, announcing: ["10.244.202.0/24"])
                let r1 = try c.router(rack: 1)
                // All 10,001 reach the rack's node, next to the other rack's prefix (BIRD counts
                // them as imported) ...
                let arrived = secondsUntil(within: 60) {
                    s1.state().contains(" \(extras.count + 1) imported")
                }
                #expect(arrived != nil, "\(s1.state())\n\(c.routersReport())")
                report("10,001 extra routes at the rack's node", arrived)
                #expect(s1.hasBestRoute("0.0.0.0/0"))
                // ... and none leaves the rack or enters a router's kernel table.
                let settled = secondsUntil(within: 20) { s2.hasBestRoute(own) }
                #expect(settled != nil, "\(c.routersReport())")
                #expect(!s2.hasBestRoute("10.100.0.0/24") && !s2.hasBestRoute("0.0.0.0/0"), "\(s2.state())")
                let routes = try r1.kernelRoutes()
                #expect(routes.count == 2, "\(routes.prefix(5))")
            }
        }

        /// Two racks with `routers`, no podnetd: a stand-in speaker on node 1 (rack 1) announces
        /// 10.244.201.0/24, one on node 2 (rack 2) 10.244.202.0/24.
        private func checkTwoRacks(routers: [RouterKind]) throws {
            var options = ClusterOptions(backend: "bgp", nodes: 0, podsPerNode: 0)
            options.racks = 2
            options.routers = routers
            let backend = #"{"Type":"bgp","ASNumber":64512}"#
            options.backendJSON = backend
            try Cluster.with(options) { c in
                let config = try c.etcd.etcdctl("get", "--print-value-only", options.prefix + "/config")
                #expect(config.contains(#""Backend":\#(backend)}"#), "\(config)")
                let (n1, n2) = (try c.addNode(start: false), try c.addNode(start: false))
                #expect(n1.rack == 1 && n2.rack == 2)
                #expect(n1.address == "192.168.50.11" && n2.address == "192.168.60.12")
                let (p1, p2) = ("10.244.201.0/24", "10.244.202.0/24")
                let (r1, r2) = (try c.router(rack: 1), try c.router(rack: 2))

                // The underlay between the racks is routed statically, before any BGP session.
                #expect(try c.routerRoutes(rack: 1).isEmpty && c.routerRoutes(rack: 2).isEmpty)
                #expect(
                    (try? n1.namespace.sh("ping -c 1 -W 2 \(n2.address) >/dev/null")) != nil,
                    "node 1 (rack 1) cannot ping node 2 (rack 2) over the underlay")
                #expect((try? n2.namespace.sh("ping -c 1 -W 2 \(ClusterEtcd.address) >/dev/null")) != nil)

                let s1 = try c.startStandInSpeaker(on: n1, announcing: [p1])
                let s2 = try c.startStandInSpeaker(on: n2, announcing: [p2])

                // Both routers install both prefixes: their own rack's via the node, the other's
                // via the other router.
                let want1 = ["\(p1) via \(n1.address)", "\(p2) via \(r2.linkAddress)"]
                let want2 = ["\(p1) via \(r1.linkAddress)", "\(p2) via \(n2.address)"]
                let installed = try secondsUntil(within: 30) {
                    try c.routerRoutes(rack: 1) == want1 && c.routerRoutes(rack: 2) == want2
                }
                #expect(
                    installed != nil,
                    """
                    routers' kernel tables: r1 \(text { try c.routerRoutes(rack: 1) }), r2 \(text { try c.routerRoutes(rack: 2) })
                    \(c.routersReport())
                    """)
                report("\(routers): both prefixes in both routers' kernel tables", installed)

                // Each node takes the other rack's prefix via its own router: AS override made it
                // pass the node's loop detection, so BIRD selected it and installed it.
                for (node, speaker, other) in [(n1, s1, p2), (n2, s2, p1)] {
                    let router = try c.router(rack: node.rack)
                    let want = "\(other) via \(router.address) dev eth0"
                    let learned = try secondsUntil(within: 30) {
                        try node.kernelEntries().routes.contains(want) && speaker.hasBestRoute(other)
                    }
                    #expect(
                        learned != nil,
                        """
                        \(node.name) (rack \(node.rack)) lacks \(want): \(text { try node.kernelEntries().routes })
                        \((try? speaker.route(other)) ?? "")
                        \(speaker.state())
                        \(c.routersReport())
                        """)
                    report("\(routers): \(node.name) learned \(other) via its router", learned)
                }
                // Exactly that: no underlay or router-internal route reached a node.
                #expect(try n1.kernelEntries().routes == ["\(p2) via \(r1.address) dev eth0"])
                #expect(try n2.kernelEntries().routes == ["\(p1) via \(r2.address) dev eth0"])
                #expect(
                    (try? n1.namespace.sh("ping -c 1 -W 2 \(n2.address) >/dev/null")) != nil,
                    "node 1 cannot ping node 2 across the racks")

                // A node speaker that crashes (SIGKILL: no NOTIFICATION) keeps its route at its
                // router, a graceful-restart helper, and so in the other rack, until it is back.
                s2.kill()
                let down = secondsUntil(within: 30) { !r2.isEstablished(with: n2.address) }
                report("\(routers): r2 saw the killed speaker's session close", down)
                #expect(down != nil, "r2 still has a session with the killed speaker:\n\(r2.report())")
                #expect(
                    try c.routerRoutes(rack: 2) == want2 && c.routerRoutes(rack: 1) == want1,
                    "the routers dropped the restarting node's route:\n\(c.routersReport())")
                try s2.start()
                let returned = try secondsUntil(within: 30) {
                    try c.routerRoutes(rack: 1) == want1 && r2.isEstablished(with: n2.address) && s2.hasBestRoute(p1)
                }
                #expect(returned != nil, "after the speaker's restart:\n\(s2.state())\n\(c.routersReport())")
                report("\(routers): node session back after the speaker's restart", returned)

                // A restarted router comes back with both sessions and both routes.
                try c.restartRouter(rack: 2)
                let back = try secondsUntil(within: 30) {
                    try c.routerRoutes(rack: 2) == want2 && c.routerRoutes(rack: 1) == want1
                        && n1.kernelEntries().routes.contains("\(p2) via \(r1.address) dev eth0")
                }
                #expect(back != nil, "after restarting r2:\n\(c.routersReport())")
                report("\(routers): routes back after restarting r2", back)
            }
        }
    }
}

/// What `value` returns, as text, or the error it throws: for failure messages.
private func text(_ value: () throws -> some Any) -> String {
    do { return "\(try value())" } catch { return "(\(error))" }
}
