// The data path against the recording fake kernel: the exact objects each backend hands to
// netlink, the diff, and reconcile's "dump once, change only the difference".

import Addressing
import Foundation
import Netlink
import Overlay
import TestSupport
import Testing

/// A fake node: `eth0` at 192.168.77.1/24 (index 1), MTU 1500.
func fakeNode(kinds unsupported: Set<String> = []) -> (RecordingDataPath, ExternalInterface) {
    var k = FakeKernel()
    k.unsupportedKinds = unsupported
    let index = k.addInterface("eth0", address: net("192.168.77.1/24"))
    return (
        RecordingDataPath(k), ExternalInterface(name: "eth0", index: index, mtu: 1500, address: net("192.168.77.1/24"))
    )
}

let peerA = Peer(subnet: net("10.5.2.0/24"), publicIP: ip("192.168.77.2"), vtepMAC: mac("02:00:00:00:00:02"))
let peerB = Peer(subnet: net("10.5.3.0/24"), publicIP: ip("172.16.0.3"), vtepMAC: mac("02:00:00:00:00:03"))

@Suite struct VXLANFakeTests {
    @Test func registerCreatesTheDeviceAndPublishesItsMAC() throws {
        let (dp, eth0) = fakeNode()
        let nw = try VXLANBackend(interface: eth0, network: network, config: VXLANConfig(vni: 7))
            .registerNetwork(dataPath: dp)
        let dev = try #require(dp.kernel.link(named: "flannel.7"))
        #expect(
            dp.changes.first
                == .addVXLAN(
                    name: "flannel.7",
                    VXLANAttributes(
                        vni: 7, local: ip("192.168.77.1"), port: 8472, learning: false, underlyingInterface: eth0.index),
                    mtu: 1450, mac: nil))
        #expect(nw.mtu == 1450)
        #expect(nw.deviceName == "flannel.7")
        #expect(
            nw.leaseAttributes
                == LeaseAttributes(publicIP: ip("192.168.77.1"), backendType: "vxlan", vni: 7, vtepMAC: dev.mac))

        dp.clearCalls()
        try nw.start(subnet: net("10.5.1.0/24"))
        #expect(
            dp.changes == [.addAddress(net("10.5.1.0/32"), link: dev.index), .setLink(dev.index, LinkChange(up: true))])
    }

    @Test func configuredMTUIsTheUnderlays() throws {
        let (dp, eth0) = fakeNode()
        let nw = try VXLANBackend(interface: eth0, network: network, config: VXLANConfig(mtu: 9000)).registerNetwork(
            dataPath: dp)
        #expect(nw.mtu == 8950)
        #expect(dp.kernel.link(named: "flannel.1")?.mtu == 8950)
        #expect(throws: OverlayError.self) {
            try VXLANBackend(interface: eth0, network: network, config: VXLANConfig(mtu: 100)).registerNetwork(
                dataPath: dp)
        }
    }

    @Test func eachPeerGetsNeighbourFDBAndRouteInThatOrder() throws {
        let (dp, eth0) = fakeNode()
        let nw = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        let dev = try #require(dp.kernel.link(named: "flannel.1")).index
        dp.clearCalls()
        let report = try nw.reconcile(peers: [peerA, Peer(subnet: net("10.5.1.0/24"), publicIP: eth0.publicIP)])
        #expect(
            dp.changes == [
                .replaceNeighbour(Neighbour(address: ip("10.5.2.0"), mac: mac("02:00:00:00:00:02"), interface: dev)),
                .replaceFDB(FDBEntry(mac: mac("02:00:00:00:00:02"), interface: dev, destination: ip("192.168.77.2"))),
                .replaceRoute(
                    Route(
                        destination: net("10.5.2.0/24"), gateway: ip("10.5.2.0"), interface: dev, onlink: true,
                        proto: RouteProtocol.podnet)),
            ])
        #expect(report.programmed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
        #expect(report.removed == EntryCounts())
        // Reads: the device, its addresses, one route dump, one neighbour dump, one FDB dump, the
        // interface's addresses.
        #expect(
            dp.calls.filter { !$0.isChange } == [
                .link("flannel.1"), .addresses(link: dev), .routes(interface: nil),
                .neighbours(interface: dev), .fdbEntries(interface: dev),
                .addresses(link: eth0.index),
            ])
        // Converged: the next pass only reads.
        dp.clearCalls()
        #expect(try nw.reconcile(peers: [peerA]).changes == 0)
        #expect(dp.changes.isEmpty)
    }

    @Test func reconcileRemovesStaleRestoresDeletedAndFollowsAVtepMACChange() throws {
        let (dp, eth0) = fakeNode()
        let nw = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        let dev = try #require(dp.kernel.link(named: "flannel.1")).index
        _ = try nw.reconcile(peers: [peerA, peerB])

        // Behind its back: peer B's route deleted; a stale peer's entries added; a foreign route.
        dp.modify { k in
            k.routes.removeAll { $0.destination == peerB.subnet }
            k.neighbours.append(Neighbour(address: ip("10.5.9.0"), mac: mac("02:00:00:00:00:09"), interface: dev))
            k.fdb.append(FDBEntry(mac: mac("02:00:00:00:00:09"), interface: dev, destination: ip("192.168.77.9")))
            k.routes.append(
                Route(destination: net("10.5.9.0/24"), gateway: ip("10.5.9.0"), interface: dev, onlink: true))
            k.routes.append(
                Route(destination: net("10.99.0.0/24"), gateway: ip("192.168.77.254"), interface: eth0.index))
        }
        var report = try nw.reconcile(peers: [peerA, peerB])
        #expect(report.programmed == EntryCounts(routes: 1))
        #expect(report.removed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
        let k = dp.kernel
        #expect(
            k.routes.filter { $0.interface == dev }.map(\.destination).sorted { $0.address < $1.address }
                == [peerA.subnet, peerB.subnet])
        #expect(k.routes.contains { $0.destination == net("10.99.0.0/24") })  // not ours

        // Peer A's VtepMAC changes: the neighbour follows, the old FDB entry goes.
        var moved = peerA
        moved.vtepMAC = mac("02:00:00:00:00:22")
        report = try nw.reconcile(peers: [moved, peerB])
        #expect(report.programmed == EntryCounts(neighbours: 1, fdbEntries: 1))
        #expect(report.removed == EntryCounts(fdbEntries: 1))
        #expect(
            dp.kernel.fdb.map(\.mac).sorted { $0.description < $1.description } == [
                mac("02:00:00:00:00:03"), mac("02:00:00:00:00:22"),
            ])
        #expect(dp.kernel.neighbours.first { $0.address == ip("10.5.2.0") }?.mac == mac("02:00:00:00:00:22"))

        // Peer B's lease goes.
        report = try nw.reconcile(peers: [moved])
        #expect(report.removed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
        #expect(dp.kernel.routes.filter { $0.interface == dev }.count == 1)
    }

    @Test func setPeerAndRemovePeerChangeOnlyTheDifference() throws {
        let (dp, eth0) = fakeNode()
        let nw = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        let dev = try #require(dp.kernel.link(named: "flannel.1")).index
        dp.clearCalls()
        #expect(try nw.setPeer(peerA).programmed.total == 3)
        #expect(dp.calls.allSatisfy { $0.isChange })  // no dumps
        dp.clearCalls()
        #expect(try nw.setPeer(peerA).changes == 0)  // a lease renewal
        #expect(dp.calls.isEmpty)
        var moved = peerA
        moved.vtepMAC = mac("02:00:00:00:00:22")
        _ = try nw.setPeer(moved)
        #expect(
            dp.changes == [
                .deleteFDB(FDBEntry(mac: mac("02:00:00:00:00:02"), interface: dev, destination: ip("192.168.77.2"))),
                .replaceNeighbour(Neighbour(address: ip("10.5.2.0"), mac: mac("02:00:00:00:00:22"), interface: dev)),
                .replaceFDB(FDBEntry(mac: mac("02:00:00:00:00:22"), interface: dev, destination: ip("192.168.77.2"))),
            ])
        dp.clearCalls()
        #expect(try nw.removePeer(subnet: peerA.subnet).removed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
        #expect(dp.kernel.routes.allSatisfy { $0.interface != dev })
        #expect(dp.kernel.neighbours.isEmpty && dp.kernel.fdb.isEmpty)
        #expect(try nw.removePeer(subnet: peerA.subnet).changes == 0)
    }

    @Test func directRoutingRoutesPeersOnTheSegmentViaTheirPublicIP() throws {
        let (dp, eth0) = fakeNode()
        let nw = try VXLANBackend(interface: eth0, network: network, config: VXLANConfig(directRouting: true))
            .registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        let dev = try #require(dp.kernel.link(named: "flannel.1")).index
        _ = try nw.reconcile(peers: [peerA, peerB])
        let k = dp.kernel
        #expect(
            k.routes.contains(
                Route(
                    destination: peerA.subnet, gateway: ip("192.168.77.2"), interface: eth0.index,
                    proto: RouteProtocol.podnet)))
        #expect(
            k.routes.contains(
                Route(
                    destination: peerB.subnet, gateway: ip("10.5.3.0"), interface: dev, onlink: true,
                    proto: RouteProtocol.podnet)))
        #expect(k.neighbours.map(\.address) == [ip("10.5.3.0")])
        #expect(k.fdb.map(\.destination) == [ip("172.16.0.3")])

        // Without DirectRouting the same node moves peer A into the tunnel, and its direct route goes.
        let tunnelled = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try tunnelled.start(subnet: net("10.5.1.0/24"))
        let report = try tunnelled.reconcile(peers: [peerA, peerB])
        #expect(report.programmed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
        #expect(!dp.kernel.routes.contains { $0.interface == eth0.index && $0.gateway != nil })
    }

    @Test func ensureKeepsACompatibleDeviceAndRecreatesAnIncompatibleOne() throws {
        let (dp, eth0) = fakeNode()
        let first = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        let macBefore = first.leaseAttributes.vtepMAC
        try first.start(subnet: net("10.5.1.0/24"))
        _ = try first.reconcile(peers: [peerA])
        let dev = try #require(dp.kernel.link(named: "flannel.1"))
        dp.modify { k in k.links[k.links.firstIndex { $0.name == "flannel.1" }!].mtu = 1300 }

        // A restart with the same config: same device, same MAC, MTU corrected, peers untouched.
        dp.clearCalls()
        let second = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        #expect(dp.changes == [.setLink(dev.index, LinkChange(mtu: 1450))])
        #expect(second.leaseAttributes.vtepMAC == macBefore)
        try second.start(subnet: net("10.5.1.0/24"))
        #expect(try second.reconcile(peers: [peerA]).changes == 0)

        // Another port: incompatible, recreated with the same MAC, everything programmed again.
        dp.modify { k in k.links[k.links.firstIndex { $0.name == "flannel.1" }!].vxlan?.port = 4789 }
        var report = try second.reconcile(peers: [peerA])
        #expect(report.deviceRecreated && !report.leaseAttributesChanged)
        #expect(report.programmed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
        let recreated = try #require(dp.kernel.link(named: "flannel.1"))
        #expect(recreated.index != dev.index && recreated.mac == macBefore && recreated.vxlan?.port == 8472)
        #expect(dp.kernel.addresses[recreated.index] == [net("10.5.1.0/32")])

        // Deleted by hand: the same again.
        try dp.deleteLink(recreated.index)
        report = try second.reconcile(peers: [peerA])
        #expect(
            report.deviceRecreated && report.programmed.total == 3
                && dp.kernel.link(named: "flannel.1")?.mac == macBefore)

        // Its MAC changed under it (udev's MACAddressPolicy): the lease must be published again, once.
        let drifted = mac("02:dd:00:00:00:01")
        dp.modify { k in k.links[k.links.firstIndex { $0.name == "flannel.1" }!].mac = drifted }
        report = try second.reconcile(peers: [peerA])
        #expect(report.leaseAttributesChanged && !report.deviceRecreated)
        #expect(second.leaseAttributes.vtepMAC == drifted)
        #expect(try second.reconcile(peers: [peerA]).leaseAttributesChanged == false)
    }

    @Test func peersWithoutVtepMACOrWithOurPublicIPAreSkipped() throws {
        let (dp, eth0) = fakeNode()
        let nw = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        let report = try nw.reconcile(peers: [
            Peer(subnet: net("10.5.4.0/24"), publicIP: ip("192.168.77.4")),
            Peer(subnet: net("10.5.5.0/24"), publicIP: eth0.publicIP, vtepMAC: mac("02:00:00:00:00:05")),
        ])
        #expect(report.changes == 0)
        #expect(Set(report.skipped.keys) == [net("10.5.4.0/24"), net("10.5.5.0/24")])
    }

    @Test func reconcileBeforeStartIsAnError() throws {
        let (dp, eth0) = fakeNode()
        let nw = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        #expect(throws: OverlayError.notStarted) { try nw.reconcile(peers: []) }
        #expect(throws: OverlayError.self) { try nw.start(subnet: net("10.6.1.0/24")) }
    }

    @Test func configReadsFlannelsKeys() throws {
        func read(_ backend: String) throws -> NetworkConfig {
            try NetworkConfig(json: Data(#"{"Network":"10.5.0.0/16","Backend":\#(backend)}"#.utf8))
        }
        let c = try read(#"{"Type":"vxlan","VNI":4,"Port":0,"MTU":1400,"DirectRouting":true,"GBP":true}"#).vxlan
        #expect(c == VXLANConfig(vni: 4, port: 8472, mtu: 1400, gbp: true, directRouting: true))
        #expect(try read(#"{"Type":"vxlan"}"#).vxlan == VXLANConfig())
        #expect(try read(#"{"Type":"ipip","DirectRouting":true}"#).ipip.directRouting)
    }
}

@Suite struct HostGWFakeTests {
    @Test func routesPeersViaTheirPublicIPAndSkipsUnreachableOnes() throws {
        let (dp, eth0) = fakeNode()
        let nw = try HostGWBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        #expect(nw.mtu == 1500 && nw.deviceName == nil)
        #expect(nw.leaseAttributes == LeaseAttributes(publicIP: ip("192.168.77.1"), backendType: "host-gw"))
        try nw.start(subnet: net("10.5.1.0/24"))
        dp.clearCalls()
        let report = try nw.reconcile(peers: [peerA, peerB])
        #expect(
            dp.changes == [
                .replaceRoute(
                    Route(
                        destination: peerA.subnet, gateway: ip("192.168.77.2"), interface: eth0.index,
                        proto: RouteProtocol.podnet))
            ])
        #expect(report.skipped.keys.elementsEqual([peerB.subnet]))
        #expect(report.skipped[peerB.subnet]?.contains("unreachable in host-gw mode") == true)
        #expect(!dp.calls.contains(.neighbours(interface: eth0.index)))
    }

    @Test func refusesAPublicIPThatIsNotOnTheInterface() throws {
        let (dp, eth0) = fakeNode()
        var natted = eth0
        natted.publicIP = ip("203.0.113.7")
        #expect(throws: OverlayError.publicIPNotOnInterface(publicIP: ip("203.0.113.7"), interface: "eth0")) {
            try HostGWBackend(interface: natted, network: network).registerNetwork(dataPath: dp)
        }
        #expect(dp.changes.isEmpty)
    }

    @Test func switchingFromVXLANRemovesTheDeviceAndItsEntries() throws {
        let (dp, eth0) = fakeNode()
        let vx = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try vx.start(subnet: net("10.5.1.0/24"))
        _ = try vx.reconcile(peers: [peerA, peerB])
        let gw = try HostGWBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try gw.start(subnet: net("10.5.1.0/24"))
        _ = try gw.reconcile(peers: [peerA, peerB])
        let k = dp.kernel
        #expect(k.link(named: "flannel.1") == nil)
        #expect(k.neighbours.isEmpty && k.fdb.isEmpty)
        #expect(
            k.routes.filter { $0.gateway != nil } == [
                Route(
                    destination: peerA.subnet, gateway: ip("192.168.77.2"), interface: eth0.index,
                    proto: RouteProtocol.podnet)
            ])
    }
}

