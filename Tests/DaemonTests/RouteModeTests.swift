// podnetd end to end in host-gw mode (one plain route per peer, no tunnel), switching a running
// cluster between vxlan and host-gw, and ipip (which needs a kernel with the ipip module).

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct RouteModes {
        @Test func hostGWPingsRepairsRoutesAndDropsRemovedPeers() throws {
            var options = ClusterOptions(backend: "host-gw", nodes: 3, podsPerNode: 1)
            options.reconcileInterval = 1
            try Cluster.with(options) { c in
                let (n1, n2, n3) = (c.nodes[0], c.nodes[1], c.nodes[2])
                try expectPingMatrixGreen(c, "host-gw, 3 nodes")
                let leases = try c.leases()
                #expect(leases.count == 3 && leases.allSatisfy { $0.backendType == "host-gw" }, "\(leases)")
                try expectConverged(c, leases: leases, within: 10, "host-gw routes")
                for node in c.nodes {
                    #expect(try node.tunnelDevices().isEmpty)
                    #expect(try node.kernelEntries().routes.count == 2)
                    #expect(try node.subnetEnv()["FLANNEL_MTU"] == "1500")
                }

                // A route deleted by hand comes back.
                let s2 = try n2.subnet()
                try n1.namespace.sh("ip route del \(s2)")
                #expect(try expectConverged(c, [n1], leases: leases, within: 10, "host-gw route put back") != nil)

                // A peer whose lease is deleted leaves the others' routes within 2 s, and comes
                // back once it runs again.
                try expectFrozenPeersLeaseDeletedAndBack(c, peer: n3, within: 2, "host-gw")
            }
        }

        @Test func aRunningClusterSwitchesFromVXLANToHostGWAndBack() throws {
            try Cluster.with(ClusterOptions(backend: "vxlan", nodes: 3, podsPerNode: 1)) { c in
                try expectPingMatrixGreen(c, "before switching (vxlan)")
                let subnets = try c.nodes.map { try $0.subnet() }

                for backend in ["host-gw", "vxlan"] {
                    try c.etcd.put(
                        c.options.prefix + "/config", Cluster.configJSON(network: c.options.network, backend: backend))
                    // A rolling restart, one node after the other.
                    for node in c.nodes { try node.restart() }
                    let leases = try c.leases()
                    #expect(leases.count == 3 && leases.allSatisfy { $0.backendType == backend }, "\(leases)")
                    #expect(try c.nodes.map { try $0.subnet() } == subnets, "the nodes kept their subnets")
                    for node in c.nodes {
                        let expected = try c.expectedEntries(on: node, leases: leases, backend: backend)
                        let took = try secondsUntil(within: 10) { try node.kernelEntries() == expected }
                        let actual = try node.kernelEntries()
                        #expect(
                            took != nil,
                            "\(node.name) after moving to \(backend):\n\(actual)\nexpected:\n\(expected)\n\(node.logTail())"
                        )
                        #expect(try node.tunnelDevices() == (backend == "vxlan" ? ["flannel.1"] : []))
                        #expect(try node.subnetEnv()["FLANNEL_MTU"] == (backend == "vxlan" ? "1450" : "1500"))
                    }
                    try expectPingMatrixGreen(c, "after switching to \(backend)")
                }
            }
        }

        @Test(.enabled(if: !kernelHasIPIP, "this kernel has ipip: the start-up failure cannot be shown here"))
        func ipipOnAKernelWithoutIPIPStopsTheDaemonWithTheFixAndNoSubnetFile() throws {
            try Cluster.with(ClusterOptions(backend: "ipip", nodes: 0, podsPerNode: 0)) { c in
                let node = try c.addNode(start: false)
                try node.start()
                let status = node.waitForExit(timeout: 10)
                #expect(status != nil && status != 0, "podnetd did not fail: \(node.logTail())")
                #expect(node.log.contains("load the ipip module (modprobe ipip)"), "\(node.logTail())")
                #expect(!FileManager.default.fileExists(atPath: node.subnetFile))
                #expect(try c.leases().isEmpty, "a lease was published by a node that cannot carry ipip")
                #expect(try node.tunnelDevices().isEmpty)
            }
        }

        @Test(
            .enabled(
                if: kernelHasIPIP,
                "this kernel has no ipip module (modprobe ipip fails): the end-to-end ipip run cannot happen here"))
        func ipipPodsPingAcrossNodes() throws {
            try Cluster.with(ClusterOptions(backend: "ipip", nodes: 3, podsPerNode: 1)) { c in
                try expectPingMatrixGreen(c, "ipip, 3 nodes")
                for node in c.nodes { #expect(try node.tunnelDevices() == ["flannel.ipip"]) }
                try expectConverged(c, within: 10, "ipip routes")
            }
        }
    }
}
