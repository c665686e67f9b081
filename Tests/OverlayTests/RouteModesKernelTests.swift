// host-gw and ipip against the kernel, each test in namespaces it creates and deletes.

import Addressing
import Netlink
import Overlay
import TestSupport
import Testing

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct HostGWKernelTests {
    @Test func podsOnTwoNodesPingOverPlainRoutes() throws {
        try withUnderlay { a, b in
            let na = try HostGWBackend(interface: try a.underlay(), network: network).registerNetwork(
                dataPath: try a.dataPath())
            let nb = try HostGWBackend(interface: try b.underlay(), network: network).registerNetwork(
                dataPath: try b.dataPath())
            #expect(na.mtu == 1500)
            try na.start(subnet: net("10.5.1.0/24"))
            try nb.start(subnet: net("10.5.2.0/24"))
            try addPodBridge(a, gateway: "10.5.1.1/24")
            try addPodBridge(b, gateway: "10.5.2.1/24")
            _ = try na.reconcile(peers: [Peer(subnet: net("10.5.2.0/24"), publicIP: ip("192.168.77.2"))])
            _ = try nb.reconcile(peers: [Peer(subnet: net("10.5.1.0/24"), publicIP: ip("192.168.77.1"))])
            #expect(try a.lines("ip route show 10.5.2.0/24") == ["10.5.2.0/24 via 192.168.77.2 dev ul0 proto 98"])
            #expect(a.ping("10.5.2.1", from: "10.5.1.1"))
            #expect(try a.lines("ip link show type vxlan").isEmpty)
        }
    }

    @Test func routesAreRepairedStaleOnesRemovedUnreachablePeersSkipped() throws {
        try withNode { ns in
            let nw = try HostGWBackend(interface: try ns.underlay(), network: network).registerNetwork(
                dataPath: try ns.dataPath())
            try nw.start(subnet: net("10.5.1.0/24"))
            // Stale from a previous run; and a static route that is not ours.
            try ns.sh(
                "ip route add 10.5.9.0/24 via 192.168.77.9 dev ul0 && ip route add 10.5.8.0/24 via 192.168.77.8 proto static"
            )
            let peers = [
                Peer(subnet: net("10.5.2.0/24"), publicIP: ip("192.168.77.2")),
                Peer(subnet: net("10.5.3.0/24"), publicIP: ip("192.168.77.3")),
                Peer(subnet: net("10.5.4.0/24"), publicIP: ip("10.99.0.4")),
            ]
            var report = try nw.reconcile(peers: peers)
            #expect(report.programmed.routes == 2 && report.removed.routes == 1)
            #expect(report.skipped[net("10.5.4.0/24")]?.contains("unreachable in host-gw mode") == true)
            // Both carry podnet's route protocol; the stale one (RTPROT_BOOT, as flanneld's) is gone.
            #expect(
                try ns.lines("ip route show proto 98").sorted() == [
                    "10.5.2.0/24 via 192.168.77.2 dev ul0", "10.5.3.0/24 via 192.168.77.3 dev ul0",
                ])
            #expect(try ns.lines("ip route show proto boot").isEmpty)
            #expect(try ns.lines("ip route show 10.5.8.0/24").count == 1)
            #expect(try ns.lines("ip route show 10.5.4.0/24").isEmpty)  // no blackhole

            try ns.sh("ip route del 10.5.3.0/24")
            report = try nw.reconcile(peers: peers)
            #expect(report.programmed.routes == 1 && report.removed.routes == 0)
            #expect(try ns.lines("ip route show 10.5.3.0/24") == ["10.5.3.0/24 via 192.168.77.3 dev ul0 proto 98"])
            #expect(try nw.reconcile(peers: peers).changes == 0)
        }
    }

    @Test func refusesAPublicIPThatIsNotAnAddressOfTheInterface() throws {
        try withNode { ns in
            let iface = try ns.underlay(publicIP: ip("203.0.113.7"))
            let dp = try ns.dataPath()
            do throws(OverlayError) {
                _ = try HostGWBackend(interface: iface, network: network).registerNetwork(dataPath: dp)
                Issue.record("host-gw accepted a public IP that is not on the interface")
            } catch {
                #expect(error == .publicIPNotOnInterface(publicIP: ip("203.0.113.7"), interface: "ul0"))
                #expect(error.description.contains("is not an address of ul0"))
            }
        }
    }

    @Test func movingFromVXLANLeavesNothingOfIt() throws {
        try withNode { ns in
            let iface = try ns.underlay()
            let vx = try VXLANBackend(interface: iface, network: network, config: VXLANConfig(directRouting: true))
                .registerNetwork(dataPath: try ns.dataPath())
            try vx.start(subnet: net("10.5.1.0/24"))
            let peers = [
                Peer(subnet: net("10.5.2.0/24"), publicIP: ip("192.168.77.2"), vtepMAC: mac("02:00:00:00:00:02")),
                peerB,
            ]
            _ = try vx.reconcile(peers: peers)
            let gw = try HostGWBackend(interface: iface, network: network).registerNetwork(dataPath: try ns.dataPath())
            try gw.start(subnet: net("10.5.1.0/24"))
            _ = try gw.reconcile(peers: peers)
            #expect(try ns.lines("ip link show type vxlan").isEmpty)
            #expect(try ns.lines("ip route show root 10.5.0.0/16") == ["10.5.2.0/24 via 192.168.77.2 dev ul0 proto 98"])
        }
    }
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct IPIPKernelTests {
    @Test(.enabled(if: !kernelHasIPIP, "the kernel has ipip: the failure path cannot be shown here"))
    func aKernelWithoutIPIPFailsAtRegistrationWithTheFix() throws {
        try withNode { ns in
            let (iface, dp) = (try ns.underlay(), try ns.dataPath())
            do throws(OverlayError) {
                _ = try IPIPBackend(interface: iface, network: network).registerNetwork(dataPath: dp)
                Issue.record("registered an ipip network on a kernel without ipip")
            } catch {
                guard case .ipipUnsupported(let cause) = error else { Issue.record("unexpected \(error)"); return }
                #expect(cause.description.contains("RTM_NEWLINK ipip flannel.ipip"))
                #expect(
                    error.description.hasPrefix(
                        "the kernel cannot create ipip devices: load the ipip module (modprobe ipip)"))
            }
            #expect(try ns.lines("ip link show flannel.ipip 2>/dev/null || true").isEmpty)
        }
    }

    @Test(.enabled(if: kernelHasIPIP, "needs the ipip module (this kernel has none): end-to-end ipip not run"))
    func podsOnTwoNodesPingThroughIPIP() throws {
        try withUnderlay { a, b in
            let na = try IPIPBackend(interface: try a.underlay(), network: network).registerNetwork(
                dataPath: try a.dataPath())
            let nb = try IPIPBackend(interface: try b.underlay(), network: network).registerNetwork(
                dataPath: try b.dataPath())
            #expect(na.mtu == 1480)
            try na.start(subnet: net("10.5.1.0/24"))
            try nb.start(subnet: net("10.5.2.0/24"))
            try addPodBridge(a, gateway: "10.5.1.1/24")
            try addPodBridge(b, gateway: "10.5.2.1/24")
            _ = try na.reconcile(peers: [Peer(subnet: net("10.5.2.0/24"), publicIP: ip("192.168.77.2"))])
            _ = try nb.reconcile(peers: [Peer(subnet: net("10.5.1.0/24"), publicIP: ip("192.168.77.1"))])
            #expect(
                try a.lines("ip route show 10.5.2.0/24") == [
                    "10.5.2.0/24 via 192.168.77.2 dev flannel.ipip proto 98 onlink"
                ])
            #expect(try a.sh("ip -d link show flannel.ipip").contains("ipip remote any local 192.168.77.1 dev ul0"))
            #expect(a.ping("10.5.2.1", from: "10.5.1.1"))
        }
    }
}
