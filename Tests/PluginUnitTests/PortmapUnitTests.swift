// The portmap plugin in-process: its rules through a recording command runner (iptables applied to
// NATTables, nft scripts read as given), route_localnet through the in-memory kernel.

import Addressing
import CNI
import Netfilter
import Portmap
import TestSupport
import Testing

@Suite struct PortmapUnitTests {
    let kernel = InMemoryKernel()
    let nat = NATTables()
    let runner: RecordingCommandRunner

    /// The bridge's ADD result for a pod at 10.88.0.5 behind cni0.
    let prevResult = #"""
        {"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/pod"}],
         "ips":[{"address":"10.88.0.5/24","gateway":"10.88.0.1","interface":2}]}
        """#

    init() {
        runner = nat.runner
        // The node: cni0 holds the pod network's gateway, so the route to the pod leaves through it.
        let index = kernel.addLink("cni0", kind: "bridge")
        kernel.modify { $0.addresses[index] = [IPNetwork("10.88.0.1/24")!] }
    }

    var portmap: Portmap { Portmap(hostPorts: HostPorts(runner: runner), kernel: kernel) }

    func conf(_ extra: String, mappings: String = #"[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]"#) -> String
    {
        #"""
        {"cniVersion":"1.0.0","name":"pmnet","type":"portmap"\#(extra),
         "runtimeConfig":{"portMappings":\#(mappings)},"prevResult":\#(prevResult)}
        """#
    }

    /// ADD publishes the port (DNAT to the pod in the container's chain, reached from
    /// CNI-HOSTPORT-DNAT), passes the previous result through and sets route_localnet on the
    /// bridge for 127.0.0.1; DEL removes the container's chain and every jump to it.
    @Test func iptablesAddThenDel() throws {
        let add = dispatch(portmap, cniEnv("ADD"), conf(#","backend":"iptables""#))
        #expect(add.exitCode == 0, "\(add.text)")
        #expect(sameJSON(add.text, prevResult))
        let rules = nat.lines()
        let dnat = rules.filter { $0.contains("-j DNAT") }
        #expect(
            dnat.count == 1 && dnat[0].contains("-p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80"),
            "\(rules)")
        let chain = try #require(dnat.first?.split(separator: " ")[1]).description
        #expect(chain.hasPrefix("CNI-DN-"))
        #expect(rules.contains { $0.hasPrefix("-A CNI-HOSTPORT-DNAT ") && $0.contains("-j \(chain)") })
        #expect(rules.contains { $0.hasPrefix("-A PREROUTING ") && $0.contains("-j CNI-HOSTPORT-DNAT") })
        #expect(kernel.host.sysctls["net/ipv4/conf/cni0/route_localnet"] == "1")
        #expect(nat.lines("ip6tables").isEmpty)

        let del = dispatch(portmap, cniEnv("DEL"), conf(#","backend":"iptables""#))
        #expect(del.exitCode == 0, "\(del.text)")
        #expect(!nat.table().chains.contains(chain))
        #expect(!nat.lines().contains { $0.contains(chain) || $0.contains("10.88.0.5") }, "\(nat.lines())")
    }

    /// DEL finds the rules by network and container ID alone: without portMappings too.
    @Test func delWithoutPortMappings() throws {
        #expect(dispatch(portmap, cniEnv("ADD"), conf(#","backend":"iptables""#)).exitCode == 0)
        let del = dispatch(portmap, cniEnv("DEL"), #"{"cniVersion":"1.0.0","name":"pmnet","type":"portmap"}"#)
        #expect(del.exitCode == 0, "\(del.text)")
        #expect(!nat.lines().contains { $0.contains("10.88.0.5") })
    }

    /// With nftables, ADD is one `nft -f` transaction holding the DNAT.
    @Test func nftablesAdd() throws {
        let add = dispatch(portmap, cniEnv("ADD"), conf(#","backend":"nftables""#))
        #expect(add.exitCode == 0, "\(add.text)")
        #expect(runner.lines == ["nft -f -"])
        #expect(
            runner.commands[0].stdin.contains(
                "add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.88.0.5:80 comment \"ctr1\""))
        #expect(kernel.host.sysctls["net/ipv4/conf/cni0/route_localnet"] == "1")
    }

    /// Without snat, 127.0.0.1 is not masqueraded, so route_localnet is left alone.
    @Test func noRouteLocalnetWithoutSNAT() throws {
        #expect(dispatch(portmap, cniEnv("ADD"), conf(#","backend":"iptables","snat":false"#)).exitCode == 0)
        #expect(kernel.host.sysctls["net/ipv4/conf/cni0/route_localnet"] == nil)
        #expect(nat.lines().contains { $0.contains("--to-destination 10.88.0.5:80") })
    }

    /// No route leads to the pod: nothing to set, as in the reference.
    @Test func noRouteToThePod() throws {
        kernel.modify { ns in ns.addresses = ns.addresses.filter { $0.key == 1 } }
        #expect(dispatch(portmap, cniEnv("ADD"), conf(#","backend":"iptables""#)).exitCode == 0)
        #expect(!kernel.host.sysctls.keys.contains { $0.hasSuffix("route_localnet") })
    }

    /// ADD is a transaction: when route_localnet cannot be set, the rules it installed go again.
    @Test func failedAddRemovesItsRules() throws {
        kernel.fail(.writeSysctl)
        let add = dispatch(portmap, cniEnv("ADD"), conf(#","backend":"iptables""#))
        #expect(add.exitCode == 1)
        #expect(add.message?.hasPrefix("unable to enable route_localnet") == true, "\(add.text)")
        #expect(runner.commands.filter { $0.executable == "iptables-restore" }.count == 2)
        #expect(!nat.lines().contains { $0.contains("10.88.0.5") || $0.contains("CNI-DN-") }, "\(nat.lines())")
    }
}
