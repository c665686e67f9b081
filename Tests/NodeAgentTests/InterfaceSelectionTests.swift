// Choosing the external interface (`--iface`, `--iface-regex`, `--iface-can-reach`,
// `--public-ip`) and the blackhole route, against the recording fake kernel: no root needed.

import Addressing
import Netlink
import NodeAgent
import Overlay
import TestSupport
import Testing

private func ip(_ s: String) -> IPAddress { IPAddress(s)! }
private func net(_ s: String) -> IPNetwork { IPNetwork(s)! }

/// A node whose kernel has, in index order, eth0 (192.168.77.1/24, the default route via .254),
/// ens10 (172.16.0.1/24) and eth1 (10.1.2.3/16); no interface option unless `change` sets one.
private func node(_ change: @escaping (inout NodeAgent.Options) -> Void = { _ in }) -> TestNode {
    let node = TestNode { o in
        o.interfaces = []
        change(&o)
    }
    node.dataPath.modify { k in
        let eth0 = k.link(named: "eth0")!.index
        k.routes.append(Route(destination: net("0.0.0.0/0"), gateway: ip("192.168.77.254"), interface: eth0))
        k.addInterface("ens10", address: net("172.16.0.1/24"))
        k.addInterface("eth1", address: net("10.1.2.3/16"))
    }
    return node
}

/// The chosen interface's name and address.
private func chosen(_ node: TestNode) throws -> (String, IPNetwork, IPAddress) {
    let i = try node.agent.findInterface()
    return (i.name, i.address, i.publicIP)
}

/// The error's text.
private func failure(_ node: TestNode) -> String? {
    do {
        _ = try node.agent.findInterface()
        return nil
    } catch let e as NoInterface {
        return e.description
    } catch {
        return "not NoInterface: \(error)"
    }
}

@Suite struct InterfaceSelectionTests {
    @Test func theDefaultRouteInterfaceWithoutOptions() throws {
        #expect(try chosen(node()) == ("eth0", net("192.168.77.1/24"), ip("192.168.77.1")))
    }

    @Test func ifaceByNameFirstMatchWins() throws {
        #expect(try chosen(node { $0.interfaces = ["eth9", "eth1", "ens10"] }).0 == "eth1")
    }

    @Test func ifaceByAddressSelectsTheLinkHoldingIt() throws {
        let n = node { $0.interfaces = ["10.9.9.9", "172.16.0.1", "eth1"] }
        #expect(try chosen(n) == ("ens10", net("172.16.0.1/24"), ip("172.16.0.1")))
    }

    @Test func ifaceByAddressUsesThatAddressNotThePreferredOne() throws {
        let n = node { $0.interfaces = ["10.1.7.7"] }
        n.dataPath.modify { k in
            let eth1 = k.link(named: "eth1")!.index
            k.addresses[eth1]!.append(net("10.1.7.7/16"))
            k.addressFlags[ip("10.1.7.7")] = InterfaceAddress.permanent | InterfaceAddress.secondary
        }
        #expect(try chosen(n) == ("eth1", net("10.1.7.7/16"), ip("10.1.7.7")))
    }

