// The comparison against the kernel, in namespaces each test creates and deletes: entries are
// written as `ip route`, `ip neigh` and `bridge fdb` print them, and drift made with those tools
// is named exactly, then repaired by reconcile.

import Addressing
import Foundation
import NetNS
import Netlink
import NodeCheck
import Overlay
import TestSupport
import Testing

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct KernelDriftTests {
    /// A vxlan node at 192.168.50.11/24 on `ul0` (a veth whose peer namespace stays silent),
    /// leased 10.244.1.0/24, with two peers programmed by reconcile.
    private func withVXLANNode(_ body: (TestNamespace, TestNode.Kernel) throws -> Void) throws {
        try withNamespaces(2) { ns in
            try sh("ip link add ul0 netns \(ns[0].name) type veth peer name ul0 netns \(ns[1].name)")
            for (i, n) in ns.enumerated() {
                try n.sh("ip addr add 192.168.50.\(11 + i)/24 dev ul0 && ip link set ul0 up")
            }
            let dp = try NetworkNamespace(path: ns[0].path).run { try KernelDataPath() }
            let node = try TestNode.Kernel(dataPath: dp)
            try body(ns[0], node)
        }
    }

    @Test func entriesReadAsIPAndBridgePrintThem() throws {
        try withVXLANNode { ns, node in
            let inspection = try node.inspect()
            #expect(inspection.isConsistent)
            // The device deleted, and everything on it with it: the inspection says what it wants.
            try ns.sh("ip link del flannel.1")
            let wanted = try node.inspect().peers.flatMap { p -> [String] in
                [p.route, p.neighbour, p.fdb].compactMap { state -> String? in
                    if case .missing(let w)? = state { return w }
                    return nil
                }
            }
            _ = try node.reconcile()
            let routes = try ns.sh("ip -4 route show").replacingOccurrences(of: " proto 98", with: "")
            let neighbours = try ns.sh("ip -4 neigh show nud permanent")
            let fdb = try ns.sh("bridge fdb show")
            let lines = Set(
                (routes + neighbours + fdb).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) })
            #expect(wanted.count == 6)
            for w in wanted { #expect(lines.contains(w), "not printed by ip/bridge: \(w)") }
        }
    }

    @Test func driftMadeByHandIsNamedAndRepaired() throws {
        try withVXLANNode { ns, node in
            #expect(try node.report().problems == [])
            try ns.sh("ip route del 10.244.2.0/24")
            try ns.sh("ip neigh del 10.244.3.0 dev flannel.1")
            try ns.sh("bridge fdb del 02:00:00:00:02:01 dev flannel.1 dst 192.168.50.12")
            try ns.sh("ip route add 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink proto 98")
            let report = try node.report()
            #expect(
                report.problems.map(\.message) == [
                    "10.244.2.0/24: route missing (want: 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink)",
                    "10.244.2.0/24: fdb entry missing (want: 02:00:00:00:02:01 dev flannel.1 dst 192.168.50.12 self permanent)",
                    "10.244.3.0/24: neighbour missing (want: 10.244.3.0 dev flannel.1 lladdr 02:00:00:00:03:01 PERMANENT)",
                    "stale route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink (no lease)",
                ])
            #expect(report.peers.map(\.verdict) == [.missing, .missing, .stale])
            let repairs = try node.reconcile()
            #expect(repairs.changes == 4)
            #expect(try node.report().problems == [])
        }
    }
}

extension TestNode {
    /// The same node as `TestNode`, on a real kernel.
    struct Kernel {
        let dp: any DataPath
        let eth0: ExternalInterface
        let config: NetworkConfig
        let network: any OverlayNetwork
        let own: Lease
        let leases: [Lease]

        init(dataPath: any DataPath) throws {
            dp = dataPath
            eth0 = try ExternalInterface.find(name: "ul0", dataPath: dataPath)
            var config = try NetworkConfig(json: Data(#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#.utf8))
            config.vxlan.mac = mac("02:00:00:00:01:01")
            self.config = config
            network = try config.makeBackend(interface: eth0).registerNetwork(dataPath: dataPath)
            try network.start(subnet: net("10.244.1.0/24"))
            own = Lease(subnet: net("10.244.1.0/24"), attributes: network.leaseAttributes, etcdLease: 1)
            leases = [
                own, lease("10.244.2.0/24", "192.168.50.12", mac: "02:00:00:00:02:01"),
                lease("10.244.3.0/24", "192.168.50.13", mac: "02:00:00:00:03:01"),
            ]
            _ = try reconcile()
        }

        var nodeAddresses: [IPAddress] { [eth0.address.address, eth0.publicIP] }
        var peers: [Peer] { config.peers(from: leases, own: own.subnet, nodeAddresses: nodeAddresses) }
        func reconcile() throws -> ReconcileReport { try network.reconcile(peers: peers) }
        func inspect() throws -> Inspection {
            try config.inspect(interface: eth0, ownSubnet: own.subnet, peers: peers, dataPath: dp)
        }
        func report() throws -> NodeReport {
            NodeReport(
                config: config, own: own, leases: leases, nodeAddresses: nodeAddresses, inspection: try inspect(),
                subnetEnv: [
                    "FLANNEL_NETWORK": "10.244.0.0/16", "FLANNEL_SUBNET": "10.244.1.1/24", "FLANNEL_MTU": "1450",
                ], now: now)
        }
    }
}
