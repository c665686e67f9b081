// flanneld's traffic rules for both families against real ip6tables and nft, each test in its own
// network namespaces: what the renderers write is what the tools list back, a deleted IPv6 rule
// comes back, switching backends leaves no IPv6 state behind, and an IPv6 pod leaves the node
// with the node's address.

import Addressing
import Testing

@testable import Netfilter

@Suite(.enabled(if: TestNamespace.available, "needs root and iproute2 to create network namespaces"))
struct PrivilegedFlannelTrafficIPv6Tests {
    let v4 = (network: IPNetwork("10.244.0.0/16")!, subnet: IPNetwork("10.244.7.0/24")!)
    let v6 = (network: IPNetwork("fd00:10:244::/48")!, subnet: IPNetwork("fd00:10:244:7::/64")!)

    func rules(
        _ ns: TestNamespace, _ backend: NetfilterBackend, ipv4: Bool = true, forward: Bool = true
    ) -> FlannelTrafficRules {
        var o = FlannelTrafficRules.Options()
        o.masquerade = true
        o.forward = forward
        return FlannelTrafficRules(
            ipv4: ipv4 ? v4 : nil, ipv6: v6, backend: backend, options: o, runner: ns.runner)
    }

    /// `<tool> -S` of the nat and filter tables, without the policies.
    func listed(_ ns: TestNamespace, _ tool: String) throws -> [String] {
        try (ns.run(tool, "-w", "-t", "nat", "-S") + ns.run(tool, "-w", "-t", "filter", "-S"))
            .split(separator: "\n").map(String.init).filter { !$0.hasPrefix("-P ") }
    }

    /// What `ensure` installs for `rules` in `tool`, as it lists them back.
    func expected(_ rules: FlannelTrafficRules.FamilyRules) -> [String] {
        ["-N FLANNEL-POSTRTG", FlannelTrafficRules.postroutingJump.line()] + rules.postroutingRules.map { $0.line() }
            + ["-N FLANNEL-FWD", FlannelTrafficRules.forwardJump.line()] + rules.forwardRules.map { $0.line() }
    }

    /// The rules of flanneld's nft table of `family` by chain, as nft prints them; empty when
    /// there is no table.
    func nftRules(_ ns: TestNamespace, _ family: IPFamily) throws -> [String: [String]] {
        let (nftFamily, name) = FlannelTrafficRules.nftTable(family)
        let listing = try ns.runner.run(Command("nft", ["-a", "list", "table", nftFamily, name]))
        guard listing.status == 0 else { return [:] }
        return Dictionary(grouping: NFTListing(parsing: listing.stdout).rules, by: \.chain).mapValues { $0.map(\.body) }
    }

    func nftExpected(_ rules: FlannelTrafficRules.FamilyRules) -> [String: [String]] {
        ["postrtg": rules.nftPostroutingRules(fullyRandom: true), "forward": rules.nftForwardRules]
    }

    @Test func ip6tablesGetsTheIPv6RulesNextToTheIPv4OnesAndARepair() throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            let dual = rules(ns, .iptables)
            #expect(try dual.ensure())
            // The renderers' exact rules are what each tool lists back, jumps included.
            #expect(try listed(ns, "iptables") == expected(dual.ipv4!))
            let installed = try listed(ns, "ip6tables")
            #expect(installed == expected(dual.ipv6!))
            #expect(installed.contains { $0.contains("-s fd00:10:244::/48 ! -d ff00::/8") })
            #expect(try !dual.ensure())

            // An IPv6 rule deleted by hand, and the IPv6 jump to the forward chain, come back once;
            // the IPv4 rules stay as they are.
            try ns.run(
                "ip6tables", "-w", "-t", "nat", "-D", "FLANNEL-POSTRTG", "-s", "fd00:10:244::/48", "!", "-d",
                "ff00::/8",
                "-m", "comment", "--comment", "flanneld masq", "-j", "MASQUERADE", "--random-fully")
            try ns.run(
                "ip6tables", "-w", "-t", "filter", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward",
                "-j", "FLANNEL-FWD")
            #expect(try listed(ns, "ip6tables") != installed)
            #expect(try dual.ensure())
            #expect(try listed(ns, "ip6tables") == installed)
            #expect(try listed(ns, "iptables") == expected(dual.ipv4!))
            #expect(try !dual.ensure())

