// podnetd's bgp backend across two racks: each rack an L2 segment behind its own router (BIRD, or
// FRR in rack 2), the routers peering with each other. Pods in different racks reach each other
// without encapsulation; a node's route to the other rack's subnets goes via its router, with
// podnet's protocol; host-gw on the same topology cannot (the control row that proves the routers
// and BGP carry the traffic). Leases deleted, a podnetd restart, and a router announcing what it
// should not are the rows users meet.

import Foundation
import TestSupport
import Testing

/// Rack r's router peers with rack r's nodes (NodePrefix); the mesh joins all nodes.
private let racksBackend = #"""
    {"Type":"bgp","HoldTime":9,"Peers":[
     {"PeerIP":"192.168.50.1","ASNumber":65001,"NodePrefix":"192.168.50.0/24"},
     {"PeerIP":"192.168.60.1","ASNumber":65002,"NodePrefix":"192.168.60.0/24"}]}
    """#

private func rackOptions(_ routers: [RouterKind], backend: String = "bgp") -> ClusterOptions {
    var options = ClusterOptions(backend: backend, nodes: 0, podsPerNode: 0)
    options.racks = 2
    options.routers = routers
    options.reconcileInterval = 1
    if backend == "bgp" { options.backendJSON = racksBackend }
    return options
}

/// The routes `node` must hold: a peer in its rack directly (the mesh), one in the other rack via
/// its own router.
private func expectedRoutes(_ c: Cluster, on node: ClusterNode, leases: [ClusterLease]) throws -> [String] {
    let own = try node.subnet()
    let router = try c.router(rack: node.rack)
    let rackPrefix = Cluster.underlayPrefix(rack: node.rack) + "."
    return leases.filter { $0.subnet != own }.map { l in
        "\(l.subnet) via \(l.publicIP.hasPrefix(rackPrefix) ? l.publicIP : router.address) dev eth0"
    }.sorted()
}

/// Waits until every node of `c` holds exactly its expected routes; records the differences.
@discardableResult
private func expectRackRoutes(
    _ c: Cluster, _ nodes: [ClusterNode]? = nil, within seconds: Double, _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> Double? {
    let leases = try c.leases()
    var slowest: Double? = 0
    for node in nodes ?? c.nodes {
        let want = try expectedRoutes(c, on: node, leases: leases)
        let took = try secondsUntil(within: seconds) { try node.kernelEntries().routes.sorted() == want }
        if took == nil {
            Issue.record(
                """
                \(what): \(node.name) (rack \(node.rack)) holds \(try node.kernelEntries().routes.sorted())
                want \(want)
                \(node.logTail(15))
                \(c.routersReport())
                """, sourceLocation: sourceLocation)
            slowest = nil
        } else {
            slowest = slowest.map { max($0, took!) }
        }
    }
    report(what, slowest)
    return slowest
}

/// Every leased subnet in `rack`'s router's kernel table.
private func routerHasAll(_ c: Cluster, rack: Int) throws -> Bool {
    let routes = try c.routerRoutes(rack: rack)
    return try c.leases().allSatisfy { l in routes.contains { $0.hasPrefix(l.subnet + " ") } }
}

extension DaemonEndToEnd {
    @Suite struct BGPRacks {
        @Test(.enabled(if: RouterKind.bird.isInstalled, "BIRD 2 is not installed: run scripts/deps.sh"))
        func podsInTwoRacksTalkThroughBIRDRoutersAndFollowTheLeases() throws {
            try Cluster.with(rackOptions([.bird, .bird])) { c in
                for i in 1...4 {
                    _ = try c.addNode(arguments: i == 4 ? ["--exit-on-lease-loss"] : [])
                    _ = try c.nodes[i - 1].addPod()
                }
                try expectRackRoutes(c, within: 20, "bgp racks: routes via the routers")
                for node in c.nodes {
                    #expect(try node.json("ip -j -4 route show proto 98").count == 3, "\(node.name)")
                    #expect(try node.tunnelDevices().isEmpty)
                }
                #expect(try routerHasAll(c, rack: 1) && routerHasAll(c, rack: 2), "\(c.routersReport())")
                try expectPingMatrixGreen(c, "bgp, two racks of BIRD routers")

                // Node 3 (rack 1) restarts: a pod in rack 2 keeps pinging its pod, since r1 keeps
                // node 3's subnet as a graceful-restart helper and node 3 keeps its routes.
                let (n1, n2, n3, n4) = (c.nodes[0], c.nodes[1], c.nodes[2], c.nodes[3])
                let ping = try n2.pods[0].startPing(n3.pods[0].address, interval: 0.05)
                try n3.restart()
                let complete = secondsUntil(within: 30) { n3.logTail(400).contains("bgp: graceful restart complete") }
                #expect(complete != nil, "\(n3.logTail(30))")
                try expectRackRoutes(c, within: 20, "bgp racks: after node 3 restarted")
                let stats = try ping.stop()
                #expect(stats.transmitted > 10, "\(stats)")
                #expect(
                    stats.transmitted - stats.received <= 3,
                    "lost \(stats) across node 3's restart\n\(c.routersReport())")

                // Node 4's lease deleted: node 4 exits (--exit-on-lease-loss) ending its sessions
                // with a NOTIFICATION, so its subnet leaves the routers, and the other nodes drop
                // their route with the lease, within 3 s.
                let s4 = try n4.subnet()
                let monitors = try [n1, n2, n3].map { ($0, try $0.monitor()) }
                let deleted = Date()
                try c.etcd.delete(c.etcd.leaseKey(s4))
                let gone = try secondsUntil(within: 10) {
                    try !c.routerRoutes(rack: 1).contains { $0.hasPrefix(s4 + " ") }
                        && !c.routerRoutes(rack: 2).contains { $0.hasPrefix(s4 + " ") }
                }
                #expect(gone != nil && gone! <= 3, "\(s4) still at the routers:\n\(c.routersReport())")
                report("bgp racks: a deleted lease leaves both routers", gone)
                try expectRackRoutes(c, [n1, n2, n3], within: 10, "bgp racks: node 4's lease deleted")
                expectKernelChanged(monitors, subnet: s4, from: deleted, within: 3, "bgp racks: node 4's lease deleted")
                #expect(n4.waitForExit(timeout: 10) != nil, "node 4 did not exit:\n\(n4.logTail())")
            }
        }

        @Test(
            .enabled(
                if: RouterKind.bird.isInstalled && RouterKind.frr.isInstalled,
                "BIRD 2 or FRR is not installed: run scripts/deps.sh"))
        func anFRRRouterInTheSecondRackCarriesTheSameTraffic() throws {
            try Cluster.with(rackOptions([.bird, .frr])) { c in
                for _ in 1...4 { _ = try c.addNode().addPod() }
                try expectRackRoutes(c, within: 30, "bgp racks, BIRD and FRR: routes via the routers")
                #expect(try routerHasAll(c, rack: 1) && routerHasAll(c, rack: 2), "\(c.routersReport())")
                try expectPingMatrixGreen(c, "bgp, a BIRD and an FRR router")
            }
        }

        /// The control row: host-gw on the same racks reaches only the own rack's nodes, since
        /// the other rack's public IPs are no neighbours; so the bgp rows' cross-rack traffic is
        /// the routers' and BGP's doing.
        @Test(.enabled(if: RouterKind.bird.isInstalled, "BIRD 2 is not installed: run scripts/deps.sh"))
        func hostGWOnTheSameRacksCannotCrossThem() throws {
            try Cluster.with(rackOptions([.bird, .bird], backend: "host-gw")) { c in
                for _ in 1...4 { _ = try c.addNode().addPod() }
                let failures = try c.pingMatrixFailures(timeout: 1)
                let pods = c.nodes.flatMap { n in n.pods.map { (n.rack, $0.address) } }
                let crossRack = pods.flatMap { a in pods.filter { $0.0 != a.0 }.map { _ in a } }.count
                #expect(failures.count == crossRack, "\(failures)")
                for node in c.nodes {
                    #expect(try node.kernelEntries().routes.count == 1, "\(node.name): only its rack's peer")
                    #expect(node.logTail(200).contains("unreachable in host-gw mode"), "\(node.logTail(10))")
                }
            }
        }

        /// Rack 1's router also announces 10,000 prefixes outside the pod network, a default
        /// route, the whole /16, a /25 and /24s of the pod network that no node holds: the nodes
        /// install exactly the leases' routes, their memory stays bounded, and the rest of the
        /// cluster is unaffected. (A node's own subnet coming back is refused too: FRR echoes it,
        /// as the FRR row shows.)
        @Test(.enabled(if: RouterKind.bird.isInstalled, "BIRD 2 is not installed: run scripts/deps.sh"))
        func aRouterAnnouncingWhatItShouldNotChangesNothing() throws {
            var options = rackOptions([.bird, .bird])
            options.daemonArguments = ["--healthz-ip", "127.0.0.1", "--healthz-port", "9102"]
            let outside = (0..<10_000).map { "10.\(100 + $0 / 256).\($0 % 256).0/24" }
            // The nodes lease from 10.244.1.0 to 10.244.199.0 (Cluster.configJSON).
            let unleased = (200...255).map { "10.244.\($0).0/24" }
            options.routerExtraRoutes = [1: outside + unleased + ["0.0.0.0/0", "10.244.0.0/16", "10.244.1.0/25"]]
            try Cluster.with(options) { c in
                for _ in 1...4 { _ = try c.addNode().addPod() }
                let n1 = c.nodes[0]
                let received = secondsUntil(within: 60) {
                    let m = (try? n1.namespace.sh("curl -s http://127.0.0.1:9102/metrics")) ?? ""
                    return m.contains(#"podnet_bgp_prefixes_received{peer="192.168.50.1"} 10"#)
                }
                #expect(received != nil, "\(n1.logTail(20))")
                try expectRackRoutes(c, within: 20, "bgp racks beside a hostile router")
                for node in c.nodes {
                    let defaults = try node.json("ip -j -4 route show default")
                    let router = try c.router(rack: node.rack).address
                    #expect(
                        defaults.count == 1 && defaults[0]["gateway"] as? String == router, "\(node.name): \(defaults)")
                    #expect(try node.json("ip -j -4 route show proto 98").count == 3, "\(node.name)")
                }
                let status = try String(contentsOfFile: "/proc/\(try #require(n1.pid))/status", encoding: .utf8)
                let hwm = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
                let kib = Int(hwm.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? .max
                #expect(kib < 40 * 1024, "podnetd's peak RSS \(kib) KiB with 10,000 refused prefixes")
                try expectPingMatrixGreen(c, "bgp racks beside a hostile router")
            }
        }
    }
}
