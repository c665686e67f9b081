// flanneld's traffic rules against real iptables and nft, each test in its own network namespace:
// what the renderers write is what the tools list back, repairs, and switching backends.

import Addressing
import Testing

@testable import Netfilter

@Suite(.enabled(if: TestNamespace.available, "needs root and iproute2 to create network namespaces"))
struct PrivilegedFlannelTrafficTests {
    let network = IPNetwork("10.244.0.0/16")!
    let subnet = IPNetwork("10.244.7.0/24")!

    func rules(
        _ ns: TestNamespace, _ backend: NetfilterBackend, masquerade: Bool = true, forward: Bool = true,
        fullyRandom: Bool = true
    ) -> FlannelTrafficRules {
        var o = FlannelTrafficRules.Options()
        o.masquerade = masquerade
        o.forward = forward
        o.fullyRandom = fullyRandom
        return FlannelTrafficRules(network: network, subnet: subnet, backend: backend, options: o, runner: ns.runner)
    }

    /// `iptables -S` of the nat and filter tables, without the policies.
    func iptablesRules(_ ns: TestNamespace) throws -> [String] {
        try (ns.run("iptables", "-w", "-t", "nat", "-S") + ns.run("iptables", "-w", "-t", "filter", "-S"))
            .split(separator: "\n").map(String.init).filter { !$0.hasPrefix("-P ") }
    }

    /// The rules of flanneld's nft table by chain, as nft prints them; empty when there is no table.
    func nftRules(_ ns: TestNamespace) throws -> [String: [String]] {
        let listing = try ns.runner.run(Command("nft", ["-a", "list", "table", "ip", "flannel-ipv4"]))
        guard listing.status == 0 else { return [:] }
        return Dictionary(grouping: NFTListing(parsing: listing.stdout).rules, by: \.chain).mapValues { $0.map(\.body) }
    }

    @Test func iptablesEnsureIsIdempotentAndRestoresADeletedRule() throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            let masq = rules(ns, .iptables)
            #expect(try masq.ensure())
            let installed = try iptablesRules(ns)
            // The renderer's exact rules are what iptables lists back, jumps included.
            let expected =
                ["-N FLANNEL-POSTRTG", FlannelTrafficRules.postroutingJump.line()]
                + masq.ipv4!.postroutingRules.map { $0.line() }
                + ["-N FLANNEL-FWD", FlannelTrafficRules.forwardJump.line()] + masq.ipv4!.forwardRules.map { $0.line() }
            #expect(installed == expected)

            #expect(try !masq.ensure())
            #expect(try iptablesRules(ns) == installed)

            // A rule deleted by hand (and the jump to the forward chain) comes back, once.
            try ns.run(
                "iptables", "-w", "-t", "nat", "-D", "FLANNEL-POSTRTG", "-s", "10.244.0.0/16", "!", "-d", "224.0.0.0/4",
                "-m", "comment", "--comment", "flanneld masq", "-j", "MASQUERADE", "--random-fully")
            try ns.run(
                "iptables", "-w", "-t", "filter", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward",
                "-j", "FLANNEL-FWD")
            #expect(try iptablesRules(ns) != installed)
            #expect(try masq.ensure())
            #expect(try iptablesRules(ns) == installed)
            #expect(try !masq.ensure())