    @Test func errorsNameTheFlagAndTheValue() {
        #expect(failure(node { $0.interfaces = ["10.9.9.9"] }) == "--iface 10.9.9.9: no interface has this address")
        #expect(failure(node { $0.interfaces = ["eth9"] }) == "--iface eth9: no interface has this name")
        #expect(
            failure(node { $0.interfaces = ["fd00::1"] }) == "--iface fd00::1: not an IPv4 address")
        let all = failure(
            node {
                $0.interfaces = ["eth9", "10.9.9.9"]
                $0.interfaceRegexes = ["^wl"]
                $0.interfaceCanReach = ip("8.8.4.4")
            }.removingDefaultRoute())
        #expect(
            all
                == "no interface to use: --iface eth9: no interface has this name; "
                + "--iface 10.9.9.9: no interface has this address; "
                + "--iface-regex ^wl: matches no address and no name of an interface with an IPv4 address "
                + "(eth0 [192.168.77.1], ens10 [172.16.0.1], eth1 [10.1.2.3]); "
                + "--iface-can-reach 8.8.4.4: no route: RTM_GETROUTE 8.8.4.4: Network is unreachable")
    }

    @Test func aLinkWithoutUsableAddressOrMTUIsNotUsed() {
        let n = node { $0.interfaces = ["lo", "x0"] }
        n.dataPath.modify { k in
            k.links.insert(Link(index: 90, name: "lo", mtu: 65536, flags: 0x9), at: 0)
            k.addresses[90] = [net("127.0.0.1/8")]
            k.links.append(Link(index: 91, name: "x0", mtu: 0, flags: 0x1))
            k.addresses[91] = [net("10.200.0.1/24")]
        }
        #expect(
            failure(n)
                == "no interface to use: --iface lo: interface lo has no usable IPv4 address; "
                + "--iface x0: interface x0 has no MTU")
    }

    @Test func ifaceIsCheckedBeforeTheRegexes() throws {
        let n = node {
            $0.interfaces = ["ens10"]
            $0.interfaceRegexes = ["eth1"]
        }
        #expect(try chosen(n).0 == "ens10")
    }

    @Test func aRegexMatchesAddressesBeforeNames() throws {
        // "10" is in ens10's name (index 2) and in eth1's address (index 3): the address wins, as
        // in flanneld, and it is the interface's address.
        #expect(try chosen(node { $0.interfaceRegexes = ["10"] }) == ("eth1", net("10.1.2.3/16"), ip("10.1.2.3")))
    }

    @Test func aRegexFallsBackToNamesUnanchored() throws {
        #expect(try chosen(node { $0.interfaceRegexes = ["ens"] }) == ("ens10", net("172.16.0.1/24"), ip("172.16.0.1")))
        // Searched, not anchored (Go's MatchString): "th1" is in "eth1".
        #expect(try chosen(node { $0.interfaceRegexes = ["th1"] }).0 == "eth1")
    }

    @Test func regexesAreTriedInOrderEachOverAddressesThenNames() throws {
        // The first regex matches only a name; the second an address: the first regex wins.
        #expect(try chosen(node { $0.interfaceRegexes = ["^wl", "^ens", #"^10\."#] }).0 == "ens10")
    }

    @Test func aRegexSkipsNamesWithoutAnAddress() throws {
        let n = node { $0.interfaceRegexes = ["^eth"] }
        n.dataPath.modify { k in
            // eth0 loses its address: eth1 is the first "^eth" link with one.
            let eth0 = k.link(named: "eth0")!.index
            k.addresses[eth0] = []
        }
        #expect(try chosen(n).0 == "eth1")
    }

    @Test func anInvalidRegexIsAnErrorAtOnce() {
        let text = failure(node { $0.interfaceRegexes = ["(", "eth0"] })
        #expect(text?.hasPrefix("--iface-regex (: not a valid regular expression") == true)
    }

    @Test func canReachUsesTheKernelsRoute() throws {
        // The prefix route of eth1, with the source address the kernel would use.
        #expect(
            try chosen(node { $0.interfaceCanReach = ip("10.1.99.9") }) == ("eth1", net("10.1.2.3/16"), ip("10.1.2.3")))
        // Anything else: the default route.
        #expect(try chosen(node { $0.interfaceCanReach = ip("8.8.8.8") }).0 == "eth0")
        let n = node { $0.interfaceCanReach = ip("8.8.8.8") }
        _ = try n.agent.findInterface()
        #expect(n.dataPath.calls.contains(.lookupRoute(ip("8.8.8.8"))))
    }

    @Test func canReachIsCheckedAfterIfaceAndRegexes() throws {
        #expect(
            try chosen(
                node {
                    $0.interfaces = ["eth9"]
                    $0.interfaceRegexes = ["^wl"]
                    $0.interfaceCanReach = ip("10.1.99.9")
                }
            ).0 == "eth1")
        #expect(
            try chosen(
                node {
                    $0.interfaceRegexes = ["ens"]
                    $0.interfaceCanReach = ip("10.1.99.9")
                }
            ).0 == "ens10")
    }

    @Test func canReachIntoABlackholeFails() {
        let n = node { $0.interfaceCanReach = ip("10.99.0.1") }
        n.dataPath.modify { $0.routes.append(.blackhole(net("10.99.0.0/16"))) }
        #expect(failure(n) == "--iface-can-reach 10.99.0.1: no route: RTM_GETROUTE 10.99.0.1: Invalid argument")
    }

    @Test func publicIPAloneSelectsTheInterfaceHoldingIt() throws {
        // Not the default route's interface: the one with the address (flanneld's GetInterfaceByIP).
        #expect(try chosen(node { $0.publicIP = ip("10.1.2.3") }) == ("eth1", net("10.1.2.3/16"), ip("10.1.2.3")))
    }

    @Test func publicIPAloneThatNoInterfaceHoldsIsAnError() {
        #expect(
            failure(node { $0.publicIP = ip("203.0.113.7") })
                == "--public-ip 203.0.113.7: no interface has this address")
    }

    @Test func publicIPWithAnInterfaceOptionIsOnlyAdvertised() throws {
        // Behind NAT: the address is not local, the interface is named.
        #expect(
            try chosen(
                node {
                    $0.interfaces = ["eth0"]
                    $0.publicIP = ip("203.0.113.7")
                }) == ("eth0", net("192.168.77.1/24"), ip("203.0.113.7")))
        #expect(
            try chosen(
                node {
                    $0.interfaceCanReach = ip("10.1.0.9")
                    $0.publicIP = ip("203.0.113.7")
                }) == ("eth1", net("10.1.2.3/16"), ip("203.0.113.7")))
    }

    @Test func thePreferredAddressIsGlobalUsablePermanentAndPrimary() throws {
        let n = node { $0.interfaces = ["bond0"] }
        n.dataPath.modify { k in
            let index = k.addInterface("bond0", address: net("169.254.3.3/16"))
            k.addresses[index]! += [
                net("192.168.50.2/24"), net("192.168.50.3/24"), net("192.168.50.4/24"), net("192.168.50.5/24"),
            ]
            k.addressFlags[ip("192.168.50.2")] = 0  // from DHCP: a lifetime
            k.addressFlags[ip("192.168.50.3")] = InterfaceAddress.permanent | InterfaceAddress.deprecated
            k.addressFlags[ip("192.168.50.4")] = InterfaceAddress.permanent | InterfaceAddress.secondary
        }
        #expect(try chosen(n).1 == net("192.168.50.5/24"))
        let all = try n.dataPath.interfaceAddresses(family: .v4).filter {
            $0.interface == n.dataPath.kernel.link(named: "bond0")!.index
        }
        #expect(
            ExternalInterface.preferredAddresses(all).map(\.network) == [
                net("192.168.50.5/24"), net("192.168.50.4/24"), net("192.168.50.2/24"), net("169.254.3.3/16"),
            ])
        // Only link-local left: it is used, as flanneld does.
        n.dataPath.modify { k in
            k.addresses[k.link(named: "bond0")!.index] = [net("169.254.3.3/16"), net("192.168.50.3/24")]
        }
        #expect(try chosen(n).1 == net("169.254.3.3/16"))
    }
}