            // A flushed IPv6 chain too.
            try ns.run("ip6tables", "-w", "-t", "nat", "-F", "FLANNEL-POSTRTG")
            #expect(try dual.ensure())
            #expect(try listed(ns, "ip6tables") == installed)
        }
    }

    @Test func nftGetsTheIP6TableNextToTheIPTableAndARepair() throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            let dual = rules(ns, .nftables)
            #expect(try dual.ensure())
            #expect(try nftRules(ns, .v4) == nftExpected(dual.ipv4!))
            #expect(try nftRules(ns, .v6) == nftExpected(dual.ipv6!))
            let table = try ns.run("nft", "list", "table", "ip6", "flannel-ipv6")
            #expect(table.contains("comment \"rules for flannel-ipv6\""))
            #expect(table.contains("type nat hook postrouting priority srcnat; policy accept;"))
            #expect(table.contains("type filter hook forward priority filter; policy accept;"))
            #expect(try !dual.ensure())

            // One IPv6 rule deleted by hand.
            let chain = try ns.run("nft", "-a", "list", "chain", "ip6", "flannel-ipv6", "postrtg")
            let handle = try #require(NFTListing(parsing: chain).rules.last?.handle)
            try ns.run("nft", "delete", "rule", "ip6", "flannel-ipv6", "postrtg", "handle", String(handle))
            #expect(try nftRules(ns, .v6) != nftExpected(dual.ipv6!))
            #expect(try dual.ensure())
            #expect(try nftRules(ns, .v6) == nftExpected(dual.ipv6!))
            #expect(try !dual.ensure())

            // The whole IPv6 table deleted; the IPv4 one is left alone.
            try ns.run("nft", "delete", "table", "ip6", "flannel-ipv6")
            #expect(try dual.ensure())
            #expect(try nftRules(ns, .v6) == nftExpected(dual.ipv6!))
            #expect(try nftRules(ns, .v4) == nftExpected(dual.ipv4!))
            #expect(try !dual.ensure())
        }
    }

    /// iptables -> nftables -> iptables, dual stack: neither family of the old backend is left.
    /// IPv6-only in nftables mode removes only ip6tables' side.
    @Test func switchingBackendsLeavesNoIPv6State() throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            let ipt = rules(ns, .iptables), nft = rules(ns, .nftables)
            #expect(try ipt.ensure())
            #expect(try ns.run("ip6tables-save").contains("FLANNEL-POSTRTG"))

            #expect(try nft.removeOtherBackend())
            #expect(try !ns.run("ip6tables-save").contains("FLANNEL"))
            #expect(try !ns.run("iptables-save").contains("FLANNEL"))
            #expect(try nft.ensure())
            #expect(try !nft.removeOtherBackend())

            #expect(try ipt.removeOtherBackend())
            #expect(try !ns.run("nft", "list", "ruleset").contains("flannel"))
            #expect(try ipt.ensure())
            #expect(try !ipt.removeOtherBackend())

            let v6Only = rules(ns, .nftables, ipv4: false)
            #expect(try v6Only.removeOtherBackend())
            #expect(try !ns.run("ip6tables-save").contains("FLANNEL"))
            #expect(try listed(ns, "iptables") == expected(ipt.ipv4!))
            #expect(try v6Only.ensure())
            #expect(try nftRules(ns, .v6) == nftExpected(v6Only.ipv6!))
            #expect(try nftRules(ns, .v4) == [:])
        }
    }

    /// An IPv6 pod behind the node reaches an outside host that accepts echo requests from the
    /// node's address only (it has a route back to the overlay, so only the source address can
    /// make the difference): it does once the IPv6 masquerade is in place, in either backend.
    @Test(arguments: NetfilterBackend.allCases)
    func ipv6PodsReachTheOutsideWithTheNodesAddress(backend: NetfilterBackend) throws {
        try TestNamespace.with(3) { nss throws in
            let (node, pod, outside) = (nss[0], nss[1], nss[2])
            try node.run("ip", "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", pod.name)
            try node.run("ip", "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", outside.name)
            try node.run("ip", "-6", "addr", "add", "fd00:10:244:7::1/64", "dev", "pod0", "nodad")
            try node.run("ip", "-6", "addr", "add", "2001:db8:200::1/64", "dev", "out0", "nodad")
            for link in ["lo", "pod0", "out0"] { try node.run("ip", "link", "set", link, "up") }
            try node.run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
            try pod.run("ip", "-6", "addr", "add", "fd00:10:244:7::2/64", "dev", "eth0", "nodad")
            try pod.run("ip", "link", "set", "eth0", "up")
            try pod.run("ip", "-6", "route", "add", "default", "via", "fd00:10:244:7::1")
            try outside.run("ip", "-6", "addr", "add", "2001:db8:200::2/64", "dev", "eth0", "nodad")
            try outside.run("ip", "link", "set", "eth0", "up")
            try outside.run("ip", "-6", "route", "add", "fd00:10:244::/48", "via", "2001:db8:200::1")
            try outside.run(
                "ip6tables", "-w", "-A", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type", "echo-request", "!", "-s",
                "2001:db8:200::1", "-j", "DROP")
            // One echo request; a reply that never comes is given a second.
            func reaches() throws -> Bool {
                try pod.runner.run(Command("ping", ["-6", "-c1", "-W1", "2001:db8:200::2"])).status == 0
            }
            // The path itself works: the node reaches the outside host from its own address.
            #expect(try node.runner.run(Command("ping", ["-6", "-c1", "-W1", "2001:db8:200::2"])).status == 0)

            #expect(try !reaches())
            #expect(try rules(node, backend).ensure())
            #expect(try reaches())
        }
    }
}