            // A flushed chain too (what flanneld's restart does for a moment).
            try ns.run("iptables", "-w", "-t", "filter", "-F", "FLANNEL-FWD")
            #expect(try masq.ensure())
            #expect(try iptablesRules(ns) == installed)
        }
    }

    @Test func nftEnsureIsIdempotentAndRestoredAfterAFlushedRuleset() throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            let nft = rules(ns, .nftables)
            #expect(try nft.ensure())
            // What the renderer compares with is what nft prints back.
            let expected = [
                "postrtg": nft.ipv4!.nftPostroutingRules(fullyRandom: true), "forward": nft.ipv4!.nftForwardRules,
            ]
            #expect(try nftRules(ns) == expected)
            let table = try ns.run("nft", "list", "table", "ip", "flannel-ipv4")
            #expect(table.contains("comment \"rules for flannel-ipv4\""))
            #expect(table.contains("type nat hook postrouting priority srcnat; policy accept;"))
            #expect(table.contains("type filter hook forward priority filter; policy accept;"))
            #expect(try !nft.ensure())

            try ns.run("nft", "flush", "ruleset")
            #expect(try nftRules(ns) == [:])
            #expect(try nft.ensure())
            #expect(try nftRules(ns) == expected)
            #expect(try !nft.ensure())

            // One rule deleted by hand.
            let chain = try ns.run("nft", "-a", "list", "chain", "ip", "flannel-ipv4", "forward")
            let handle = try #require(NFTListing(parsing: chain).rules.first?.handle)
            try ns.run("nft", "delete", "rule", "ip", "flannel-ipv4", "forward", "handle", String(handle))
            #expect(try nft.ensure())
            #expect(try nftRules(ns) == expected)
            #expect(try !nft.ensure())

            // Without fully-random.
            let plain = rules(ns, .nftables, fullyRandom: false)
            #expect(try plain.ensure())
            #expect(try nftRules(ns)["postrtg"] == nft.ipv4!.nftPostroutingRules(fullyRandom: false))
            #expect(try !plain.ensure())
        }
    }

    /// iptables -> nftables -> iptables, as a node moved by its config would, start-up each time:
    /// no rule of the old backend is left.
    @Test func switchingBackendsLeavesNothingOfTheOld() throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            let ipt = rules(ns, .iptables), nft = rules(ns, .nftables)
            #expect(try !ipt.removeOtherBackend())
            #expect(try ipt.ensure())
            #expect(try ns.run("iptables-save").contains("FLANNEL-POSTRTG"))

            #expect(try nft.removeOtherBackend())
            #expect(try nft.ensure())
            #expect(try !ns.run("iptables-save").contains("FLANNEL"))
            #expect(try !ns.run("iptables-save").contains("flanneld"))
            #expect(try nftRules(ns).keys.sorted() == ["forward", "postrtg"])
            #expect(try !nft.removeOtherBackend())

            #expect(try ipt.removeOtherBackend())
            #expect(try !ns.run("nft", "list", "ruleset").contains("flannel"))
            #expect(try ipt.ensure())
            #expect(try iptablesRules(ns).filter { $0.contains("FLANNEL") }.count == 12)
            #expect(try !ipt.removeOtherBackend())
        }
    }

    /// flanneld's own iptables CleanUp names nat FLANNEL-FWD; removing the iptables side deletes
    /// it too, and chains that others jump to from elsewhere lose those jumps first.
    @Test func removingTheIPTablesSideTakesEveryFlanneldChain() throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            #expect(try rules(ns, .iptables).ensure())
            try ns.run("iptables", "-w", "-t", "nat", "-N", "FLANNEL-FWD")
            try ns.run("iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-j", "FLANNEL-FWD")
            #expect(try rules(ns, .nftables).removeOtherBackend())
            #expect(try !ns.run("iptables-save").contains("FLANNEL"))
        }
    }

    @Test(arguments: NetfilterBackend.allCases)
    func turningAPartOffRemovesIt(backend: NetfilterBackend) throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            #expect(try rules(ns, backend).ensure())
            let forwardOnly = rules(ns, backend, masquerade: false)
            #expect(try forwardOnly.ensure())
            #expect(try !forwardOnly.ensure())
            let masqOnly = rules(ns, backend, forward: false)
            switch backend {
            case .iptables:
                let left = try iptablesRules(ns)
                #expect(!left.contains { $0.contains("FLANNEL-POSTRTG") || $0.contains("flanneld masq") })
                #expect(left.filter { $0.contains("FLANNEL-FWD") }.count == 4)
                #expect(try masqOnly.ensure())
                let now = try iptablesRules(ns)
                #expect(!now.contains { $0.contains("FLANNEL-FWD") || $0.contains("flanneld forward") })
                #expect(now.filter { $0.contains("FLANNEL-POSTRTG") }.count == 8)
            case .nftables:
                #expect(try nftRules(ns).keys.sorted() == ["forward"])
                #expect(try !ns.run("nft", "list", "table", "ip", "flannel-ipv4").contains("postrtg"))
                #expect(try masqOnly.ensure())
                #expect(try nftRules(ns).keys.sorted() == ["postrtg"])
                #expect(try !ns.run("nft", "list", "table", "ip", "flannel-ipv4").contains("chain forward"))
            }
            #expect(try !masqOnly.ensure())
        }
    }

    /// What flanneld itself writes (its restore script and its nft transaction, from the reference
    /// document) counts as in place: a node moved from flanneld to podnetd keeps its rules untouched.
    @Test func flanneldsOwnRulesAreInPlace() throws {
        try TestNamespace.with { nss throws in
            let ns = nss[0]
            let masq = #"-m comment --comment "flanneld masq""#
            let forward = #"-m comment --comment "flanneld forward""#
            let restore = """
                *nat
                :FLANNEL-POSTRTG - [0:0]
                -A POSTROUTING \(masq) -j FLANNEL-POSTRTG
                -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 \(masq) -j RETURN
                -A FLANNEL-POSTRTG -s 10.244.7.0/24 -d 10.244.0.0/16 \(masq) -j RETURN
                -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.7.0/24 \(masq) -j RETURN
                -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.7.0/24 \(masq) -j RETURN
                -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 \(masq) -j MASQUERADE --random-fully
                -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 \(masq) -j MASQUERADE --random-fully
                COMMIT
                *filter
                :FLANNEL-FWD - [0:0]
                -A FORWARD \(forward) -j FLANNEL-FWD
                -A FLANNEL-FWD -s 10.244.0.0/16 \(forward) -j ACCEPT
                -A FLANNEL-FWD -d 10.244.0.0/16 \(forward) -j ACCEPT
                COMMIT

                """
            _ = try ns.runner.succeed(Command("iptables-restore", ["--noflush", "-w"], stdin: restore))
            #expect(try !rules(ns, .iptables).ensure())

            let t = "ip flannel-ipv4"
            let nft = """
                add table \(t) { comment "rules for flannel-ipv4" ; }
                add chain \(t) postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }
                flush chain \(t) postrtg
                add rule \(t) postrtg meta mark 0x4000 return
                add rule \(t) postrtg ip saddr 10.244.7.0/24 ip daddr 10.244.0.0/16 return
                add rule \(t) postrtg ip saddr 10.244.0.0/16 ip daddr 10.244.7.0/24 return
                add rule \(t) postrtg ip saddr != 10.244.7.0/24 ip daddr 10.244.0.0/16 return
                add rule \(t) postrtg ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
                add rule \(t) postrtg ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
                add chain \(t) forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }
                flush chain \(t) forward
                add rule \(t) forward ip saddr 10.244.0.0/16 accept
                add rule \(t) forward ip daddr 10.244.0.0/16 accept

                """
            _ = try ns.runner.succeed(Command("nft", ["-f", "-"], stdin: nft))
            #expect(try !rules(ns, .nftables).ensure())
        }
    }

    /// Traffic: a pod behind the node reaches an outside host that has no route back to the overlay
    /// only through the masquerade; with iptables' FORWARD policy DROP (a host with Docker), only
    /// through the forward rules. (nftables' forward chain cannot help there: an accept in one base
    /// chain does not stop another table's chain on the same hook from dropping.)
    @Test(arguments: NetfilterBackend.allCases)
    func podsReachTheOutsideThroughTheMasquerade(backend: NetfilterBackend) throws {
        try TestNamespace.with(3) { nss throws in
            let (node, pod, outside) = (nss[0], nss[1], nss[2])
            try node.run("ip", "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", pod.name)
            try node.run("ip", "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", outside.name)
            try node.run("ip", "addr", "add", "10.244.7.1/24", "dev", "pod0")
            try node.run("ip", "addr", "add", "192.168.200.1/24", "dev", "out0")
            for link in ["lo", "pod0", "out0"] { try node.run("ip", "link", "set", link, "up") }
            try node.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
            try pod.run("ip", "addr", "add", "10.244.7.2/24", "dev", "eth0")
            try pod.run("ip", "link", "set", "eth0", "up")
            try pod.run("ip", "route", "add", "default", "via", "10.244.7.1")
            try outside.run("ip", "addr", "add", "192.168.200.2/24", "dev", "eth0")
            try outside.run("ip", "link", "set", "eth0", "up")
            // One echo request; a reply that never comes is given a second.
            func reaches() throws -> Bool {
                try pod.runner.run(Command("ping", ["-c1", "-W1", "192.168.200.2"])).status == 0
            }

            #expect(try !reaches())
            #expect(try rules(node, backend).ensure())
            #expect(try reaches())
            guard backend == .iptables else { return }
            try node.run("iptables", "-w", "-P", "FORWARD", "DROP")
            #expect(try reaches())
            #expect(try rules(node, .iptables, forward: false).ensure())
            #expect(try !reaches())
        }
    }
}
