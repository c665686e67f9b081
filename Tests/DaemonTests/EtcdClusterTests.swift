// podnetd against a three-member etcd cluster that loses a member (issue 8, item 15): the daemons
// get all three endpoints; the leader, which is also the member every daemon talks to first, is
// killed or cut off the network (plain, and with TLS between everyone). The watch must resume on
// a survivor from the last revision it saw (no re-listing, every event of the failover delivered),
// the lease must be renewed through a survivor, a lease written during the failover must be
// programmed on every node, and the pods must keep pinging.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct EtcdCluster {
        enum Fault: String, CaseIterable, CustomTestStringConvertible {
            case killLeader, partitionLeader, partitionLeaderWithTLS
            var testDescription: String { rawValue }
        }

        @Test(arguments: Fault.allCases)
        func theLeaderGoesAndTheDaemonsCarryOnWithTheSurvivors(_ fault: Fault) throws {
            var options = ClusterOptions(nodes: 2, podsPerNode: 1)
            options.etcdMembers = 3
            options.tls = fault == .partitionLeaderWithTLS
            // A lease of 24 h renewed 1439 min before it ends: the first renewal comes a minute
            // after the lease was acquired, after the fault below.
            options.daemonArguments = ["--subnet-lease-renew-margin", "1439"]
            let acquired = Date()
            try Cluster.with(options) { c in
                let m1 = c.etcd.members[0]
                // Member 1 is the daemons' first endpoint: make it the leader too, so the fault
                // takes both at once.
                try c.etcd.moveLeader(to: m1)
                let (n1, n2) = (c.nodes[0], c.nodes[1])
                try expectConverged(c, within: 10, "before the fault")
                let (before, steady, transient) = (FakePeer(n: 230), FakePeer(n: 231), FakePeer(n: 232))
                try steady.put(c)
                try expectConverged(c, within: 10, "a peer before the fault")
                let leaseIDs = try c.nodes.map { try etcdLeaseID(c, subnet: try $0.subnet()) }
                let pings = try [(n1, n2), (n2, n1)].map {
                    try $0.0.pods[0].startPing($0.1.pods[0].address, interval: 0.2)
                }

                let faultAt = Date()
                switch fault {
                case .killLeader: c.etcd.kill(member: m1)
                case .partitionLeader, .partitionLeaderWithTLS: try c.etcd.partition(member: m1)
                }
                // Changes during the failover, through the survivors (etcdctl retries until a new
                // leader is elected): a new lease, a changed one, and one that comes and goes.
                try before.put(c)
                try steady.put(c, mac: "02:00:00:00:02:31")
                try transient.put(c)
                try transient.delete(c)
                let newLeader = try secondsUntil(within: 20) { try c.etcd.leader() != nil }
                print(
                    "[daemon-e2e] \(fault): a new leader after \(newLeader.map { String(format: "%.1f s", $0) } ?? "-"): \(try c.etcd.leader()?.name ?? "none")"
                )

                // The lease written during the failover is programmed on every node, and the
                // state is exactly etcd's.
                #expect(try expectConverged(c, within: 40, "\(fault): changes made during the failover") != nil)
                for node in c.nodes {
                    let log = node.currentLog
                    // Every event was delivered by the resumed watch, the transient lease's too;
                    // nothing was recovered by listing again.
                    #expect(
                        log.contains("peer added or updated") && log.contains("peer.subnet=\(transient.subnet)"),
                        "\(node.name) never saw the transient lease:\n\(node.logTail(30))")
                    #expect(
                        log.components(separatedBy: "peer.subnet=\(transient.subnet)").count - 1 >= 2,
                        "\(node.name) saw the transient lease come but not go:\n\(node.logTail(30))")
                    #expect(
                        !log.contains("listing again"),
                        "\(node.name) re-listed instead of resuming:\n\(node.logTail(30))")
                }

                // The lease is renewed, through a survivor: a new etcd lease of a day on the key.
                let remaining = max(10, 100 - Date().timeIntervalSince(acquired))
                let renewed = secondsUntil(within: remaining) {
                    c.nodes.allSatisfy { $0.currentLog.contains("renewed the lease") }
                }
                #expect(
                    renewed != nil,
                    "not renewed:\n\(c.nodes.map { "\($0.name): \($0.logTail(10))" }.joined(separator: "\n"))")
                for (node, old) in zip(c.nodes, leaseIDs) {
                    let now = try etcdLeaseID(c, subnet: try node.subnet())
                    #expect(now != old && now != 0, "\(node.name): the key still has etcd lease \(old)")
                    let ttl = try c.etcd.etcdctl("lease", "timetolive", String(now, radix: 16))
                    #expect(ttl.contains("remaining(8"), "\(node.name): \(ttl)")  // 86 xxx s of 86 400
                }

                // The pods kept pinging through all of it.
                for (i, ping) in pings.enumerated() {
                    let (sent, received) = try ping.stop()
                    print(
                        "[daemon-e2e] \(fault): pings n\(i + 1) -> n\(2 - i) through the failover: \(received)/\(sent)")
                    #expect(sent >= 20 && sent - received <= 2, "\(received) of \(sent) pings answered")
                }
                try expectPingMatrixGreen(c, "\(fault): after the failover")
                for node in c.nodes { #expect(node.isRunning, "\(node.name) exited:\n\(node.logTail())") }
                print(
                    "[daemon-e2e] \(fault): took \(String(format: "%.1f", Date().timeIntervalSince(faultAt))) s from the fault"
                )
            }
        }

        /// The etcd lease attached to a subnet's key (0: none).
        func etcdLeaseID(_ c: Cluster, subnet: String) throws -> UInt64 {
            let out = try c.etcd.etcdctl("get", c.etcd.leaseKey(subnet), "-w", "json")
            guard let o = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [String: Any],
                let kv = (o["kvs"] as? [[String: Any]])?.first
            else {
                throw TestFailure("no key for \(subnet): \(out)")
            }
            return (kv["lease"] as? NSNumber)?.uint64Value ?? 0
        }
    }
}