@Suite struct IPIPFakeTests {
    @Test func handsNetlinkTheDeviceAddressAndRoutes() throws {
        let (dp, eth0) = fakeNode()
        let nw = try IPIPBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        let dev = try #require(dp.kernel.link(named: "flannel.ipip")).index
        #expect(
            dp.changes == [
                .addIPIP(
                    name: "flannel.ipip",
                    IPIPAttributes(
                        local: ip("192.168.77.1"), remote: nil, underlyingInterface: eth0.index, ttl: 0,
                        pathMTUDiscovery: false), mtu: 1480)
            ])
        #expect(nw.mtu == 1480)
        #expect(nw.leaseAttributes == LeaseAttributes(publicIP: ip("192.168.77.1"), backendType: "ipip"))
        dp.clearCalls()
        try nw.start(subnet: net("10.5.1.0/24"))
        _ = try nw.reconcile(peers: [peerA, peerB])
        #expect(
            dp.changes == [
                .addAddress(net("10.5.1.0/32"), link: dev),
                .setLink(dev, LinkChange(up: true)),
                .replaceRoute(
                    Route(
                        destination: peerA.subnet, gateway: ip("192.168.77.2"), interface: dev, onlink: true,
                        proto: RouteProtocol.podnet)),
                .replaceRoute(
                    Route(
                        destination: peerB.subnet, gateway: ip("172.16.0.3"), interface: dev, onlink: true,
                        proto: RouteProtocol.podnet)),
            ])
        // No neighbour or FDB dumps: ipip has neither.
        #expect(!dp.calls.contains(.neighbours(interface: dev)) && !dp.calls.contains(.fdbEntries(interface: dev)))
        #expect(try nw.reconcile(peers: [peerA]).removed == EntryCounts(routes: 1))
    }

    @Test func directRoutingUsesThePlainInterfaceRoute() throws {
        let (dp, eth0) = fakeNode()
        let nw = try IPIPBackend(interface: eth0, network: network, config: IPIPConfig(directRouting: true))
            .registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        let dev = try #require(dp.kernel.link(named: "flannel.ipip")).index
        dp.clearCalls()
        _ = try nw.reconcile(peers: [peerA, peerB])
        #expect(
            dp.changes == [
                .replaceRoute(
                    Route(
                        destination: peerA.subnet, gateway: ip("192.168.77.2"), interface: eth0.index,
                        proto: RouteProtocol.podnet)),
                .replaceRoute(
                    Route(
                        destination: peerB.subnet, gateway: ip("172.16.0.3"), interface: dev, onlink: true,
                        proto: RouteProtocol.podnet)),
            ])
    }

    @Test func aKernelWithoutIPIPFailsWithTheFix() throws {
        let (dp, eth0) = fakeNode(kinds: ["ipip"])
        do throws(OverlayError) {
            _ = try IPIPBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
            Issue.record("registered an ipip network without ipip")
        } catch {
            guard case .ipipUnsupported = error else { Issue.record("unexpected \(error)"); return }
            #expect(
                error.description.hasPrefix(
                    "the kernel cannot create ipip devices: load the ipip module (modprobe ipip)"))
        }
    }

    @Test func aForeignDeviceNamedLikeOursIsNotDeleted() throws {
        let (dp, eth0) = fakeNode()
        dp.modify { k in k.links.append(Link(index: 50, name: "flannel.ipip", kind: "gre")) }
        #expect(throws: OverlayError.deviceConflict(name: "flannel.ipip", kind: "gre")) {
            try IPIPBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        }
    }
}

