// The IPv6 data path against the recording fake kernel: what each backend hands to netlink for an
// IPv6 network (flannel-v6.<VNI>, its MTU and accept_ra, per-peer NDP neighbour, FDB entry and
// onlink route), which overlay devices a network keeps, and finding an interface's IPv6 side.

import Addressing
import Foundation
import Netlink
import Overlay
import TestSupport
import Testing

let network6 = IPNetwork("fd00:5::/48")!

/// A fake dual-stack node: `eth0` at 192.168.77.1/24 and fd77::1/64 (index 1), MTU 1500.
func fakeDualNode() -> (RecordingDataPath, ExternalInterface) {
    var k = FakeKernel()
    let index = k.addInterface("eth0", address: net("192.168.77.1/24"))
    k.addresses[index]!.append(net("fd77::1/64"))
    k.routes.append(Route(destination: net("fd77::/64"), interface: index, scope: 253, proto: 2))
    return (
        RecordingDataPath(k),
        ExternalInterface(
            name: "eth0", index: index, mtu: 1500, address: net("192.168.77.1/24"), ipv6Address: net("fd77::1/64"))
    )
}

let peer6A = Peer(subnet: net("fd00:5:0:2::/64"), publicIP: ip("fd77::2"), vtepMAC: mac("02:00:00:00:00:62"))
let peer6B = Peer(subnet: net("fd00:5:0:3::/64"), publicIP: ip("fd99::3"), vtepMAC: mac("02:00:00:00:00:63"))

