// 1000 peers in one namespace: a test of correctness at scale (exact counts after the first pass,
// after churn and after repairs), not of speed; `scripts/bench.sh overlay` measures speed.

import Addressing
import Foundation
import Netlink
import Overlay
import TestSupport
import Testing

/// Peer `i` of a large cluster in 10.0.0.0/8: subnet 10.(10 + i/256).(i%256).0/24, off-segment
/// public IP 172.16.(i/200).(i%200 + 1), VtepMAC 02:00:00:00:(i/256):(i%256).
func largePeer(_ i: Int, macSuffix: Int = 0) -> Peer {
    let m = MACAddress(bytes: [0x02, UInt8(macSuffix), 0, 0, UInt8(i / 256), UInt8(i % 256)])
    return Peer(
        subnet: net("10.\(10 + i / 256).\(i % 256).0/24"), publicIP: ip("172.16.\(i / 200).\(i % 200 + 1)"), vtepMAC: m)
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct ScaleTests {
    @Test func aThousandPeersConvergeAndStayExact() throws {
        try withNode { ns in
            let nw = try VXLANBackend(interface: try ns.underlay(), network: net("10.0.0.0/8"))
                .registerNetwork(dataPath: try ns.dataPath())
            try nw.start(subnet: net("10.1.0.0/24"))
            var peers = (0..<1000).map { largePeer($0) }
            let start = Date()
            var report = try nw.reconcile(peers: peers)
            let elapsed = Date().timeIntervalSince(start)
            print("1000-peer vxlan reconcile from scratch: \(Int(elapsed * 1000)) ms")
            #expect(report.programmed == EntryCounts(routes: 1000, neighbours: 1000, fdbEntries: 1000))
            #expect(report.failures.isEmpty)
            try expectExactly(peers, in: ns)
            #expect(try nw.reconcile(peers: peers).changes == 0)

            // Churn: 100 leases gone, 100 VtepMACs changed, 100 new peers; and 50 routes, 50
            // neighbours and 50 FDB entries deleted by hand.
            let gone = peers[0..<100]
            peers.removeFirst(100)
            for i in 0..<100 { peers[i] = largePeer(100 + i, macSuffix: 1) }
            peers += (1000..<1100).map { largePeer($0) }
            try ns.sh(
                (200..<250).map { i in
                    let p = largePeer(i)
                    return "ip route del \(p.subnet); ip neigh del \(p.subnet.firstAddress) dev flannel.1; "
                        + "bridge fdb del \(p.vtepMAC!) dev flannel.1 dst \(p.publicIP) self"
                }.joined(separator: "\n"))
            report = try nw.reconcile(peers: peers)
            #expect(report.failures.isEmpty)
            #expect(report.removed == EntryCounts(routes: 100, neighbours: 100, fdbEntries: 200))
            #expect(report.programmed == EntryCounts(routes: 150, neighbours: 250, fdbEntries: 250))
            try expectExactly(peers, in: ns)
            #expect(try !ns.sh("ip route show dev flannel.1").contains(gone.first!.subnet.description))
            #expect(try nw.reconcile(peers: peers).changes == 0)
        }
    }

    /// `ip route`, `ip neigh` and `bridge fdb` show exactly one entry per peer, each right.
    func expectExactly(_ peers: [Peer], in ns: TestNamespace) throws {
        let routes = Set(try ns.gatewayRoutes(dev: "flannel.1"))
        let neighbours = Set(try ns.permanentNeighbours(dev: "flannel.1"))
        let fdb = Set(try ns.fdbRemotes(dev: "flannel.1"))
        #expect(routes == Set(peers.map { "\($0.subnet) via \($0.subnet.firstAddress) proto 98 onlink" }))
        #expect(neighbours == Set(peers.map { "\($0.subnet.firstAddress) lladdr \($0.vtepMAC!) PERMANENT" }))
        #expect(fdb == Set(peers.map { "\($0.vtepMAC!) dst \($0.publicIP) self permanent" }))
        #expect(try ns.gatewayRoutes(dev: "flannel.1").count == peers.count)
        #expect(try ns.fdbRemotes(dev: "flannel.1").count == peers.count)
    }
}
