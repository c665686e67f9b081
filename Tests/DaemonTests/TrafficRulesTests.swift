// flanneld's traffic rules as a node sees them: the forward rules by default (a FORWARD policy of
// DROP, as Docker sets it, must not cut the pods off), nftables on a host with no iptables at all,
// and a node moved from iptables to nftables and back with nothing of the old backend left.

import Foundation
import TestSupport
import Testing

extension DaemonEndToEnd {
    @Suite struct TrafficRules {
        /// etcd's address: on the underlay, outside the overlay. It has no route to the pods, so a
        /// pod's ping is answered only when the node masquerades it.
        static let outside = ClusterEtcd.address

        static func config(nftables: Bool) -> String {
            #"{"Network":"10.244.0.0/16","SubnetMax":"10.244.199.0","EnableNFTables":\#(nftables),"Backend":{"Type":"vxlan"}}"#
        }

        /// The FLANNEL lines of `iptables-save`, nat and filter.
        static func iptablesRules(_ node: ClusterNode) throws -> [String] {
            try node.namespace.sh("iptables-save").split(separator: "\n").map(String.init).filter {
                $0.contains("FLANNEL")
            }
        }

        /// `nft list table ip flannel-ipv4`, or nil when the table does not exist.
        static func nftTable(_ node: ClusterNode) -> String? {
            try? node.namespace.sh("nft list table ip flannel-ipv4 2>/dev/null")
        }

        @Test func theForwardRulesKeepPodsTalkingUnderAForwardPolicyOfDrop() throws {
            try Cluster.with(ClusterOptions(nodes: 2, podsPerNode: 1)) { c in
                for node in c.nodes { _ = try node.namespace.sh("iptables -w -P FORWARD DROP") }
                try expectPingMatrixGreen(c, "FORWARD DROP, default flags")
                for node in c.nodes {
                    let forward = try node.namespace.sh("iptables -w -S FORWARD")
                    #expect(forward.contains("-j FLANNEL-FWD"), "\(node.name): \(forward)")
                }
                // Without them the policy drops the cross-node traffic: the rules are what let it through.
                for node in c.nodes { try node.restart(extra: ["-iptables-forward-rules=false"]) }
                for node in c.nodes {
                    #expect(try !Self.iptablesRules(node).contains { $0.contains("FLANNEL-FWD") })
                }
                #expect(try c.pingMatrixFailures().count == 2)
                for node in c.nodes { try node.restart() }
                try expectPingMatrixGreen(c, "forward rules back")
            }
        }

        @Test func aNodeWithoutIPTablesMasqueradesThroughNFTablesAndRepairsItsTable() throws {
            try Cluster.with(ClusterOptions(nodes: 0, podsPerNode: 0)) { c in
                try c.etcd.put(c.options.prefix + "/config", Self.config(nftables: true))
                let node = try c.addNode(start: false)
                // A PATH with nft and nothing else: no iptables command can run.
                let bin = node.directory + "/nft-only"
                try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
                try FileManager.default.createSymbolicLink(atPath: bin + "/nft", withDestinationPath: "/usr/sbin/nft")
                node.environment = ["PATH": bin]
                node.arguments = ["--ip-masq"]
                try node.start()
                try node.waitUntilReady()
                let pod = try node.addPod()
                #expect((try? c.etcd.namespace.sh("ip route get \(pod.address)")) == nil, "the outside routes the pods")

                #expect(pod.ping(Self.outside), "no masquerade:\n\(node.logTail())")
                let table = try #require(Self.nftTable(node), "\(node.logTail())")
                for part in [
                    "chain postrtg", "chain forward", "masquerade fully-random", "ip saddr 10.244.0.0/16 accept",
                ] {
                    #expect(table.contains(part), "\(table)")
                }
                let ruleset = try node.namespace.sh("nft list ruleset")
                #expect(!ruleset.contains("FLANNEL"), "an iptables chain:\n\(ruleset)")
                #expect(!node.log.contains("iptables"), "\(node.logTail())")

                _ = try node.namespace.sh("nft flush ruleset")
                let back = secondsUntil(within: 15) { Self.nftTable(node) == table }
                #expect(back != nil, "not restored:\n\(node.logTail())")
                #expect(pod.ping(Self.outside))
            }
        }

        @Test func aNodeMovesFromIPTablesToNFTablesAndBackLeavingNothingOfTheOld() throws {
            var options = ClusterOptions(nodes: 2, podsPerNode: 1)
            options.daemonArguments = ["--ip-masq"]
            try Cluster.with(options) { c in
                let (n1, n2) = (c.nodes[0], c.nodes[1])
                let installed = try Self.iptablesRules(n1)
                #expect(installed.count == 12, "\(installed)")
                #expect(Self.nftTable(n1) == nil)
                // A pod on the other node pings one on the moving node all along.
                let ping = try n2.pods[0].startPing(n1.pods[0].address, interval: 0.2)
                for nftables in [true, false] {
                    let step = nftables ? "to nftables" : "back to iptables"
                    try c.etcd.put(c.options.prefix + "/config", Self.config(nftables: nftables))
                    try n1.restart()
                    let rules = try Self.iptablesRules(n1)
                    if nftables {
                        #expect(rules.isEmpty, "\(step): \(rules)")
                        #expect(Self.nftTable(n1)?.contains("chain postrtg") == true, "\(step)\n\(n1.logTail())")
                    } else {
                        #expect(rules == installed, "\(step): \(rules)")
                        #expect(try !n1.namespace.sh("nft list tables").contains("flannel"), "\(step)")
                    }
                    #expect(n1.pods[0].ping(Self.outside), "\(step): no masquerade\n\(n1.logTail())")
                    try expectPingMatrixGreen(c, step)
                }
                let (sent, received) = try ping.stop()
                #expect(sent > 0 && received * 10 >= sent * 9, "\(received) of \(sent) pings answered")
            }
        }
    }
}
