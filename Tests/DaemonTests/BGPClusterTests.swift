// podnetd end to end in bgp mode on one L2 segment: the node-to-node mesh (iBGP between all
// nodes, discovered from the leases) gives every node every other node's subnet, with the node as
// next hop and podnet's route protocol; a deleted lease takes the route away, and a restarted
// node keeps its routes while its sessions come back.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct BGPMesh {
        @Test func theMeshGivesEveryNodeEveryOtherSubnetAndFollowsTheLeases() throws {
            var options = ClusterOptions(backend: "bgp", nodes: 3, podsPerNode: 1)
            options.reconcileInterval = 1
            options.daemonArguments = ["--healthz-ip", "127.0.0.1", "--healthz-port", "9102"]
            try Cluster.with(options) { c in
                let leases = try c.leases()
                #expect(leases.count == 3 && leases.allSatisfy { $0.backendType == "bgp" }, "\(leases)")
                try expectConverged(c, leases: leases, within: 15, "bgp mesh routes")
                for node in c.nodes {
                    #expect(try node.tunnelDevices().isEmpty)
                    #expect(try node.subnetEnv()["FLANNEL_MTU"] == "1500")
                    // Every learned route carries podnet's protocol.
                    let routes = try node.json("ip -j -4 route show proto 98")
                    #expect(routes.count == 2, "\(node.name): \(routes)")
                }
                try expectPingMatrixGreen(c, "bgp mesh, 3 nodes")
                // /metrics: each session established, one prefix received, accepted and announced.
                let n2Address = c.nodes[1].address
                let metrics = try c.nodes[0].namespace.sh("curl -s http://127.0.0.1:9102/metrics")
                for line in [
                    #"podnet_bgp_session_established{peer="\#(n2Address)"} 1"#,
                    #"podnet_bgp_prefixes_accepted{peer="\#(n2Address)"} 1"#,
                    #"podnet_bgp_prefixes_announced{peer="\#(n2Address)"} 1"#,
                ] {
                    #expect(metrics.contains(line), "\(line) not in:\n\(metrics)")
                }

                // A lease deleted (its node frozen, so it does not take it back at once): the
                // others drop the route within 3 s, though the node's session still offers it.
                let (n1, n2, n3) = (c.nodes[0], c.nodes[1], c.nodes[2])
                let s3 = try n3.subnet()
                let monitors = try [n1, n2].map { ($0, try $0.monitor()) }
                try n3.freeze()
                let deleted = Date()
                try c.etcd.delete(c.etcd.leaseKey(s3))
                try expectConverged(c, [n1, n2], within: 10, "bgp peer's lease deleted")
                expectKernelChanged(monitors, subnet: s3, from: deleted, within: 3, "bgp peer's lease deleted")
                try n3.thaw()
                let back = try secondsUntil(within: 15) { try c.leases().contains { $0.subnet == s3 } }
                #expect(back != nil, "\(n3.logTail())")
                try expectConverged(c, within: 15, "bgp peer back")
                try expectPingMatrixGreen(c, "bgp mesh after the peer came back")
            }
        }

        @Test func aRestartedNodeKeepsItsRoutesAndItsPeersKeepTheirs() throws {
            try Cluster.with(ClusterOptions(backend: "bgp", nodes: 2, podsPerNode: 1)) { c in
                let (n1, n2) = (c.nodes[0], c.nodes[1])
                try expectConverged(c, within: 15, "bgp mesh routes")
                let ping = try n1.pods[0].startPing(n2.pods[0].address, interval: 0.05)
                try n1.restart()
                // The session comes back, node 2 sends its routes and End-of-RIB, and only then
                // does node 1 sweep what nobody offered again; node 2 kept node 1's route as
                // stale meanwhile. The pods' ping runs through all of it.
                let complete = secondsUntil(within: 20) {
                    n1.logTail(400).contains("bgp: graceful restart complete")
                }
                #expect(complete != nil, "\(n1.logTail(40))\n\(n2.logTail(20))")
                try expectConverged(c, within: 15, "bgp mesh after node 1 restarted")
                let stats = try ping.stop()
                #expect(stats.transmitted > 10, "\(stats)")
                #expect(stats.transmitted - stats.received <= 3, "lost \(stats) across the restart\n\(n1.logTail())")
                try expectPingMatrixGreen(c, "bgp mesh after the restart")
            }
        }
    }
}
