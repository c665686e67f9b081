// What podnetd takes from etcd must not become arbitrary kernel state (issue 8, items 4 and 5),
// checked against the kernel in throw-away namespaces: routes carry podnet's route protocol and
// are removed by it wherever they point, also after a restart and a change of Network; peers with
// hostile values get no route, neighbour or FDB entry.

import Addressing
import Netlink
import Overlay
import TestSupport
import Testing

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct TrustKernelTests {
    @Test func podnetsRoutesAreMarkedAndRemovedWhereverTheyPointAlsoAfterARestart() throws {
        try withNode { ns in
            let first = try VXLANBackend(interface: try ns.underlay(), network: network).registerNetwork(
                dataPath: try ns.dataPath())
            try first.start(subnet: net("10.5.1.0/24"))
            _ = try first.reconcile(peers: [peerA])
            #expect(try ns.lines("ip route show proto 98") == ["10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"])

            // What an earlier podnetd programmed for hostile leases (one into the tunnel for the
            // etcd server's address, one for the metadata address on the underlay), and routes
            // an operator added outside the network, which are not podnet's.
            try ns.sh(
                """
                ip route replace 192.168.77.200/32 via 10.5.9.0 dev flannel.1 onlink proto 98
                ip route replace 169.254.169.254/32 via 192.168.77.2 dev ul0 proto 98
                ip route replace 192.168.77.201/32 via 10.5.9.0 dev flannel.1 onlink
                ip route replace 10.77.0.0/24 via 192.168.77.2 dev ul0 proto static
                """)

            // A restart: a new data path and network, the same peers.
            let second = try VXLANBackend(interface: try ns.underlay(), network: network).registerNetwork(
                dataPath: try ns.dataPath())
            try second.start(subnet: net("10.5.1.0/24"))
            let report = try second.reconcile(peers: [peerA])
            #expect(report.removed.routes == 2 && report.programmed == EntryCounts())
            #expect(try ns.lines("ip route show proto 98") == ["10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"])
            #expect(
                try ns.lines("ip route show 192.168.77.201/32").count == 1,
                "an operator's route outside the network stays")
            #expect(try ns.lines("ip route show 10.77.0.0/24").count == 1)
            #expect(try ns.lines("ip route show 169.254.169.254").isEmpty)

            // The Network changes (10.5/16 -> 10.6/16) and podnetd restarts: the route it installed
            // into the old network lies outside the new one, and still goes.
            let moved = IPNetwork("10.6.0.0/16")!
            let third = try VXLANBackend(interface: try ns.underlay(), network: moved).registerNetwork(
                dataPath: try ns.dataPath())
            try third.start(subnet: net("10.6.1.0/24"))
            let peer = Peer(subnet: net("10.6.2.0/24"), publicIP: ip("192.168.77.2"), vtepMAC: mac("02:00:00:00:00:02"))
            _ = try third.reconcile(peers: [peer])
            #expect(try ns.lines("ip route show proto 98") == ["10.6.2.0/24 via 10.6.2.0 dev flannel.1 onlink"])
            #expect(try ns.lines("ip route show 10.5.2.0/24").isEmpty)
        }
    }

    @Test func aRouteFlanneldInstalledIsTakenOverOnce() throws {
        try withNode { ns in
            let nw = try HostGWBackend(interface: try ns.underlay(), network: network).registerNetwork(
                dataPath: try ns.dataPath())
            try nw.start(subnet: net("10.5.1.0/24"))
            // flanneld's host-gw route: RTPROT_BOOT, exactly the forwarding podnetd wants.
            try ns.sh("ip route add 10.5.2.0/24 via 192.168.77.2 dev ul0")
            let peers = [Peer(subnet: net("10.5.2.0/24"), publicIP: ip("192.168.77.2"))]
            #expect(try nw.reconcile(peers: peers).programmed.routes == 1)
            #expect(try ns.lines("ip route show 10.5.2.0/24") == ["10.5.2.0/24 via 192.168.77.2 dev ul0 proto 98"])
            #expect(try nw.reconcile(peers: peers).changes == 0)
        }
    }

    @Test func peersWithHostileValuesGetNoKernelState() throws {
        try withNode { ns in
            let nw = try VXLANBackend(interface: try ns.underlay(), network: network).registerNetwork(
                dataPath: try ns.dataPath())
            try nw.start(subnet: net("10.5.1.0/24"))
            let m = mac("02:00:00:00:00:40")
            let hostile = [
                Peer(subnet: net("192.168.77.2/32"), publicIP: ip("192.168.77.2"), vtepMAC: m),  // outside the network
                Peer(subnet: net("169.254.169.254/32"), publicIP: ip("192.168.77.2"), vtepMAC: m),
                Peer(subnet: net("10.5.10.0/24"), publicIP: ip("127.0.0.1"), vtepMAC: mac("02:00:00:00:00:10")),
                Peer(subnet: net("10.5.11.0/24"), publicIP: ip("0.0.0.0"), vtepMAC: mac("02:00:00:00:00:11")),
                Peer(subnet: net("10.5.12.0/24"), publicIP: ip("255.255.255.255"), vtepMAC: mac("02:00:00:00:00:12")),
                Peer(subnet: net("10.5.13.0/24"), publicIP: ip("224.0.0.5"), vtepMAC: mac("02:00:00:00:00:13")),
                // this node
                Peer(subnet: net("10.5.14.0/24"), publicIP: ip("192.168.77.1"), vtepMAC: mac("02:00:00:00:00:14")),
                // in the overlay
                Peer(subnet: net("10.5.15.0/24"), publicIP: ip("10.5.2.9"), vtepMAC: mac("02:00:00:00:00:15")),
                Peer(subnet: net("10.5.16.0/24"), publicIP: ip("192.168.77.16"), vtepMAC: mac("ff:ff:ff:ff:ff:ff")),
                Peer(subnet: net("10.5.17.0/24"), publicIP: ip("192.168.77.17"), vtepMAC: mac("01:00:5e:00:00:01")),
                Peer(subnet: net("10.5.18.0/24"), publicIP: ip("192.168.77.18"), vtepMAC: mac("00:00:00:00:00:00")),
            ]
            let report = try nw.reconcile(peers: hostile + [peerA])
            #expect(report.programmed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
            #expect(Set(report.skipped.keys) == Set(hostile.map(\.subnet)), "\(report.skipped)")
            for p in hostile { #expect(try nw.setPeer(p).changes == 0, "\(p)") }
            try expectOnlyPeerA(ns)
            #expect(try ns.lines("ip route show 192.168.77.2").isEmpty)
            #expect(try ns.lines("ip route show 169.254.169.254").isEmpty)

            // A good peer whose lease turns hostile loses its entries.
            var turned = peerB
            _ = try nw.setPeer(turned)
            turned.vtepMAC = mac("ff:ff:ff:ff:ff:ff")
            #expect(try nw.setPeer(turned).removed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
            try expectOnlyPeerA(ns)
        }
    }

    func expectOnlyPeerA(_ ns: TestNamespace) throws {
        #expect(try ns.lines("ip route show proto 98") == ["10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"])
        #expect(try ns.permanentNeighbours(dev: "flannel.1") == ["10.5.2.0 lladdr 02:00:00:00:00:02 PERMANENT"])
        #expect(try ns.fdbRemotes(dev: "flannel.1") == ["02:00:00:00:00:02 dst 192.168.77.2 self permanent"])
    }
}