extension TestNode {
    /// The node without its default route.
    func removingDefaultRoute() -> TestNode {
        dataPath.modify { $0.routes.removeAll { $0.destination.prefixLength == 0 } }
        return self
    }
}

@Suite struct BlackholeRouteTests {
    /// A fake kernel with cni0 holding 10.5.3.1/24 (its prefix route present) and eth0.
    func kernel() -> (RecordingDataPath, Int32) {
        var k = FakeKernel()
        k.addInterface("eth0", address: net("192.168.77.1/24"))
        let cni0 = k.addInterface("cni0", address: net("10.5.3.1/24"))
        return (RecordingDataPath(k), cni0)
    }

    @Test func addsTheBlackholeOnceWithTheHighestMetric() throws {
        let (dp, cni0) = kernel()
        let blackhole = BlackholeRoute(subnet: net("10.5.3.0/24"), dataPath: dp)
        #expect(try blackhole.ensure())
        let wanted = Route(
            destination: net("10.5.3.0/24"), priority: UInt32.max, scope: 0, proto: RouteProtocol.boot,
            type: .blackhole)
        #expect(dp.changes == [.addRoute(wanted)])
        #expect(try dp.blackholeRoutes(family: .v4, table: 254) == [wanted])
        // Idempotent.
        dp.clearCalls()
        #expect(try !blackhole.ensure())
        #expect(dp.changes.isEmpty)
        // Never listed among the unicast routes the overlay reconciles.
        #expect(try !dp.routes(family: .v4, table: 254, interface: nil).contains { $0.type != .unicast })
        // cni0's route wins while it is there; the blackhole catches the traffic once it is gone.
        #expect(try dp.lookupRoute(to: ip("10.5.3.9")).interface == cni0)
        try dp.deleteAddress(net("10.5.3.1/24"), link: cni0)
        #expect(throws: NetlinkError.libnl(.invalid, operation: "RTM_GETROUTE 10.5.3.9", message: "Invalid argument")) {
            try dp.lookupRoute(to: ip("10.5.3.9"))
        }
        #expect(try !blackhole.ensure())
    }

    @Test func aBlackholeFlanneldAddedCounts() throws {
        let (dp, _) = kernel()
        dp.modify { $0.routes.append(.blackhole(net("10.5.3.0/24"), priority: 0)) }
        #expect(try !BlackholeRoute(subnet: net("10.5.3.0/24"), dataPath: dp).ensure())
        #expect(dp.changes.isEmpty)
        // Another prefix is not the same route.
        #expect(try BlackholeRoute(subnet: net("10.5.0.0/16"), dataPath: dp).ensure())
    }

    @Test func anotherRouteWithTheSameKeyIsAnError() throws {
        let (dp, cni0) = kernel()
        dp.modify { $0.routes.append(Route(destination: net("10.5.3.0/24"), interface: cni0, priority: .max)) }
        #expect(throws: NetlinkError.self) { try BlackholeRoute(subnet: net("10.5.3.0/24"), dataPath: dp).ensure() }
    }

    @Test func theOverlaysReconcileLeavesBlackholesAlone() throws {
        var k = FakeKernel()
        k.addInterface("eth0", address: net("192.168.77.1/24"))
        let dp = RecordingDataPath(k)
        let eth0 = try ExternalInterface.find(name: "eth0", dataPath: dp)
        let nw = try HostGWBackend(interface: eth0, network: net("10.5.0.0/16")).registerNetwork(dataPath: dp)
        try nw.start(subnet: net("10.5.1.0/24"))
        #expect(try BlackholeRoute(subnet: net("10.5.1.0/24"), dataPath: dp).ensure())
        // Even one with podnet's own protocol, in the network, for no peer: not the overlay's.
        dp.modify { $0.routes.append(.blackhole(net("10.5.9.0/24"), proto: RouteProtocol.podnet)) }
        _ = try nw.reconcile(peers: [Peer(subnet: net("10.5.2.0/24"), publicIP: ip("192.168.77.2"))])
        #expect(dp.kernel.routes.filter { $0.type == .blackhole }.count == 2)
        #expect(!dp.changes.contains { if case .deleteRoute = $0 { true } else { false } })
    }
}
