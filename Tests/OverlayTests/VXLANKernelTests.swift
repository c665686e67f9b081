// The vxlan backend against the kernel, each test in namespaces it creates and deletes: device
// ensure, per-peer entries as `ip`/`bridge` show them, reconcile repairs, DirectRouting, and
// pods on two nodes pinging across the overlay.

import Addressing
import Netlink
import Overlay
import TestSupport
import Testing

/// A node's view of another as a peer.
func peer(_ node: TestNamespace, subnet: String, publicIP: String, device: String = "flannel.1") throws -> Peer {
    let m = try #require(
        MACAddress(try node.sh("cat /sys/class/net/\(device)/address").trimmingCharacters(in: .whitespacesAndNewlines)))
    return Peer(subnet: net(subnet), publicIP: ip(publicIP), vtepMAC: m)
}

/// A bridge `cni0` holding `gateway` (a pod-ish address) behind the node's overlay device.
func addPodBridge(_ node: TestNamespace, gateway: String) throws {
    try node.sh("ip link add cni0 type bridge && ip addr add \(gateway) dev cni0 && ip link set cni0 up")
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct VXLANKernelTests {
    @Test func ensureKeepsTheDeviceAndMACCorrectsMTUAndRecreatesAnIncompatibleDevice() throws {
        try withNode { ns in
            let iface = try ns.underlay()
            let first = try VXLANBackend(interface: iface, network: network).registerNetwork(
                dataPath: try ns.dataPath())
            try first.start(subnet: net("10.5.1.0/24"))
            let mac1 = try #require(first.leaseAttributes.vtepMAC)
            let index1 = try ns.sh("cat /sys/class/net/flannel.1/ifindex")
            let details = try ns.sh("ip -d link show flannel.1")
            #expect(details.contains("mtu 1450"))
            #expect(details.contains("vxlan id 1 local 192.168.77.1 dev ul0"))
            #expect(details.contains("dstport 8472 nolearning"))
            #expect(try ns.lines("ip -4 addr show dev flannel.1").contains { $0.hasPrefix("inet 10.5.1.0/32") })

            // A restart: the same device and MAC.
            try ns.sh("ip link set flannel.1 mtu 1300")
            let second = try VXLANBackend(interface: iface, network: network).registerNetwork(
                dataPath: try ns.dataPath())
            #expect(second.leaseAttributes.vtepMAC == mac1)
            #expect(try ns.sh("cat /sys/class/net/flannel.1/ifindex") == index1)
            #expect(try ns.sh("cat /sys/class/net/flannel.1/mtu").hasPrefix("1450"))

            // Programmed peers, then the device replaced by hand with another port: recreated with
            // its MAC, everything on it programmed again.
            try second.start(subnet: net("10.5.1.0/24"))
            _ = try second.reconcile(peers: [peerA, peerB])
            try ns.sh(
                "ip link del flannel.1 && ip link add flannel.1 type vxlan id 1 local 192.168.77.1 dev ul0 dstport 4789 nolearning"
            )
            var report = try second.reconcile(peers: [peerA, peerB])
            #expect(report.deviceRecreated && !report.leaseAttributesChanged)
            #expect(try ns.sh("ip -d link show flannel.1").contains("dstport 8472"))
            #expect(try ns.sh("cat /sys/class/net/flannel.1/address").hasPrefix(mac1.description))
            try expectProgrammed(ns)

            // Deleted by hand: the same.
            try ns.sh("ip link del flannel.1")
            report = try second.reconcile(peers: [peerA, peerB])
            #expect(report.deviceRecreated && second.leaseAttributes.vtepMAC == mac1)
            try expectProgrammed(ns)
        }
    }

    func expectProgrammed(_ ns: TestNamespace) throws {
        #expect(try ns.gatewayRoutes(dev: "flannel.1").count == 2)
        #expect(try ns.permanentNeighbours(dev: "flannel.1").count == 2)
        #expect(try ns.fdbRemotes(dev: "flannel.1").count == 2)
        #expect(try ns.lines("ip -4 addr show dev flannel.1").contains { $0.hasPrefix("inet 10.5.1.0/32") })
        #expect(try ns.sh("ip link show flannel.1").contains("UP"))
    }

    @Test func eachPeerGetsExactlyOneRouteNeighbourAndFDBEntry() throws {
        try withNode { ns in
            let nw = try VXLANBackend(interface: try ns.underlay(), network: network).registerNetwork(
                dataPath: try ns.dataPath())
            try nw.start(subnet: net("10.5.1.0/24"))
            let own = Peer(
                subnet: net("10.5.1.0/24"), publicIP: ip("192.168.77.1"), vtepMAC: nw.leaseAttributes.vtepMAC)
            let c = Peer(subnet: net("10.5.4.0/24"), publicIP: ip("192.168.77.4"), vtepMAC: mac("02:00:00:00:00:04"))
            let report = try nw.reconcile(peers: [own, peerA, peerB, c])
            #expect(report.programmed == EntryCounts(routes: 3, neighbours: 3, fdbEntries: 3))
            #expect(
                try ns.gatewayRoutes(dev: "flannel.1").sorted() == [
                    "10.5.2.0/24 via 10.5.2.0 proto 98 onlink", "10.5.3.0/24 via 10.5.3.0 proto 98 onlink",
                    "10.5.4.0/24 via 10.5.4.0 proto 98 onlink",
                ])
            #expect(
                try ns.permanentNeighbours(dev: "flannel.1").sorted() == [
                    "10.5.2.0 lladdr 02:00:00:00:00:02 PERMANENT", "10.5.3.0 lladdr 02:00:00:00:00:03 PERMANENT",
                    "10.5.4.0 lladdr 02:00:00:00:00:04 PERMANENT",
                ])
            #expect(
                try ns.fdbRemotes(dev: "flannel.1").sorted() == [
                    "02:00:00:00:00:02 dst 192.168.77.2 self permanent",
                    "02:00:00:00:00:03 dst 172.16.0.3 self permanent",
                    "02:00:00:00:00:04 dst 192.168.77.4 self permanent",
                ])
            #expect(try nw.reconcile(peers: [own, peerA, peerB, c]).changes == 0)
        }
    }

    @Test func reconcileRemovesStaleRestoresDeletedAndFollowsAVtepMACChange() throws {
        try withNode { ns in
            // Left over from a previous run: a peer whose lease is gone.
            let dp = try ns.dataPath()
            let nw = try VXLANBackend(interface: try ns.underlay(), network: network).registerNetwork(dataPath: dp)
            try nw.start(subnet: net("10.5.1.0/24"))
            try ns.sh(
                """
                ip neigh replace 10.5.9.0 lladdr 02:00:00:00:00:09 dev flannel.1 nud permanent
                bridge fdb append 02:00:00:00:00:09 dev flannel.1 dst 192.168.77.9 self permanent
                ip route replace 10.5.9.0/24 via 10.5.9.0 dev flannel.1 onlink
                """)
            var report = try nw.reconcile(peers: [peerA, peerB])
            #expect(report.removed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
            #expect(try !ns.sh("ip route; ip neigh; bridge fdb").contains("10.5.9.0"))
            #expect(try !ns.sh("bridge fdb show dev flannel.1").contains("02:00:00:00:00:09"))

            // Deleted by hand.
            try ns.sh(
                """
                ip route del 10.5.2.0/24
                ip neigh del 10.5.3.0 dev flannel.1
                bridge fdb del 02:00:00:00:00:03 dev flannel.1 dst 172.16.0.3 self
                """)
            report = try nw.reconcile(peers: [peerA, peerB])
            #expect(report.programmed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
            #expect(report.removed == EntryCounts())
            #expect(try ns.gatewayRoutes(dev: "flannel.1").count == 2)
            #expect(try ns.permanentNeighbours(dev: "flannel.1").count == 2)
            #expect(try ns.fdbRemotes(dev: "flannel.1").count == 2)

            // Peer A restarted with a new device: new VtepMAC; its old FDB entry must go.
            var moved = peerA
            moved.vtepMAC = mac("02:00:00:00:00:22")
            report = try nw.reconcile(peers: [moved, peerB])
            #expect(report.removed == EntryCounts(fdbEntries: 1))
            #expect(
                try ns.fdbRemotes(dev: "flannel.1").sorted() == [
                    "02:00:00:00:00:03 dst 172.16.0.3 self permanent",
                    "02:00:00:00:00:22 dst 192.168.77.2 self permanent",
                ])
            #expect(
                try ns.permanentNeighbours(dev: "flannel.1").contains("10.5.2.0 lladdr 02:00:00:00:00:22 PERMANENT"))

            // The same through the event path, without dumps.
            _ = try nw.setPeer(peerA)
            #expect(try ns.fdbRemotes(dev: "flannel.1").contains("02:00:00:00:00:02 dst 192.168.77.2 self permanent"))
            #expect(try !ns.sh("bridge fdb show dev flannel.1").contains("02:00:00:00:00:22"))
            _ = try nw.removePeer(subnet: peerB.subnet)
            #expect(try ns.gatewayRoutes(dev: "flannel.1") == ["10.5.2.0/24 via 10.5.2.0 proto 98 onlink"])
            #expect(try ns.permanentNeighbours(dev: "flannel.1").count == 1)
            #expect(try ns.fdbRemotes(dev: "flannel.1").count == 1)
        }
    }

    @Test func podsOnTwoNodesPingAcrossTheOverlay() throws {
        try withUnderlay { a, b in
            let na = try VXLANBackend(interface: try a.underlay(), network: network).registerNetwork(
                dataPath: try a.dataPath())
            let nb = try VXLANBackend(interface: try b.underlay(), network: network).registerNetwork(
                dataPath: try b.dataPath())
            try na.start(subnet: net("10.5.1.0/24"))
            try nb.start(subnet: net("10.5.2.0/24"))
            try addPodBridge(a, gateway: "10.5.1.1/24")
            try addPodBridge(b, gateway: "10.5.2.1/24")
            _ = try na.reconcile(peers: [try peer(b, subnet: "10.5.2.0/24", publicIP: "192.168.77.2")])
            _ = try nb.reconcile(peers: [try peer(a, subnet: "10.5.1.0/24", publicIP: "192.168.77.1")])
            #expect(a.ping("10.5.2.1", from: "10.5.1.1"))
            #expect(b.ping("10.5.1.1", from: "10.5.2.1"))
            // Through the tunnel, not around it.
            let sent = try a.sh("cat /sys/class/net/flannel.1/statistics/tx_packets").trimmingCharacters(
                in: .whitespacesAndNewlines)
            #expect((Int(sent) ?? 0) > 0)
            // Peer B's lease goes: unreachable again.
            _ = try na.reconcile(peers: [])
            #expect(!a.ping("10.5.2.1", from: "10.5.1.1"))
        }
    }

    @Test func directRoutingUsesThePlainRouteOnTheSegmentAndTheTunnelBeyond() throws {
        try withUnderlay { a, b in
            let cfg = VXLANConfig(directRouting: true)
            let na = try VXLANBackend(interface: try a.underlay(), network: network, config: cfg).registerNetwork(
                dataPath: try a.dataPath())
            let nb = try VXLANBackend(interface: try b.underlay(), network: network, config: cfg).registerNetwork(
                dataPath: try b.dataPath())
            try na.start(subnet: net("10.5.1.0/24"))
            try nb.start(subnet: net("10.5.2.0/24"))
            try addPodBridge(a, gateway: "10.5.1.1/24")
            try addPodBridge(b, gateway: "10.5.2.1/24")
            let far = Peer(subnet: net("10.5.3.0/24"), publicIP: ip("172.16.0.3"), vtepMAC: mac("02:00:00:00:00:03"))
            _ = try na.reconcile(peers: [try peer(b, subnet: "10.5.2.0/24", publicIP: "192.168.77.2"), far])
            _ = try nb.reconcile(peers: [try peer(a, subnet: "10.5.1.0/24", publicIP: "192.168.77.1")])
            #expect(try a.lines("ip route show 10.5.2.0/24") == ["10.5.2.0/24 via 192.168.77.2 dev ul0 proto 98"])
            #expect(try a.gatewayRoutes(dev: "flannel.1") == ["10.5.3.0/24 via 10.5.3.0 proto 98 onlink"])
            #expect(try a.permanentNeighbours(dev: "flannel.1") == ["10.5.3.0 lladdr 02:00:00:00:00:03 PERMANENT"])
            #expect(try a.fdbRemotes(dev: "flannel.1") == ["02:00:00:00:00:03 dst 172.16.0.3 self permanent"])
            // Not through the tunnel: its counter stays put while pings go through.
            let tx = {
                try a.sh("cat /sys/class/net/flannel.1/statistics/tx_packets").trimmingCharacters(
                    in: .whitespacesAndNewlines)
            }
            let before = try tx()
            #expect(a.ping("10.5.2.1", from: "10.5.1.1"))
            #expect(try tx() == before)
        }
    }
}
