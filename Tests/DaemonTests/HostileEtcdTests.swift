// podnetd end to end against values in etcd that must not be trusted (issue 8, items 4 to 6):
// hostile leases are not routed, an overwritten own lease is put back, and a bad network config
// (out-of-range backend numbers, a Network holding the node's own address) is waited out with a
// clear log line until it is fixed.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct HostileEtcd {
        @Test func hostileLeasesAreNotRoutedAndAnOverwrittenOwnLeaseIsPutBack() throws {
            var options = ClusterOptions(backend: "vxlan", nodes: 2, podsPerNode: 1)
            options.reconcileInterval = 1
            // /metrics on each node's own loopback (the last --healthz-port given wins).
            options.daemonArguments = ["--healthz-ip", "127.0.0.1", "--healthz-port", "9102"]
            try Cluster.with(options) { c in
                let (n1, n2) = (c.nodes[0], c.nodes[1])
                try expectPingMatrixGreen(c, "before the hostile leases")
                let good = try c.leases()

                // The etcd server's address, the metadata address, and leases inside the network
                // with a loopback PublicIP, a broadcast VtepMAC and n1's own address.
                let hostile: [(subnet: String, publicIP: String, mac: String)] = [
                    ("\(ClusterEtcd.address)/32", n2.address, "02:00:00:00:00:31"),
                    ("169.254.169.254/32", n2.address, "02:00:00:00:00:32"),
                    ("10.244.200.0/24", "127.0.0.1", "02:00:00:00:00:33"),
                    ("10.244.201.0/24", "\(Cluster.underlayPrefix).201", "ff:ff:ff:ff:ff:ff"),
                    ("10.244.202.0/24", n1.address, "02:00:00:00:00:35"),
                    ("10.244.203.0/25", "\(Cluster.underlayPrefix).203", "02:00:00:00:00:36"),
                ]
                for h in hostile { try c.etcd.putLease(subnet: h.subnet, publicIP: h.publicIP, vtepMAC: h.mac) }
                // A good lease after them: once it is programmed, the watch has seen them all.
                let fake = FakePeer(n: 240)
                try fake.put(c)
                // The lease carrying n1's address is hostile to n1 only: for n2 it is a peer.
                let all = try c.leases()
                let withFake = all.filter { good.contains($0) || $0.subnet == fake.subnet }
                #expect(withFake.count == good.count + 1)
                let claimingN1 = all.filter { $0.subnet == "10.244.202.0/24" }
                try expectConverged(c, [n1], leases: withFake, within: 10, "n1 programs only the good leases")
                try expectConverged(
                    c, [n2], leases: withFake + claimingN1, within: 10, "n2 programs only the good leases")
                for node in c.nodes {
                    #expect(
                        try node.namespace.sh("ip route show \(ClusterEtcd.address)").isEmpty,
                        "\(node.name) routes etcd's address")
                    #expect(try node.namespace.sh("ip route show 169.254.169.254").isEmpty)
                    #expect(try node.namespace.sh("ip route get \(ClusterEtcd.address)").contains("dev eth0"))
                }
                let ours = try n1.namespace.sh("ip route show proto 98")
                #expect(ours.split(separator: "\n").count == 2, "n1: \(ours)")
                let log = n1.log
                for reason in [
                    "outside_network", "unusable_public_ip", "unusable_vtep_mac", "own_public_ip",
                    "wrong_subnet_length",
                ] {
                    #expect(log.contains("lease.rejected=\(reason)"), "no log line for \(reason):\n\(n1.logTail(30))")
                }
                #expect(
                    log.contains(
                        "ignoring a lease: its subnet \(ClusterEtcd.address)/32 is not inside the Network 10.244.0.0/16"
                    ))
                #expect(
                    try n1.namespace.sh("curl -s http://127.0.0.1:9102/metrics")
                        .contains(#"podnet_leases_rejected_total{reason="outside_network"} 2"#))

                // A lease that was good turns hostile: its entries go.
                try c.etcd.putLease(subnet: fake.subnet, publicIP: "127.0.0.2", vtepMAC: fake.mac)
                try expectConverged(c, [n1], leases: good, within: 10, "a lease that turned hostile is unprogrammed")
                try expectConverged(
                    c, [n2], leases: good + claimingN1, within: 10, "a lease that turned hostile is unprogrammed")
                try fake.delete(c)
                for h in hostile { try c.etcd.delete(c.etcd.leaseKey(h.subnet)) }

                // n1's own lease overwritten by another writer: put back with n1's value.
                let s1 = try n1.subnet()
                let mine = try #require(lease(of: n1, in: good))
                try c.etcd.putLease(subnet: s1, publicIP: "\(Cluster.underlayPrefix).99", vtepMAC: "02:00:00:00:00:99")
                let back = try secondsUntil(within: 15) {
                    try c.leases().contains {
                        $0.subnet == s1 && $0.publicIP == n1.address && $0.vtepMAC == mine.vtepMAC
                    }
                }
                #expect(back != nil, "n1 did not put its lease back:\n\(n1.logTail())")
                #expect(n1.log.contains("this node's lease was overwritten by another writer"))
                #expect(try n1.subnet() == s1, "n1 kept its subnet")
                #expect(
                    try n1.namespace.sh("curl -s http://127.0.0.1:9102/metrics").contains(
                        "podnet_own_lease_overwritten_total 1"))
                try expectConverged(c, within: 10, "the own lease back everywhere")
                try expectPingMatrixGreen(c, "after the hostile leases")
            }
        }

        @Test func aBadConfigIsWaitedOutWithAClearMessageUntilItIsFixed() throws {
            var options = ClusterOptions(backend: "vxlan", nodes: 0, podsPerNode: 0)
            options.daemonArguments = ["--healthz-ip", "127.0.0.1", "--healthz-port", "9102"]
            try Cluster.with(options) { c in
                let key = c.options.prefix + "/config"
                try c.etcd.put(key, #"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":5000000000}}"#)
                let node = try c.addNode(start: false)
                try node.start()
                func expectWaiting(
                    _ fragments: [String], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
                ) throws {
                    let logged = secondsUntil(within: 10) { fragments.allSatisfy { node.currentLog.contains($0) } }
                    #expect(
                        logged != nil, "\(what): no log line with \(fragments):\n\(node.logTail())",
                        sourceLocation: sourceLocation)
                    #expect(
                        node.isRunning, "\(what): podnetd exited: \(node.logTail())", sourceLocation: sourceLocation)
                    #expect(!FileManager.default.fileExists(atPath: node.subnetFile), sourceLocation: sourceLocation)
                    #expect(try c.leases().isEmpty, sourceLocation: sourceLocation)
                    #expect(try node.tunnelDevices().isEmpty, sourceLocation: sourceLocation)
                }
                try expectWaiting(
                    ["invalid network config (waiting for a valid one)", "Backend.MTU", "118...65535"], "MTU 5000000000"
                )
                // While it waits, as flanneld: alive, not ready, and the config check visible in /metrics.
                func get(_ path: String) throws -> String {
                    try node.namespace.sh("curl -s -w ' %{http_code}' http://127.0.0.1:9102\(path)")
                }
                #expect(try get("/healthz").hasSuffix(" 200"))
                #expect(try get("/readyz").hasSuffix(" 503"))
                let metrics = try get("/metrics")
                #expect(metrics.contains("podnet_config_valid 0"), "\(metrics)")
                #expect(metrics.contains("podnet_config_errors_total 1"), "\(metrics)")
                for (backend, fragments) in [
                    (#""MTU":-9223372036854775808"#, ["Backend.MTU -9223372036854775808 is out of range"]),
                    (#""vni":4294967296"#, ["Backend.VNI 4294967296 is out of range", "1...16777215"]),
                    (#""Port":70000"#, ["Backend.Port 70000 is out of range", "1...65535"]),
                ] {
                    try c.etcd.put(key, #"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan",\#(backend)}}"#)
                    try expectWaiting(fragments, backend)
                }
                // A Network holding the node's own underlay address.
                try c.etcd.put(key, #"{"Network":"192.168.0.0/16","Backend":{"Type":"vxlan"}}"#)
                try expectWaiting(["contain this node's underlay address \(node.address)"], "Network over the underlay")
                try c.etcd.put(key, #"{"Network":"0.0.0.0/0","Backend":{"Type":"vxlan"}}"#)
                try expectWaiting(["Network 0.0.0.0/0 overlaps"], "Network 0.0.0.0/0")

                // Fixed (the keys spelled as Go accepts them): the daemon starts.
                try c.etcd.put(key, #"{"network":"10.244.0.0/16","backend":{"type":"vxlan","Vni":7,"mtu":1400}}"#)
                try node.waitUntilReady(timeout: 15)
                #expect(try get("/readyz").hasSuffix(" 200"))
                #expect(try get("/metrics").contains("podnet_config_valid 1"))
                #expect(try node.tunnelDevices() == ["flannel.7"])
                #expect(try node.subnetEnv()["FLANNEL_MTU"] == "1350")
                #expect(try c.leases().count == 1)
            }
        }
    }
}
