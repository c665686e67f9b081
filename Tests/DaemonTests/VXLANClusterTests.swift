// podnetd end to end in vxlan mode: three nodes (namespaces on one switch) running the built
// daemon against a real etcd, pods attached by the built flannel plugin. Each test builds its own
// cluster and tears it down, whatever happens.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct VXLAN {
        @Test func podsPingAcrossNodesAndEachNodeHoldsOneEntryOfEachKindPerPeer() throws {
            let options = ClusterOptions(nodes: 3, podsPerNode: 2)
            try Cluster.with(options) { c in
                try expectPingMatrixGreen(c, "vxlan, 3 nodes x 2 pods")

                // Leases: one per node, pairwise distinct, /24s inside the Network, matching the
                // subnet files.
                let leases = try c.leases()
                let network = try IPv4Prefix(options.network)
                #expect(leases.count == 3, "\(leases)")
                #expect(Set(leases.map(\.publicIP)) == Set(c.nodes.map(\.address)))
                for (i, a) in leases.enumerated() {
                    let p = try IPv4Prefix(a.subnet)
                    #expect(network.contains(p) && p.length == 24, "\(a.subnet) is not a /24 of \(options.network)")
                    #expect(a.backendType == "vxlan" && a.vtepMAC != nil, "\(a)")
                    for b in leases[(i + 1)...] { #expect(!p.overlaps(try IPv4Prefix(b.subnet)), "\(a) overlaps \(b)") }
                }
                #expect(Set(leases.compactMap(\.vtepMAC)).count == 3)
                for node in c.nodes {
                    let mine = try #require(lease(of: node, in: leases))
                    #expect(try node.subnet() == mine.subnet)
                    #expect(try node.link("flannel.1").mac == mine.vtepMAC)
                    let env = try node.subnetEnv()
                    #expect(env["FLANNEL_NETWORK"] == options.network)
                    #expect(env["FLANNEL_MTU"] == "1450")
                    #expect(env["FLANNEL_IPMASQ"] == "false")
                }

                // Per node: exactly one route, neighbour and FDB entry per peer, none for itself.
                try expectConverged(c, leases: leases, within: 10, "entries per node")
                for node in c.nodes {
                    let e = try node.kernelEntries()
                    #expect(e.routes.count == 2 && e.neighbours.count == 2 && e.fdb.count == 2, "\(node.name): \(e)")
                    let own = try node.subnet(), ownGateway = String(own.split(separator: "/")[0])
                    #expect(!e.routes.contains { $0.hasPrefix(own + " ") }, "\(node.name) routes its own subnet: \(e)")
                    #expect(!e.neighbours.contains { $0.hasPrefix(ownGateway + " ") })
                    #expect(!e.fdb.contains { $0.hasSuffix("dst " + node.address) })
                }
            }
        }

        @Test func aDeletedLeaseLeavesThePeersWithin2sAndANewNodeJoinsWithin2s() throws {
            try Cluster.with(ClusterOptions(nodes: 3, podsPerNode: 0)) { c in
                let (n1, n2, n3) = (c.nodes[0], c.nodes[1], c.nodes[2])
                let s3 = try n3.subnet()

                // n3 is frozen so that it cannot take its lease back before the peers are checked.
                var monitors = try [n1, n2].map { ($0, try $0.monitor()) }
                try n3.freeze()
                let deleted = Date()
                try c.etcd.delete(c.etcd.leaseKey(s3))
                let withoutN3 = try c.leases()
                #expect(!withoutN3.contains { $0.subnet == s3 })
                try expectConverged(c, [n1, n2], leases: withoutN3, within: 10, "deleted lease gone from the peers")
                expectKernelChanged(monitors, subnet: s3, from: deleted, within: 2, "deleted lease gone from the peers")

                // By default the node acquires its lease again (the same subnet: its subnet file's).
                let thawed = Date()
                try n3.thaw()
                let back = try secondsUntil(within: 10) {
                    try c.leases().contains { $0.subnet == s3 && $0.publicIP == n3.address }
                }
                report("deleted node re-acquired its lease", back)
                #expect(back != nil, "n3 did not acquire its lease again:\n\(n3.logTail())")
                #expect(n3.currentLog.contains("this node's lease was deleted; acquiring it again"))
                try expectConverged(c, within: 10, "re-acquired lease back on the peers")
                expectKernelChanged(
                    monitors, subnet: s3, from: thawed, within: 2, "re-acquired lease back on the peers (from the thaw)"
                )

                // A new node: on the peers within 2 s (timed from its daemon's start), and it
                // programs all of them.
                monitors = try [n1, n2, n3].map { ($0, try $0.monitor()) }
                let started = Date()
                let n4 = try c.addNode()
                try expectConverged(c, within: 10, "new node on the peers")
                expectKernelChanged(
                    monitors, subnet: try n4.subnet(), from: started, within: 2,
                    "new node on the peers (from its daemon's start)")
                #expect(try n4.kernelEntries().routes.count == 3)

                // With --exit-on-lease-loss the node exits instead, and stays gone.
                n2.stop()
                try n2.start(extra: ["--exit-on-lease-loss"])
                try n2.waitUntilReady()
                let s2 = try n2.subnet()
                monitors = try [n1, n3, n4].map { ($0, try $0.monitor()) }
                let deleted2 = Date()
                try c.etcd.delete(c.etcd.leaseKey(s2))
                let status = n2.waitForExit(timeout: 10)
                #expect(
                    status != nil && status != 0,
                    "n2 did not exit with an error: \(status.map(String.init) ?? "still running")")
                #expect(n2.currentLog.contains("was deleted (--exit-on-lease-loss)"), "\(n2.logTail())")
                try expectConverged(c, [n1, n3, n4], within: 10, "lease of an exited node gone from the peers")
                expectKernelChanged(
                    monitors, subnet: s2, from: deleted2, within: 2, "lease of an exited node gone from the peers")
                #expect(try !c.leases().contains { $0.subnet == s2 })
            }
        }

        @Test func aRestartKeepsSubnetDeviceAndMACAndPingsSurviveIt() throws {
            try Cluster.with(ClusterOptions(nodes: 3, podsPerNode: 1)) { c in
                let (n1, n2, n3) = (c.nodes[0], c.nodes[1], c.nodes[2])
                let subnet = try n1.subnet()
                let device = try n1.link("flannel.1")
                let leaseBefore = try #require(lease(of: n1, in: try c.leases()))

                // Traffic into and out of the restarting node, every 50 ms.
                let inbound = try n2.pods[0].startPing(n1.pods[0].address, interval: 0.05)
                let outbound = try n1.pods[0].startPing(n3.pods[0].address, interval: 0.05)
                usleep(500_000)
                let status = n1.stop()
                #expect(status == 0, "SIGTERM should stop podnetd cleanly:\n\(n1.logTail())")
                #expect(n1.currentLog.contains("stopped; the data path and the lease stay in place"))
                usleep(500_000)  // the node without its daemon
                try n1.start()
                try n1.waitUntilReady()
                usleep(500_000)
                let (inSent, inReceived) = try inbound.stop()
                let (outSent, outReceived) = try outbound.stop()
                print(
                    "[daemon-e2e] pings across a restart: into the node \(inReceived)/\(inSent), out of it \(outReceived)/\(outSent)"
                )
                #expect(
                    inSent >= 20 && inSent - inReceived <= 3,
                    "lost \(inSent - inReceived) of \(inSent) pings into the restarted node")
                #expect(
                    outSent >= 20 && outSent - outReceived <= 3,
                    "lost \(outSent - outReceived) of \(outSent) pings out of it")

                // Same subnet, same device (not recreated), same MAC, same lease value.
                #expect(try n1.subnet() == subnet)
                let after = try n1.link("flannel.1")
                #expect(
                    after.index == device.index && after.mac == device.mac, "device before \(device), after \(after)")
                let leaseAfter = try #require(lease(of: n1, in: try c.leases()))
                #expect(leaseAfter == leaseBefore)
                // The restart found everything in place: it changed nothing in the kernel.
                #expect(n1.currentLog.contains("overlay.changes=0"), "\(n1.currentLog)")
                try expectConverged(c, within: 10, "after the restart")
            }
        }

        @Test func entriesDeletedByHandArePutBackAndStaleOnesGoAtStartUp() throws {
            var options = ClusterOptions(nodes: 3, podsPerNode: 1)
            options.reconcileInterval = 1
            try Cluster.with(options) { c in
                let (n1, n2, n3) = (c.nodes[0], c.nodes[1], c.nodes[2])
                let leases = try c.leases()
                let l2 = try #require(lease(of: n2, in: leases)), l3 = try #require(lease(of: n3, in: leases))
                let gateway3 = gateway(of: l3.subnet)

                // One route, one neighbour, one FDB entry deleted by hand: back with a repair.
                try n1.namespace.sh(
                    """
                    ip route del \(l2.subnet) && ip neigh del \(gateway3) dev flannel.1 && \
                    bridge fdb del \(l2.vtepMAC!) dev flannel.1 dst \(n2.address)
                    """)
                #expect(
                    try expectConverged(c, [n1], leases: leases, within: 10, "hand-deleted entries put back") != nil)
                #expect(n1.log.contains("repaired the kernel state"))
                try expectPingMatrixGreen(c, "after the repair")

                // The device deleted by hand: created again with its MAC, everything on it again.
                let device = try n1.link("flannel.1")
                try n1.namespace.sh("ip link del flannel.1")
                #expect(
                    try expectConverged(c, [n1], leases: leases, within: 10, "device deleted by hand recreated") != nil)
                #expect(try n1.link("flannel.1").mac == device.mac)
                try expectPingMatrixGreen(c, "after the device was recreated")

                // Stale entries found at start-up (a peer that left while the daemon was down, an
                // extra remote for a live peer's MAC, a host-gw route of an earlier mode) are removed
                // by the start-up reconcile, not by a later repair.
                n1.stop()
                try n1.namespace.sh(
                    """
                    ip neigh replace 10.244.250.0 lladdr 02:00:00:00:00:fa dev flannel.1 nud permanent && \
                    bridge fdb append 02:00:00:00:00:fa dev flannel.1 dst 192.168.50.250 self permanent && \
                    ip route replace 10.244.250.0/24 via 10.244.250.0 dev flannel.1 onlink && \
                    bridge fdb append \(l2.vtepMAC!) dev flannel.1 dst 192.168.50.251 self permanent && \
                    ip route replace 10.244.251.0/24 via 192.168.50.251 dev eth0
                    """)
                #expect(try n1.kernelEntries().routes.count == 4)
                try n1.start(extra: ["--reconcile-interval", "3600"])
                try n1.waitUntilReady()
                // The subnet file is written after the start-up reconcile: no waiting needed.
                #expect(
                    try expectConverged(c, [n1], leases: leases, within: 0, "stale entries removed at start-up") != nil)
                #expect(!n1.currentLog.contains("repaired the kernel state"))
                try expectPingMatrixGreen(c, "after the restart with stale entries")
            }
        }
    }
}
