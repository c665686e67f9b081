// podnetd end to end with IPv6: three nodes with dual-stack underlay addresses and a real etcd,
// the network config dual-stack (`EnableIPv6`, `IPv6Network`) or IPv6-only (`EnableIPv4`
// false). Pods get an address of each enabled family from the built flannel plugin; every pod
// pings every other over each family; each node holds exactly one route (and for vxlan one
// neighbour and one FDB entry) per peer per family; the lease delete, restart, repair and
// stale-removal rows of the IPv4 suites hold for IPv6; and bad IPv6 input is refused clearly.

import Addressing
import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct DualStack {
        /// flanneld's key regex (pkg/subnet/subnet.go ParseSubnetKey).
        static var flanneldKey: Regex<AnyRegexOutput> {
            try! Regex(#"(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$"#)
        }

        static func options(_ backend: String = "vxlan", _ mode: ClusterOptions.IPv6Mode = .dual, pods: Int = 1)
            -> ClusterOptions
        {
            var o = ClusterOptions(backend: backend, nodes: 3, podsPerNode: pods)
            o.ipv6 = mode
            return o
        }

        /// Both families' ping matrices are green and every node holds exactly its peers' entries
        /// of both families.
        static func expectDualStackGreen(_ c: Cluster, _ what: String, within seconds: Double = 10) throws {
            for family in c.options.families {
                try expectConverged(c, within: seconds, "\(what): \(family) entries", family: family)
                let failures = try c.pingMatrixFailures(family: family)
                #expect(failures.isEmpty, "\(what): \(family) pings failed: \(failures)")
                print("[daemon-e2e] \(what): \(family) ping matrix \(failures.isEmpty ? "green" : "FAILED")")
            }
        }

        @Test func vxlanPodsPingOverBothFamiliesWithOneEntryOfEachKindPerPeerAndFamily() throws {
            try Cluster.with(Self.options()) { c in
                try Self.expectDualStackGreen(c, "vxlan dual stack, 3 nodes")
                let leases = try c.leases()
                let v6Network = try #require(IPNetwork(c.options.ipv6Network))
                #expect(leases.count == 3, "\(leases)")
                for l in leases {
                    // The key as flanneld writes and parses it: <v4>-<len>&<v6>-<len6>.
                    let name = String(l.key.split(separator: "/").last ?? "")
                    let m = try #require(name.wholeMatch(of: Self.flanneldKey), "\(l.key)")
                    #expect(m.output[3].substring != nil, "\(l.key) has no IPv6 part")
                    let v6 = try #require(l.ipv6Subnet.flatMap { IPNetwork($0) }, "\(l)")
                    #expect(v6Network.contains(v6.address) && v6.prefixLength == 64, "\(l)")
                }
                #expect(Set(leases.compactMap(\.ipv6Subnet)).count == 3)
                #expect(Set(leases.compactMap(\.ipv6VtepMAC)).count == 3)
                for node in c.nodes {
                    let mine = try #require(lease(of: node, in: leases))
                    #expect(mine.publicIPv6 == node.ipv6Address)
                    #expect(try node.ipv6Subnet() == mine.ipv6Subnet)
                    #expect(try node.link("flannel-v6.1").mac == mine.ipv6VtepMAC)
                    #expect(try node.tunnelDevices() == ["flannel-v6.1", "flannel.1"])
                    let env = try node.subnetEnv()
                    #expect(env["FLANNEL_IPV6_NETWORK"] == c.options.ipv6Network)
                    // One MTU for both families: IPv6 encapsulation costs 70 bytes, not 50.
                    #expect(env["FLANNEL_MTU"] == "1430")
                    let text = try String(contentsOfFile: node.subnetFile, encoding: .utf8)
                    #expect(
                        text.split(separator: "\n").map { String($0.split(separator: "=")[0]) } == [
                            "FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
                            "FLANNEL_MTU", "FLANNEL_IPMASQ",
                        ])
                    // The IPv6 device: local = the node's IPv6 address, MTU 1500 - 70, no RAs.
                    let device = try #require(try node.json("ip -j -d link show flannel-v6.1").first)
                    let info = (device["linkinfo"] as? [String: Any])?["info_data"] as? [String: Any]
                    #expect(info?["local6"] as? String == node.ipv6Address, "\(device)")
                    #expect((device["mtu"] as? NSNumber)?.intValue == 1430)
                    #expect(try node.namespace.sh("cat /proc/sys/net/ipv6/conf/flannel-v6.1/accept_ra") == "0\n")
                    for family in [IPFamily.v4, .v6] {
                        let e = try node.kernelEntries(family: family)
                        #expect(
                            e.routes.count == 2 && e.neighbours.count == 2 && e.fdb.count == 2,
                            "\(node.name) \(family): \(e)")
                    }
                    for pod in node.pods {
                        #expect(pod.ipv6Address != nil && IPAddress(pod.address)?.family == .v4, "\(pod)")
                    }
                }
            }
        }

        @Test func deleteRestartRepairAndStaleRowsHoldForIPv6() throws {
            var options = Self.options()
            options.reconcileInterval = 1
            try Cluster.with(options) { c in
                let (n1, n2, n3) = (c.nodes[0], c.nodes[1], c.nodes[2])
                try Self.expectDualStackGreen(c, "dual stack before")
                let leases = try c.leases()
                let l2 = try #require(lease(of: n2, in: leases)), l3 = try #require(lease(of: n3, in: leases))
                let (s2, mac2) = (try #require(l2.ipv6Subnet), try #require(l2.ipv6VtepMAC))
                let s3 = try #require(l3.ipv6Subnet)

                // Lease deleted (n3 frozen so that it cannot take it back at once): its IPv6
                // entries leave the peers; thawed, it takes the lease back and all converge.
                try n3.freeze()
                try c.etcd.delete(l3.key)
                let without = leases.filter { $0.key != l3.key }
                try expectConverged(c, [n1, n2], leases: without, within: 10, "deleted lease gone", family: .v6)
                #expect(try !n1.kernelEntries(family: .v6).routes.contains { $0.hasPrefix(s3 + " ") })
                try n3.thaw()
                let back = try secondsUntil(within: 15) { try c.leases().contains { $0.key == l3.key } }
                #expect(back != nil, "n3 did not take its lease back:\n\(n3.logTail())")
                try Self.expectDualStackGreen(c, "after the lease came back", within: 15)

                // Entries deleted by hand on IPv6: put back by a repair.
                try n1.namespace.sh(
                    """
                    ip -6 route del \(s2) && ip -6 neigh del \(gateway(of: s3)) dev flannel-v6.1 && \
                    bridge fdb del \(mac2) dev flannel-v6.1 dst \(n2.ipv6Address!)
                    """)
                #expect(
                    try expectConverged(c, [n1], within: 10, "hand-deleted IPv6 entries put back", family: .v6) != nil)

                // A restart keeps both subnets, both devices and their MACs, and changes nothing.
                let device = try n1.link("flannel-v6.1")
                let before = try #require(lease(of: n1, in: try c.leases()))
                try n1.restart()
                #expect(try n1.link("flannel-v6.1") == device)
                #expect(lease(of: n1, in: try c.leases()) == before)
                #expect(n1.currentLog.contains("overlay.changes=0"), "\(n1.currentLog)")

                // Stale IPv6 entries found at start-up go with the start-up reconcile.
                n1.stop()
                try n1.namespace.sh(
                    """
                    ip -6 neigh replace fd00:10:244:fa:: lladdr 02:00:00:00:06:fa dev flannel-v6.1 nud permanent && \
                    bridge fdb append 02:00:00:00:06:fa dev flannel-v6.1 dst fd00:50::fa self permanent && \
                    ip -6 route replace fd00:10:244:fa::/64 via fd00:10:244:fa:: dev flannel-v6.1 onlink
                    """)
                #expect(try n1.kernelEntries(family: .v6).routes.count == 3)
                try n1.start(extra: ["--reconcile-interval", "3600"])
                try n1.waitUntilReady()
                #expect(
                    try expectConverged(c, [n1], within: 0, "stale IPv6 entries removed at start-up", family: .v6)
                        != nil)
                try Self.expectDualStackGreen(c, "after the restart with stale entries")
            }
        }

        @Test func ipv6OnlyPodsHaveNoIPv4AndPingOverIPv6() throws {
            try Cluster.with(Self.options("vxlan", .only)) { c in
                try Self.expectDualStackGreen(c, "vxlan IPv6-only, 3 nodes")
                let leases = try c.leases()
                #expect(leases.count == 3)
                for l in leases {
                    #expect(
                        l.key.hasSuffix("/0.0.0.0-0&" + l.subnet.replacingOccurrences(of: "/", with: "-")), "\(l.key)")
                    #expect(l.publicIP == "0.0.0.0")
                }
                for node in c.nodes {
                    #expect(try node.tunnelDevices() == ["flannel-v6.1"])
                    let env = try node.subnetEnv()
                    #expect(env["FLANNEL_NETWORK"] == nil && env["FLANNEL_SUBNET"] == nil)
                    #expect(env["FLANNEL_IPV6_NETWORK"] == c.options.ipv6Network)
                    for pod in node.pods {
                        #expect(try pod.namespace.sh("ip -4 -o addr show dev eth0").isEmpty, "\(pod.name) has IPv4")
                    }
                }
            }
        }

        @Test func hostGWRoutesBothFamiliesToThePeersAddresses() throws {
            try Cluster.with(Self.options("host-gw")) { c in
                try Self.expectDualStackGreen(c, "host-gw dual stack, 3 nodes")
                for node in c.nodes {
                    #expect(try node.tunnelDevices().isEmpty)
                    #expect(try node.kernelEntries(family: .v6).routes.count == 2)
                    #expect(try node.subnetEnv()["FLANNEL_MTU"] == "1500")
                }
            }
        }

        @Test func aLeaseInFlanneldsDualStackJSONIsProgrammed() throws {
            try Cluster.with(Self.options(pods: 0)) { c in
                let key = c.options.prefix + "/subnets/10.244.250.0-24&fd00:10:244:fa::-64"
                try c.etcd.put(
                    key,
                    #"{"PublicIP":"192.168.50.250","PublicIPv6":"fd00:50::fa","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:fa"},"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:06:fa"}}"#
                )
                for family in [IPFamily.v4, .v6] {
                    try expectConverged(c, within: 10, "flanneld's dual-stack lease", family: family)
                }
                let e = try c.nodes[0].kernelEntries(family: .v6)
                #expect(e.routes.contains("fd00:10:244:fa::/64 via fd00:10:244:fa:: dev flannel-v6.1 onlink"), "\(e)")
                #expect(e.fdb.contains("02:00:00:00:06:fa dst fd00:50::fa"), "\(e)")
            }
        }

        @Test func badIPv6InputIsRefusedClearlyAndLeavesNothing() throws {
            // A node without an IPv6 address and a dual-stack config: a start-up error naming it.
            var plain = ClusterOptions(nodes: 0, podsPerNode: 0)
            plain.ipv6 = .off
            try Cluster.with(plain) { c in
                try c.etcd.put(
                    c.options.prefix + "/config",
                    #"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#
                )
                let node = try c.addNode(start: false)
                try node.start()
                let status = node.waitForExit(timeout: 15)
                #expect(status != nil && status != 0, "podnetd did not fail:\n\(node.logTail())")
                #expect(
                    node.log.contains("eth0 has no global IPv6 address; pass --public-ipv6 or --iface"),
                    "\(node.logTail())")
                #expect(!FileManager.default.fileExists(atPath: node.subnetFile))
                #expect(try c.leases().isEmpty)
                #expect(try node.tunnelDevices().isEmpty)
            }
            // An IPv6Network that is not IPv6: waited out with a clear error until it is fixed.
            var dual = Self.options(pods: 0)
            dual.nodes = 0
            try Cluster.with(dual) { c in
                let configKey = c.options.prefix + "/config"
                try c.etcd.put(
                    configKey,
                    #"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.245.0.0/16","Backend":{"Type":"vxlan"}}"#
                )
                let node = try c.addNode(start: false)
                try node.start()
                let logged = secondsUntil(within: 10) {
                    node.currentLog.contains("please define a correct IPv6Network parameter")
                }
                #expect(logged != nil, "\(node.logTail())")
                #expect(node.isRunning)
                #expect(!FileManager.default.fileExists(atPath: node.subnetFile))
                #expect(try c.leases().isEmpty)
                #expect(try node.tunnelDevices().isEmpty)
                try c.etcd.put(configKey, c.options.configJSON)
                try node.waitUntilReady()
                #expect(try node.subnetEnv()["FLANNEL_IPV6_SUBNET"] != nil)
            }
        }
    }
}
