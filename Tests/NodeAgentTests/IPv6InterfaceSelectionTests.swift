// Choosing the interface for a config that enables IPv6: dual stack takes the IPv4 choice and the
// link's global IPv6 address (or `--public-ipv6`), and names what is missing; an IPv6-only config
// chooses by IPv6 addresses and the IPv6 default route. Against the recording fake kernel.

import Addressing
import Netlink
import NodeAgent
import Overlay
import TestSupport
import Testing

private func ip(_ s: String) -> IPAddress { IPAddress(s)! }
private func net(_ s: String) -> IPNetwork { IPNetwork(s)! }

/// eth0 (192.168.77.1/24, IPv4 default route) with `ipv6` addresses, and eth1 (10.1.2.3/16,
/// 2001:db8:1::3/64, the IPv6 default route).
private func node(
    ipv6: [String] = ["fe80::1/64", "2001:db8:77::1/64"],
    _ change: @escaping (inout NodeAgent.Options) -> Void = { _ in }
)
    -> TestNode
{
    let node = TestNode { o in
        o.interfaces = []
        change(&o)
    }
    node.dataPath.modify { k in
        let eth0 = k.link(named: "eth0")!.index
        k.addresses[eth0, default: []] += ipv6.map(net)
        k.routes.append(Route(destination: net("0.0.0.0/0"), gateway: ip("192.168.77.254"), interface: eth0))
        let eth1 = k.addInterface("eth1", address: net("10.1.2.3/16"))
        k.addresses[eth1, default: []].append(net("2001:db8:1::3/64"))
        k.routes.append(Route(destination: net("::/0"), gateway: ip("2001:db8:1::fe"), interface: eth1))
    }
    return node
}

private func failure(_ node: TestNode, _ families: [IPFamily]) -> String? {
    do {
        _ = try node.agent.findInterface(families: families)
        return nil
    } catch {
        return "\(error)"
    }
}

@Suite struct IPv6InterfaceSelectionTests {
    @Test func dualStackTakesTheIPv4ChoiceWithItsGlobalIPv6Address() throws {
        let i = try node().agent.findInterface(families: [.v4, .v6])
        #expect(i.name == "eth0" && i.publicIP == ip("192.168.77.1"))
        #expect(i.ipv6Address == net("2001:db8:77::1/64") && i.publicIPv6 == ip("2001:db8:77::1"))
        #expect(i.nodeAddresses == [ip("192.168.77.1"), ip("2001:db8:77::1")])
        // IPv4 only: no IPv6 side.
        #expect(try node().agent.findInterface().publicIPv6 == nil)
    }

    @Test func dualStackWithoutAGlobalIPv6AddressNamesWhatIsMissing() throws {
        let message = failure(node(ipv6: ["fe80::1/64"]), [.v4, .v6])
        #expect(
            message?.contains("eth0 has no global IPv6 address; pass --public-ipv6 or --iface") == true,
            "\(message ?? "")")
        // --public-ipv6 is enough (a node behind NAT66, as --public-ip for IPv4).
        let i = try node(ipv6: []) { $0.publicIPv6 = ip("2001:db8:99::1") }.agent.findInterface(families: [.v4, .v6])
        #expect(i.publicIPv6 == ip("2001:db8:99::1") && i.ipv6Address == nil)
    }

    @Test func ipv6OnlyChoosesByIPv6() throws {
        // The IPv6 default route's interface.
        let i = try node().agent.findInterface(families: [.v6])
        #expect(i.name == "eth1" && i.address == net("2001:db8:1::3/64") && i.publicIP == ip("2001:db8:1::3"))
        #expect(i.publicIP(.v4) == nil && i.publicIP(.v6) == ip("2001:db8:1::3"))
        // --iface by IPv6 address, --public-ipv6 advertised.
        let byAddress = try node { o in
            o.interfaces = ["2001:db8:77::1"]
            o.publicIPv6 = ip("2001:db8:99::1")
        }.agent.findInterface(families: [.v6])
        #expect(byAddress.name == "eth0" && byAddress.publicIPv6 == ip("2001:db8:99::1"))
        // A link with only a link-local IPv6 address is not usable.
        let message = failure(node(ipv6: ["fe80::1/64"]) { $0.interfaces = ["eth0"] }, [.v6])
        #expect(message?.contains("eth0 has no usable IPv6 address") == true, "\(message ?? "")")
        // An IPv4 --iface address is refused in an IPv6-only cluster.
        #expect(failure(node { $0.interfaces = ["192.168.77.1"] }, [.v6])?.contains("not an IPv6 address") == true)
    }
}
