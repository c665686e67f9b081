// The bridge plugin in-process, against the in-memory kernel and a fake IPAM: what a user would
// check with `ip` and in host-local's store after each command. PluginTests runs the same
// behaviours end to end, as root, through the built binaries.

import Addressing
import Bridge
import CNI
import Foundation
import Netlink
import TestSupport
import Testing

@Suite struct BridgeUnitTests {
    /// The result as the reference prints it in each version's layout, with the interfaces the
    /// kernel now has. (The reference prints an empty `"dns":{}` in the 0.x layouts, podnet does
    /// not in 0.1.0/0.2.0; both decode to the same result, so `sameJSON` ignores an empty dns.)
    @Test(arguments: allVersions)
    func addReportsWhatTheKernelHas(version: String) throws {
        let node = Node(ipam: Result(ips: ipamResult.ips, routes: [.init(dst: IPNetwork("0.0.0.0/0")!)]))
        let add = node.run("ADD", bridgeConf(version))
        #expect(add.exitCode == 0, "\(add.text)")

        let bridge = try #require(node.kernel.host.link(named: "cni0"))
        let veth = try #require(node.hostVeths.first)
        let eth0 = try #require(node.pod.link(named: "eth0"))
        let expected: String
        switch version {
        case "0.1.0", "0.2.0":
            expected = #"""
                {"cniVersion":"\#(version)","ip4":{"ip":"10.88.0.5/24","gateway":"10.88.0.1","routes":[{"dst":"0.0.0.0/0"}]},"dns":{}}
                """#
        case "0.3.0", "0.3.1", "0.4.0":
            expected = #"""
                {"cniVersion":"\#(version)",
                 "interfaces":[{"name":"cni0","mac":"\#(bridge.mac!)"},{"name":"\#(veth.name)","mac":"\#(veth.mac!)"},
                               {"name":"eth0","mac":"\#(eth0.mac!)","sandbox":"\#(podPath)"}],
                 "ips":[{"version":"4","interface":2,"address":"10.88.0.5/24","gateway":"10.88.0.1"}],
                 "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}
                """#
        default:
            expected = #"""
                {"cniVersion":"\#(version)",
                 "interfaces":[{"name":"cni0","mac":"\#(bridge.mac!)"},{"name":"\#(veth.name)","mac":"\#(veth.mac!)"},
                               {"name":"eth0","mac":"\#(eth0.mac!)","sandbox":"\#(podPath)"}],
                 "ips":[{"interface":2,"address":"10.88.0.5/24","gateway":"10.88.0.1"}],
                 "routes":[{"dst":"0.0.0.0/0"}]}
                """#
        }
        #expect(sameJSON(add.text, expected, ignoringEmptyDNS: true), "\(add.text)")
        #expect(node.ipam.held == ["ctr1/eth0"])
    }

    /// isGateway: the gateway address goes on the bridge and forwarding is switched on; the pod
    /// gets its address, is up, and its host end is an up port of the bridge.
    @Test func gatewayAddressGoesOnTheBridge() throws {
        let node = Node()
        let add = node.run("ADD", bridgeConf())
        #expect(add.exitCode == 0, "\(add.text)")
        let host = node.kernel.host
        #expect(host.addresses(of: "cni0") == [IPNetwork("10.88.0.1/24")!])
        #expect(host.sysctls["net/ipv4/ip_forward"] == "1")
        let bridge = try #require(host.link(named: "cni0"))
        let veth = try #require(node.hostVeths.first)
        #expect(veth.master == bridge.index && veth.isUp && veth.isOperUp)
        #expect(node.pod.addresses(of: "eth0") == [IPNetwork("10.88.0.5/24")!])
        #expect(node.pod.link(named: "eth0")?.isUp == true)
        // Without isDefaultGateway and without IPAM routes: only the prefix route.
        #expect(node.pod.routes.map(\.destination) == [IPNetwork("10.88.0.0/24")!])
        #expect(node.pod.sysctls["net/ipv4/conf/eth0/arp_notify"] == "1")
    }

    /// An IPAM result without a gateway: with isGateway the bridge takes the subnet's first
    /// address, and the result reports it as the gateway.
    @Test func gatewayDefaultsToTheFirstAddress() throws {
        let node = Node(ipam: Result(ips: [.init(address: IPNetwork("10.88.0.5/24")!)]))
        let add = node.run("ADD", bridgeConf())
        #expect(add.exitCode == 0, "\(add.text)")
        #expect(node.kernel.host.addresses(of: "cni0") == [IPNetwork("10.88.0.1/24")!])
        let ips = try #require(add.json["ips"] as? [[String: Any]])
        #expect(ips.first?["gateway"] as? String == "10.88.0.1")
    }

    /// Without isGateway the bridge gets no address and the result no gateway.
    @Test func noGatewayWithoutIsGateway() throws {
        let node = Node(ipam: Result(ips: [.init(address: IPNetwork("10.88.0.5/24")!)]))
        let conf = bridgeConf().replacingOccurrences(of: #""isGateway":true"#, with: #""isGateway":false"#)
        let add = node.run("ADD", conf)
        #expect(add.exitCode == 0, "\(add.text)")
        #expect(node.kernel.host.addresses(of: "cni0").isEmpty)
        let ips = try #require(add.json["ips"] as? [[String: Any]])
        #expect(ips.first?["gateway"] == nil)
    }

    /// isDefaultGateway: a default route through the bridge in the pod and in the result, once.
    @Test(arguments: [false, true])
    func defaultGatewayRoute(ipamGivesDefault: Bool) throws {
        let routes: [Result.Route] = ipamGivesDefault ? [.init(dst: IPNetwork("0.0.0.0/0")!)] : []
        let node = Node(ipam: Result(ips: ipamResult.ips, routes: routes))
        let add = node.run("ADD", bridgeConf("1.0.0", #""isDefaultGateway":true"#))
        #expect(add.exitCode == 0, "\(add.text)")
        let defaults = node.pod.routes.filter { $0.destination == IPNetwork("0.0.0.0/0")! }
        #expect(defaults.map(\.gateway) == [IPAddress("10.88.0.1")])
        let reported = try #require(add.json["routes"] as? [[String: Any]])
        #expect(reported.filter { $0["dst"] as? String == "0.0.0.0/0" }.count == 1)
        #expect(node.kernel.host.addresses(of: "cni0") == [IPNetwork("10.88.0.1/24")!])
    }

    /// A bridge that holds another address: ADD fails and undoes everything it did; with
    /// forceAddress the old address is replaced.
    @Test func forceAddressReplacesAStaleGatewayAddress() throws {
        let node = Node()
        let index = node.kernel.addLink("cni0", kind: "bridge")
        node.kernel.modify { $0.addresses[index] = [IPNetwork("192.0.2.1/24")!] }

        let refused = node.run("ADD", bridgeConf())
        #expect(refused.code == 999)
        #expect(
            refused.message?.contains("\"cni0\" already has an IP address different from 10.88.0.1/24") == true,
            "\(refused.text)")
        #expect(node.ipam.held.isEmpty)
        #expect(node.ipam.calls.map(\.description) == ["host-local ADD ctr1/eth0", "host-local DEL ctr1/eth0"])
        #expect(node.hostVeths.isEmpty)
        #expect(node.pod.link(named: "eth0") == nil)
        #expect(node.kernel.host.addresses(of: "cni0") == [IPNetwork("192.0.2.1/24")!])

        let forced = node.run("ADD", bridgeConf("1.0.0", #""forceAddress":true"#))
        #expect(forced.exitCode == 0, "\(forced.text)")
        #expect(node.kernel.host.addresses(of: "cni0") == [IPNetwork("10.88.0.1/24")!])
        #expect(node.ipam.held == ["ctr1/eth0"])
    }

    /// A kernel refusal after the IP and the veth exist: the IP is released through IPAM DEL,
    /// the veth pair and the bridge this ADD created are deleted.
    @Test func failedAddRollsBackEverything() throws {
        let node = Node(ipam: Result(ips: ipamResult.ips, routes: [.init(dst: IPNetwork("0.0.0.0/0")!)]))
        node.kernel.fail(.addRoute)
        let add = node.run("ADD", bridgeConf())
        #expect(add.exitCode == 1)
        #expect(add.message?.hasPrefix("failed to configure eth0 in \(podPath)") == true, "\(add.text)")
        #expect(node.ipam.calls.map(\.description) == ["host-local ADD ctr1/eth0", "host-local DEL ctr1/eth0"])
        #expect(node.ipam.held.isEmpty)
        #expect(node.kernel.host.links.map(\.name) == ["lo"])
        #expect(node.pod.links.map(\.name) == ["lo"])
    }

    /// An IPAM plugin that timed out may hold an address: its DEL runs, and nothing is left.
    @Test func ipamWithUnknownOutcomeIsReleased() throws {
        let node = Node()
        let ipam = FakeDelegate(
            result: ipamResult,
            addFailure: .unknownOutcome(CNIError(.tryAgainLater, "plugin host-local did not finish ADD within 60.0s")))
        let bridge = Bridge(kernel: node.kernel, ipam: ipam)
        let add = dispatch(bridge, cniEnv("ADD"), bridgeConf())
        #expect(add.code == 11)
        #expect(ipam.calls.map(\.description) == ["host-local ADD ctr1/eth0", "host-local DEL ctr1/eth0"])
        #expect(ipam.held.isEmpty)
        #expect(node.kernel.host.links.map(\.name) == ["lo"])
        #expect(node.pod.links.map(\.name) == ["lo"])
    }

    /// An IPAM plugin that reported its own error holds nothing: no DEL.
    @Test func ipamErrorIsPassedThroughWithoutDel() throws {
        let node = Node()
        let ipam = FakeDelegate(
            result: ipamResult, addFailure: .reported(CNIError(.internal, "no IP addresses available in range set")))
        let add = dispatch(Bridge(kernel: node.kernel, ipam: ipam), cniEnv("ADD"), bridgeConf())
        #expect(add.message == "no IP addresses available in range set")
        #expect(ipam.calls.map(\.description) == ["host-local ADD ctr1/eth0"])
        #expect(node.hostVeths.isEmpty)
    }

    /// DEL removes the pod's interface (and with it the host end) and releases the IP; again,
    /// it is still a success.
    @Test func delRemovesTheAttachment() throws {
        let node = Node()
        #expect(node.run("ADD", bridgeConf()).exitCode == 0)
        let del = node.run("DEL", bridgeConf())
        #expect(del.exitCode == 0, "\(del.text)")
        #expect(node.pod.link(named: "eth0") == nil)
        #expect(node.hostVeths.isEmpty)
        #expect(node.ipam.held.isEmpty)
        #expect(node.run("DEL", bridgeConf()).exitCode == 0)
        // The bridge and its gateway address stay for the next pod.
        #expect(node.kernel.host.addresses(of: "cni0") == [IPNetwork("10.88.0.1/24")!])
    }

    /// The reference leaks the IP or the rules in each of these cases; podnet must not.
    @Test(arguments: ["deleted", "empty", "not-a-namespace"])
    func delWithoutTheNamespaceFreesEverything(netnsCase: String) throws {
        let nat = NATTables()
        let node = Node(runner: nat.runner)
        let conf = bridgeConf("1.0.0", #""ipMasq":true,"ipMasqBackend":"iptables""#)
        #expect(node.run("ADD", conf).exitCode == 0)
        #expect(nat.lines().contains { $0.hasPrefix("-A POSTROUTING ") && $0.contains("10.88.0.5") }, "\(nat.lines())")
        var netns = podPath
        switch netnsCase {
        case "deleted": node.kernel.removeNamespace(podPath)
        case "empty": netns = ""
        default:
            netns = "/tmp/plainfile"
            node.kernel.addPlainFile(netns)
        }
        let del = node.run("DEL", conf, netns: netns)
        #expect(del.exitCode == 0, "\(del.text)")
        #expect(node.ipam.held.isEmpty)
        #expect(node.ipam.calls.last?.description == "host-local DEL ctr1/eth0")
        #expect(nat.lines().isEmpty, "\(nat.lines())")
        #expect(nat.table().chains.isEmpty)
        if netnsCase == "deleted" { #expect(node.hostVeths.isEmpty) }
    }

    /// CHECK passes right after ADD and notices an address removed by hand.
    @Test func checkComparesTheKernelWithPrevResult() throws {
        let node = Node(ipam: Result(ips: ipamResult.ips, routes: [.init(dst: IPNetwork("0.0.0.0/0")!)]))
        let add = node.run("ADD", bridgeConf())
        #expect(add.exitCode == 0)
        let check = withPrevResult(bridgeConf(), add.text)
        let ok = node.run("CHECK", check)
        #expect(ok.exitCode == 0, "\(ok.text)")
        node.kernel.modify(podPath) { ns in
            for k in ns.addresses.keys { ns.addresses[k]?.removeAll { $0 == IPNetwork("10.88.0.5/24")! } }
        }
        let failed = node.run("CHECK", check)
        #expect(failed.message == "Failed to match addr 10.88.0.5/24 on interface eth0", "\(failed.text)")
        #expect(node.ipam.calls.filter { $0.command == .check }.count == 2)
    }

    /// Link options reach the kernel: MTU on both ends, the MAC of the pod's interface, hairpin
    /// mode on the bridge port, promiscuous bridge.
    @Test func optionsReachTheKernel() throws {
        let node = Node()
        let conf = bridgeConf("1.0.0", #""mtu":1400,"hairpinMode":true,"runtimeConfig":{"mac":"0a:58:0a:58:00:99"}"#)
        let add = node.run("ADD", conf)
        #expect(add.exitCode == 0, "\(add.text)")
        let eth0 = try #require(node.pod.link(named: "eth0"))
        #expect(eth0.mtu == 1400 && eth0.mac == MACAddress("0a:58:0a:58:00:99"))
        let veth = try #require(node.hostVeths.first)
        #expect(veth.mtu == 1400)
        #expect(node.kernel.host.hairpin[veth.index] == true)
        let ifs = try #require(add.json["interfaces"] as? [[String: Any]])
        #expect(ifs[2]["mac"] as? String == "0a:58:0a:58:00:99")

        let promisc = Node()
        #expect(promisc.run("ADD", bridgeConf("1.0.0", #""promiscMode":true"#)).exitCode == 0)
        #expect(promisc.kernel.host.link(named: "cni0")?.isPromiscuous == true)
    }

    /// A link of the bridge's name that is not a bridge: refused, and nothing is left.
    @Test func existingLinkThatIsNotABridgeIsRefused() throws {
        let node = Node()
        node.kernel.addLink("cni0", kind: "dummy")
        let add = node.run("ADD", bridgeConf())
        #expect(
            add.message == "failed to create bridge cni0: \"cni0\" already exists but is not a bridge", "\(add.text)")
        #expect(node.ipam.calls.isEmpty)
        #expect(node.hostVeths.isEmpty)
    }
}