@Suite struct IPv6FakeTests {
    @Test func vxlanIPv6DeviceIsFlannelV6WithLocal6MTULess70AndNoRouterAdvertisements() throws {
        let (dp, eth0) = fakeDualNode()
        let nw = try VXLANBackend(interface: eth0, network: network6, config: VXLANConfig(vni: 7))
            .registerNetwork(dataPath: dp)
        let dev = try #require(dp.kernel.link(named: "flannel-v6.7"))
        #expect(
            dp.changes.prefix(2) == [
                .addVXLAN(
                    name: "flannel-v6.7",
                    VXLANAttributes(
                        vni: 7, local: ip("fd77::1"), port: 8472, learning: false, underlyingInterface: eth0.index),
                    mtu: 1430, mac: nil),
                .writeSysctl("net/ipv6/conf/flannel-v6.7/accept_ra", "0"),
            ])
        #expect(nw.mtu == 1430 && nw.deviceName == "flannel-v6.7")
        #expect(
            nw.leaseAttributes
                == LeaseAttributes.ipv6(publicIP: ip("fd77::1"), backendType: "vxlan", vni: 7, vtepMAC: dev.mac))
        #expect(nw.leaseAttributes.publicIP == LeaseAttributes.noPublicIPv4)

        dp.clearCalls()
        try nw.start(subnet: net("fd00:5:0:1::/64"))
        #expect(
            dp.changes == [
                .addAddress(net("fd00:5:0:1::/128"), link: dev.index), .setLink(dev.index, LinkChange(up: true)),
            ])
        #expect(throws: OverlayError.self) { try nw.start(subnet: net("10.5.1.0/24")) }
    }

    @Test func eachIPv6PeerGetsANeighbourAnFDBEntryAndAnOnlinkRouteThenNothingChanges() throws {
        let (dp, eth0) = fakeDualNode()
        let nw = try VXLANBackend(interface: eth0, network: network6).registerNetwork(dataPath: dp)
        try nw.start(subnet: net("fd00:5:0:1::/64"))
        let dev = try #require(dp.kernel.link(named: "flannel-v6.1")).index
        dp.clearCalls()
        // An IPv4 peer and this node's own subnet are not the IPv6 network's.
        let report = try nw.reconcile(peers: [
            peer6A, peerA, Peer(subnet: net("fd00:5:0:1::/64"), publicIP: ip("fd77::1")),
        ])
        #expect(
            dp.changes == [
                .replaceNeighbour(
                    Neighbour(address: ip("fd00:5:0:2::"), mac: mac("02:00:00:00:00:62"), interface: dev)),
                .replaceFDB(FDBEntry(mac: mac("02:00:00:00:00:62"), interface: dev, destination: ip("fd77::2"))),
                .replaceRoute(
                    Route(
                        destination: net("fd00:5:0:2::/64"), gateway: ip("fd00:5:0:2::"), interface: dev, onlink: true,
                        proto: RouteProtocol.podnet)),
            ])
        #expect(report.skipped[peerA.subnet] == "not an IPv6 lease")
        #expect(report.programmed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
        // The kernel reads the route back with metric 1024: still satisfied.
        dp.clearCalls()
        #expect(try nw.reconcile(peers: [peer6A]).changes == 0)
        #expect(dp.changes.isEmpty)
        // Gone: all three removed.
        #expect(try nw.reconcile(peers: []).removed == EntryCounts(routes: 1, neighbours: 1, fdbEntries: 1))
    }

    @Test func directRoutingIPv6PeersOnTheSegmentGetAPlainRoute() throws {
        let (dp, eth0) = fakeDualNode()
        let nw = try VXLANBackend(interface: eth0, network: network6, config: VXLANConfig(directRouting: true))
            .registerNetwork(dataPath: dp)
        try nw.start(subnet: net("fd00:5:0:1::/64"))
        _ = try nw.reconcile(peers: [peer6A, peer6B])
        let routes = dp.kernel.routes.filter { $0.proto == RouteProtocol.podnet }
        #expect(routes.contains { $0.destination == peer6A.subnet && $0.gateway == ip("fd77::2") && $0.interface == 1 })
        #expect(routes.contains { $0.destination == peer6B.subnet && $0.gateway == ip("fd00:5:0:3::") && $0.onlink })
        #expect(dp.kernel.neighbours.map(\.address) == [ip("fd00:5:0:3::")])
    }

    @Test func hostGWIPv6RoutesGoViaThePeersPublicIPv6() throws {
        let (dp, eth0) = fakeDualNode()
        let nw = try HostGWBackend(interface: eth0, network: network6).registerNetwork(dataPath: dp)
        #expect(
            nw.leaseAttributes
                == LeaseAttributes.ipv6(publicIP: ip("fd77::1"), backendType: "host-gw", vni: nil, vtepMAC: nil))
        try nw.start(subnet: net("fd00:5:0:1::/64"))
        let report = try nw.reconcile(peers: [peer6A, peer6B])
        #expect(report.programmed.routes == 1)
        #expect(report.skipped[peer6B.subnet]?.contains("unreachable in host-gw mode") == true)
        #expect(
            dp.kernel.routes.contains(
                Route(
                    destination: peer6A.subnet, gateway: ip("fd77::2"), interface: eth0.index,
                    proto: RouteProtocol.podnet)))
        #expect(try nw.reconcile(peers: [peer6A, peer6B]).changes == 0)

        // A public IPv6 address that is not the interface's cannot be a next hop.
        var natted = eth0
        natted.publicIPv6 = ip("fd88::1")
        #expect(throws: OverlayError.publicIPNotOnInterface(publicIP: ip("fd88::1"), interface: "eth0")) {
            try HostGWBackend(interface: natted, network: network6).registerNetwork(dataPath: dp)
        }
    }

    @Test func ipipAndBGPRefuseAnIPv6NetworkBeforeTouchingTheKernel() throws {
        let (dp, eth0) = fakeDualNode()
        var message = ""
        do { _ = try IPIPBackend(interface: eth0, network: network6).registerNetwork(dataPath: dp) } catch {
            message = error.description
        }
        #expect(message.contains("IPv4-only"))
        #expect(throws: OverlayError.self) {
            try BGPBackend(interface: eth0, network: network6, subnetLength: 64, config: BGPConfig())
                .registerNetwork(dataPath: dp)
        }
        #expect(dp.changes.isEmpty)
    }

    @Test func aSingleFamilyNetworkRemovesTheOtherFamilysDeviceADualStackPairKeepsBoth() throws {
        let (dp, eth0) = fakeDualNode()
        let v6 = try VXLANBackend(interface: eth0, network: network6).registerNetwork(dataPath: dp)
        _ = v6
        #expect(dp.kernel.link(named: "flannel-v6.1") != nil)
        // IPv4-only now: the left-over IPv6 device goes.
        _ = try VXLANBackend(interface: eth0, network: network).registerNetwork(dataPath: dp)
        #expect(dp.kernel.links.map(\.name).sorted() == ["eth0", "flannel.1"])
        // IPv6-only: flannel.1 goes (and flannel.ipip would).
        _ = try VXLANBackend(interface: eth0, network: network6).registerNetwork(dataPath: dp)
        #expect(dp.kernel.links.map(\.name).sorted() == ["eth0", "flannel-v6.1"])

        // Dual stack: both, whichever half registers first; a later VNI's devices replace both.
        let config = try NetworkConfig(
            json: Data(
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}"#
                    .utf8))
        let dual = try config.makeBackend(interface: eth0).registerNetwork(dataPath: dp)
        #expect(dp.kernel.links.map(\.name).sorted() == ["eth0", "flannel-v6.1", "flannel.1"])
        #expect(dual.mtu == 1430)
        try dual.start(subnet: net("10.5.1.0/24"), ipv6Subnet: net("fd00:5:0:1::/64"))
        let both = Peer(
            subnet: peerA.subnet, publicIP: peerA.publicIP, vtepMAC: peerA.vtepMAC, ipv6Subnet: peer6A.subnet,
            publicIPv6: peer6A.publicIP, ipv6VtepMAC: peer6A.vtepMAC)
        let report = try dual.reconcile(peers: [both])
        #expect(report.programmed == EntryCounts(routes: 2, neighbours: 2, fdbEntries: 2))
        #expect(try dual.reconcile(peers: [both]).changes == 0)

        // host-gw dual stack: no devices at all.
        let hostGW = try NetworkConfig(
            json: Data(
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"host-gw"}}"#
                    .utf8))
        _ = try hostGW.makeBackend(interface: eth0).registerNetwork(dataPath: dp)
        #expect(dp.kernel.links.map(\.name) == ["eth0"])
    }

    @Test func findFillsTheIPv6SideAndFindsAnIPv6OnlyInterface() throws {
        var k = FakeKernel()
        let eth0 = k.addInterface("eth0", address: net("192.168.77.1/24"))
        // Link-local and deprecated addresses are never chosen; a tentative one (still in DAD)
        // only after every other; a permanent one before a SLAAC one.
        k.addresses[eth0]! += [
            net("fe80::1/64"), net("2001:db8::5/64"), net("2001:db8::6/64"), net("2001:db8::7/64"),
            net("2001:db8::8/64"),
        ]
        k.addressFlags[ip("2001:db8::5")] = 0  // SLAAC: a lifetime, not permanent
        k.addressFlags[ip("2001:db8::6")] = InterfaceAddress.permanent | InterfaceAddress.tentative
        k.addressFlags[ip("2001:db8::7")] = InterfaceAddress.permanent | InterfaceAddress.deprecated
        let eth1 = k.addInterface("eth1", address: net("fd77::1/64"))
        k.addresses[eth1]!.append(net("fe80::2/64"))
        let dp = RecordingDataPath(k)

        let dual = try ExternalInterface.find(name: "eth0", families: [.v4, .v6], dataPath: dp)
        #expect(dual.address == net("192.168.77.1/24") && dual.publicIP == ip("192.168.77.1"))
        #expect(dual.ipv6Address == net("2001:db8::8/64") && dual.publicIPv6 == ip("2001:db8::8"))
        let given = try ExternalInterface.find(
            name: "eth0", publicIPv6: ip("2001:db8:1::1"), families: [.v4, .v6], dataPath: dp)
        #expect(given.publicIPv6 == ip("2001:db8:1::1") && given.ipv6Address == net("2001:db8::8/64"))
        // IPv4 only, the default: no IPv6 side.
        #expect(try ExternalInterface.find(name: "eth0", dataPath: dp).ipv6Address == nil)

        // IPv6 only, on an interface without IPv4.
        let only = try ExternalInterface.find(name: "eth1", families: [.v6], dataPath: dp)
        #expect(only.address(.v6) == net("fd77::1/64") && only.publicIP(.v6) == ip("fd77::1"))
        #expect(only.address(.v4) == nil && only.publicIP(.v4) == nil)
        #expect(throws: OverlayError.interfaceNotFound("interface eth1 has no IPv4 address")) {
            try ExternalInterface.find(name: "eth1", families: [.v4, .v6], dataPath: dp)
        }
        var v4Only = FakeKernel()
        v4Only.addInterface("eth0", address: net("192.168.77.1/24"))
        let none = RecordingDataPath(v4Only)
        #expect(throws: OverlayError.interfaceNotFound("interface eth0 has no global IPv6 address")) {
            try ExternalInterface.find(name: "eth0", families: [.v4, .v6], dataPath: none)
        }
        #expect(
            ExternalInterface.preferredIPv6Addresses(try dp.interfaceAddresses(family: nil)).map(\.network) == [
                net("2001:db8::8/64"), net("fd77::1/64"), net("2001:db8::5/64"), net("2001:db8::6/64"),
            ])
    }
}
