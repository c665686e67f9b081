// podnetctl on a three-node cluster, as an operator runs it on a node: `check` is quiet and exits
// 0 while the kernel matches the leases; each entry deleted or added by hand is one problem that
// names it (exit 1), shown by `status` too; podnetd's repair makes `check` pass again; etcd out
// of reach is exit 2 within --timeout.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct Podnetctl {
        /// podnetctl in `node`'s namespace with the daemon's etcd and interface flags.
        static func podnetctl(_ c: Cluster, on node: ClusterNode, _ args: [String]) throws -> CommandResult {
            let argv =
                ["ip", "netns", "exec", node.namespace.name, c.binaries + "/podnetctl"] + args + [
                    "--etcd-endpoints", c.etcd.endpoints.joined(separator: ","), "--etcd-prefix", c.options.prefix,
                    "--iface", "eth0", "--subnet-file", node.subnetFile,
                ]
            return try run(["/usr/bin/timeout", "30"] + argv)
        }

        @Test func checkFindsEachEntryChangedByHandAndPassesOnceRepaired() throws {
            var options = ClusterOptions(nodes: 3, podsPerNode: 0)
            // No periodic repair: the daemon's start-up repairs, on restart.
            options.reconcileInterval = 3600
            try Cluster.with(options) { c in
                let (n1, n2, n3) = (c.nodes[0], c.nodes[1], c.nodes[2])
                try expectConverged(c, within: 10, "before podnetctl")
                let clean = try Self.podnetctl(c, on: n1, ["check"])
                #expect(clean.status == 0 && clean.stdout.isEmpty, "\(clean)")

                let s2 = try n2.subnet(), s3 = try n3.subnet()
                let g2 = gateway(of: s2)
                let mac3 = try #require(c.leases().first { $0.subnet == s3 }?.vtepMAC)
                let cases: [(what: String, change: String, named: String, row: (subnet: String, verdict: String))] = [
                    ("a deleted route", "ip route del \(s2)", "\(s2): route missing", (s2, "missing")),
                    (
                        "a deleted neighbour", "ip neigh del \(g2) dev flannel.1", "\(s2): neighbour missing",
                        (s2, "missing")
                    ),
                    (
                        "a deleted FDB entry", "bridge fdb del \(mac3) dev flannel.1 dst \(n3.address)",
                        "\(s3): fdb entry missing", (s3, "missing")
                    ),
                    // Above the nodes' SubnetMax (10.244.199.0): never a node's own lease.
                    (
                        "a stale route", "ip route add 10.244.250.0/24 via 10.244.250.0 dev flannel.1 onlink",
                        "stale route 10.244.250.0/24", ("10.244.250.0/24", "stale")
                    ),
                ]
                for (what, change, named, row) in cases {
                    _ = try n1.namespace.sh(change)
                    let check = try Self.podnetctl(c, on: n1, ["check"])
                    let lines = check.stdout.split(separator: "\n")
                    #expect(check.status == 1, "\(what): \(check)")
                    #expect(lines.count == 1 && lines[0].contains(named), "\(what): \(check.stdout)")
                    // status: the same verdict in the subnet's row.
                    let status = try Self.podnetctl(c, on: n1, ["status"])
                    let line = status.stdout.split(separator: "\n").first { $0.hasPrefix(row.subnet + " ") }
                    #expect(status.status == 0 && line?.contains(" \(row.verdict) ") == true, "\(what): \(status)")
                    let json = try Self.podnetctl(c, on: n1, ["check", "--json"])
                    let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
                    #expect((object?["problems"] as? [Any])?.count == 1, "\(what): \(json.stdout)")
                    // podnetd's start-up reconcile repairs it.
                    try n1.restart()
                    let repaired = try Self.podnetctl(c, on: n1, ["check"])
                    #expect(repaired.status == 0, "\(what), after the repair: \(repaired)")
                }
            }
        }

        @Test func statusShowsTheVerdictsAndLeasesListsTheCluster() throws {
            var options = ClusterOptions(nodes: 2, podsPerNode: 0)
            options.reconcileInterval = 3600
            try Cluster.with(options) { c in
                let (n1, n2) = (c.nodes[0], c.nodes[1])
                try expectConverged(c, within: 10, "before podnetctl")
                let s2 = try n2.subnet()
                _ = try n1.namespace.sh("ip route del \(s2)")
                let status = try Self.podnetctl(c, on: n1, ["status"])
                #expect(status.status == 0, "\(status)")
                let row = status.stdout.split(separator: "\n").first { $0.contains(s2) }
                #expect(row?.contains("missing") == true, "\(status.stdout)")
                #expect(status.stdout.split(separator: "\n").allSatisfy { $0.count <= 80 }, "\(status.stdout)")
                let leases = try Self.podnetctl(c, on: n1, ["leases"])
                #expect(leases.status == 0, "\(leases)")
                for node in c.nodes { #expect(leases.stdout.contains(try node.subnet()), "\(leases.stdout)") }
                let json = try Self.podnetctl(c, on: n1, ["leases", "--json"])
                let parsed = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
                #expect((parsed?["leases"] as? [Any])?.count == 2, "\(json.stdout)")
            }
        }

        @Test func etcdOutOfReachIsExitTwoWithinTheTimeout() throws {
            try Cluster.with(ClusterOptions(nodes: 1, podsPerNode: 0)) { c in
                let n1 = c.nodes[0]
                // Cut off: the connection fails, exit 2 naming etcd.
                try c.etcd.disconnect()
                let cut = try Self.podnetctl(c, on: n1, ["check", "--timeout", "2"])
                #expect(cut.status == 2 && cut.stderr.contains("etcd"), "\(cut)")
                try c.etcd.reconnect()
                // Frozen: connections are accepted and never answered, so only --timeout ends the
                // wait; exit 2 by itself (not killed by the outer timeout) and saying so.
                try c.etcd.freeze()
                defer { try? c.etcd.thaw() }
                let silent = try Self.podnetctl(c, on: n1, ["check", "--timeout", "2"])
                #expect(silent.status == 2, "\(silent)")
                #expect(silent.stderr.contains("within 2 s (--timeout)"), "\(silent)")
            }
        }
    }
}