@Suite struct DiffTests {
    @Test func duplicateRoutesOfAPeerAreReducedToOne() throws {
        let (dp, eth0) = fakeNode()
        let nw = try HostGWBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        dp.modify { k in
            k.routes.append(
                Route(destination: peerA.subnet, gateway: ip("192.168.77.5"), interface: eth0.index, priority: 100))
            k.routes.append(Route(destination: peerA.subnet, gateway: ip("192.168.77.6"), interface: eth0.index))
        }
        let report = try nw.reconcile(peers: [peerA])
        #expect(report.programmed.routes == 1 && report.removed.routes == 1)
        #expect(
            dp.kernel.routes.filter { $0.destination == peerA.subnet }
                == [
                    Route(
                        destination: peerA.subnet, gateway: ip("192.168.77.2"), interface: eth0.index,
                        proto: RouteProtocol.podnet)
                ])
    }

    @Test func routesOthersInstalledAreLeftAlone() throws {
        let (dp, eth0) = fakeNode()
        let nw = try HostGWBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        let foreign = [
            // static
            Route(destination: net("10.5.7.0/24"), gateway: ip("192.168.77.7"), interface: eth0.index, proto: 4),
            // not subnet-sized
            Route(destination: net("10.5.0.0/20"), gateway: ip("192.168.77.8"), interface: eth0.index),
            Route(destination: net("10.5.1.0/24"), gateway: ip("192.168.77.9"), interface: eth0.index),  // own subnet
        ]
        dp.modify { k in k.routes += foreign }
        #expect(try nw.reconcile(peers: []).changes == 0)
        #expect(foreign.allSatisfy { r in dp.kernel.routes.contains { $0.destination == r.destination } })
    }
}
