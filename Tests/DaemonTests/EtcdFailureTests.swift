// podnetd end to end when etcd misbehaves or guards itself: an outage, a watch that falls behind a
// compaction, nodes racing for the last subnets, TLS with client certificates, and
// username/password auth.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct EtcdFailures {
        @Test func anEtcdOutageKeepsTrafficAndDaemonsUpAndChangesConvergeAfterwards() throws {
            try Cluster.with(ClusterOptions(nodes: 3, podsPerNode: 1)) { c in
                let (gone, changed, added) = (FakePeer(n: 200), FakePeer(n: 201), FakePeer(n: 202))
                try gone.put(c)
                try changed.put(c)
                try expectConverged(c, within: 10, "fake peers programmed")
                let pods = c.nodes.map { $0.pods[0] }
                let pings = try (0..<3).map { i in try pods[i].startPing(pods[(i + 1) % 3].address, interval: 0.2) }

                // etcd down for 30 s.
                c.etcd.stop()
                let down = Date()
                while Date().timeIntervalSince(down) < 30 {
                    usleep(1_000_000)
                    for node in c.nodes {
                        #expect(node.isRunning, "\(node.name) exited while etcd was down:\n\(node.logTail())")
                    }
                }
                try expectPingMatrixGreen(c, "after 30 s without etcd")

                // etcd back, but cut off from the nodes: changes made now reach them only later.
                try c.etcd.disconnect()
                try c.etcd.start()
                try gone.delete(c)
                try changed.put(c, mac: "02:00:00:00:01:01")
                try added.put(c)
                let leases = try c.leases()
                usleep(1_000_000)
                for node in c.nodes {
                    #expect(
                        try node.kernelEntries() != c.expectedEntries(on: node, leases: leases),
                        "\(node.name) saw changes made while etcd was out of its reach")
                }
                try c.etcd.reconnect()
                // Reconnecting waits for the watch's backoff (at most 5 s) and ARP on the switch.
                #expect(
                    try expectConverged(c, leases: leases, within: 20, "changes made while disconnected converged")
                        != nil)

                for (i, ping) in pings.enumerated() {
                    let (sent, received) = try ping.stop()
                    print(
                        "[daemon-e2e] ping \(pods[i].name) -> \(pods[(i + 1) % 3].name) through the outage: \(received)/\(sent)"
                    )
                    #expect(
                        sent >= 150 && sent - received <= 2, "\(pods[i].name): \(received) of \(sent) pings answered")
                }
                for node in c.nodes { #expect(node.isRunning, "\(node.name) exited:\n\(node.logTail())") }
            }
        }

        @Test func aWatchBehindACompactionEndsWithExactlyEtcdsState() throws {
            try Cluster.with(ClusterOptions(nodes: 3, podsPerNode: 0)) { c in
                let n1 = c.nodes[0]
                let (a, b, d, e, f) = (
                    FakePeer(n: 210), FakePeer(n: 211), FakePeer(n: 212), FakePeer(n: 213), FakePeer(n: 214)
                )
                for p in [a, b, d] { try p.put(c) }
                try expectConverged(c, within: 10, "fake peers programmed")

                // n1 frozen; etcd restarted meanwhile, so n1's watch stream is gone and it must
                // resume from its last revision (an open stream would just deliver the events TCP
                // buffered for the frozen process); changes; then history compacted past it.
                try n1.freeze()
                c.etcd.stop()
                try c.etcd.start()
                try a.delete(c)  // a peer leaves
                try b.put(c, mac: "02:00:00:00:02:11")  // a peer's VtepMAC changes
                try e.put(c)  // a peer arrives
                try f.put(c)
                try f.delete(c)  // one comes and goes unseen
                let revision = try c.etcd.revision()
                try c.etcd.etcdctl("compact", "\(revision)")
                let leases = try c.leases()
                try n1.thaw()

                let caughtUp = secondsUntil(within: 15) { n1.log.contains("fell behind a compaction") }
                report("n1 noticed the compaction", caughtUp)
                #expect(caughtUp != nil, "n1 never hit the compaction:\n\(n1.logTail())")
                #expect(try expectConverged(c, leases: leases, within: 10, "state after the compaction") != nil)
                #expect(n1.isRunning)
            }
        }

        @Test func daemonsRacingForTheLastSubnetsEndWithDistinctLeases() throws {
            // A /22 in /24s leaves three subnets (flannel skips the first): four daemons started
            // at once get three distinct leases, and the fourth a clear error. etcd is frozen while
            // they start, so that they all list the (empty) leases before any claims one: two of
            // them must pick the same subnet, and one of those loses the claim and retries.
            var options = ClusterOptions(nodes: 0, podsPerNode: 0)
            options.network = "10.244.0.0/22"
            options.subnetLength = 24
            try Cluster.with(options) { c in
                let nodes = try (0..<4).map { _ in try c.addNode(start: false) }
                try c.etcd.freeze()
                for n in nodes { try n.start() }
                usleep(1_000_000)  // every daemon waits for etcd's first answer
                try c.etcd.thaw()
                let settled = secondsUntil(within: 15) {
                    nodes.allSatisfy { $0.currentLog.contains("subnet file written") || !$0.isRunning }
                }
                #expect(settled != nil, "\(nodes.map { "\($0.name): \($0.logTail(5))" }.joined(separator: "\n"))")
                let ready = nodes.filter { $0.isRunning && FileManager.default.fileExists(atPath: $0.subnetFile) }
                let failed = nodes.filter { !$0.isRunning }
                #expect(
                    ready.count == 3 && failed.count == 1,
                    "\(nodes.map { "\($0.name): \($0.logTail(5))" }.joined(separator: "\n"))")
                let subnets = try ready.map { try $0.subnet() }
                #expect(Set(subnets) == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"], "\(subnets)")
                let leases = try c.leases()
                #expect(
                    Set(leases.map(\.subnet)) == Set(subnets)
                        && Set(leases.map(\.publicIP)) == Set(ready.map(\.address)))
                for n in failed {
                    #expect(n.exitStatus != 0)
                    #expect(n.log.contains("out of subnets"), "\(n.logTail())")
                    #expect(!FileManager.default.fileExists(atPath: n.subnetFile))
                }
                let retries = nodes.filter { $0.log.contains("another node claimed the subnet first") }.count
                print("[daemon-e2e] subnet race: \(retries) of 4 daemons lost a claim and retried")
                #expect(retries > 0, "no daemon lost a claim: the race did not happen")
                try expectConverged(c, ready, leases: leases, within: 10, "racing nodes programmed each other")
            }
        }

        @Test func tlsWithClientCertificatesAndAWrongCA() throws {
            var options = ClusterOptions(nodes: 2, podsPerNode: 1)
            options.tls = true
            try Cluster.with(options) { c in
                #expect(c.etcd.endpoint.hasPrefix("https://"))
                try expectPingMatrixGreen(c, "over TLS")
                try expectConverged(c, within: 10, "over TLS")

                // A CA that did not sign etcd's certificate: no lease, no subnet file, a clear log.
                let other = try c.makeTLSFiles(in: c.directory + "/other-tls", name: "other")
                let n3 = try c.addNode(start: false, arguments: ["--etcd-cafile", other.caFile])
                try n3.start()
                let said = secondsUntil(within: 10) { n3.log.lowercased().contains("certificate") || !n3.isRunning }
                print(
                    "[daemon-e2e] podnetd with a wrong CA (\(n3.isRunning ? "still running" : "exited \(n3.exitStatus!)")):\n\(n3.logTail(4))"
                )
                #expect(said != nil, "no word about the certificate:\n\(n3.logTail())")
                #expect(n3.exitStatus ?? 1 != 0)
                #expect(!FileManager.default.fileExists(atPath: n3.subnetFile))
                #expect(try c.leases().count == 2)
            }
        }

        @Test func usernameAndPasswordAuthAndAWrongPassword() throws {
            var options = ClusterOptions(nodes: 2, podsPerNode: 1)
            options.credentials = ("podnet", "s3cret-pw")
            try Cluster.with(options) { c in
                try expectPingMatrixGreen(c, "with etcd auth")
                try expectConverged(c, within: 10, "with etcd auth")

                let n3 = try c.addNode(start: false, arguments: ["--etcd-password", "wrong"])
                try n3.start()
                let said = secondsUntil(within: 10) {
                    n3.log.contains("etcd authentication of user \"podnet\"") || !n3.isRunning
                }
                print(
                    "[daemon-e2e] podnetd with a wrong password (\(n3.isRunning ? "still running" : "exited \(n3.exitStatus!)")):\n\(n3.logTail(4))"
                )
                #expect(said != nil, "no word about authentication:\n\(n3.logTail())")
                #expect(n3.exitStatus ?? 1 != 0)
                #expect(!FileManager.default.fileExists(atPath: n3.subnetFile))
                #expect(try c.leases().count == 2)
            }
        }
    }
}
