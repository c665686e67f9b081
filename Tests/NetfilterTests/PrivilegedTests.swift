// The library against real iptables and nft, each test in its own network namespace.

import Addressing
import Testing

@testable import Netfilter

@Suite(.enabled(if: TestNamespace.available, "needs root and iproute2 to create network namespaces"))
struct PrivilegedMasqueradeTests {
    let network = "podnet-test"
    let dual = [IPNetwork("10.77.0.5/24")!, IPNetwork("fd77::5/64")!]

    @Test func iptablesSetupIsIdempotentAndTeardownNeedsNoAddresses() throws {
        try TestNamespace.with { nss in
            let ns = nss[0]
            let m = Masquerade(runner: ns.runner)
            let chain = MasqueradeNames.iptablesChain(network: network, containerID: "ctr-1")
            let comment = #"--comment "name: \"podnet-test\" id: \"ctr-1\"""#
            try m.setup(backend: .iptables, network: network, containerID: "ctr-1", ifname: "eth0", addresses: dual)
            try m.setup(backend: .iptables, network: network, containerID: "ctr-1", ifname: "eth0", addresses: dual)
            #expect(
                try ns.natRules() == [
                    "-N \(chain)",
                    "-A POSTROUTING -s 10.77.0.5/32 -m comment \(comment) -j \(chain)",
                    "-A \(chain) -d 10.77.0.0/24 -m comment \(comment) -j ACCEPT",
                    "-A \(chain) ! -d 224.0.0.0/4 -m comment \(comment) -j MASQUERADE",
                    "-N \(chain)",
                    "-A POSTROUTING -s fd77::5/128 -m comment \(comment) -j \(chain)",
                    "-A \(chain) -d fd77::/64 -m comment \(comment) -j ACCEPT",
                    "-A \(chain) ! -d ff00::/8 -m comment \(comment) -j MASQUERADE",
                ])
            #expect(
                try m.check(backend: .iptables, network: network, containerID: "ctr-1", ifname: "eth0", addresses: dual)
            )

            // A new address for the same attachment replaces the old jump.
            try m.setup(
                backend: .iptables, network: network, containerID: "ctr-1", ifname: "eth0",
                addresses: [IPNetwork("10.77.0.6/24")!])
            let v4 = try ns.run("iptables", "-w", "-t", "nat", "-S", "POSTROUTING")
            #expect(v4.contains("-s 10.77.0.6/32") && !v4.contains("-s 10.77.0.5/32"))

            try m.teardown(network: network, containerID: "ctr-1", ifname: "eth0")
            #expect(try ns.natRules() == [])
            #expect(
                try !m.check(
                    backend: .iptables, network: network, containerID: "ctr-1", ifname: "eth0", addresses: dual))
            try m.teardown(network: network, containerID: "ctr-1", ifname: "eth0")
        }
    }

    @Test func nftablesSetupIsIdempotentAndTeardownNeedsNoAddresses() throws {
        try TestNamespace.with { nss in
            let ns = nss[0]
            let m = Masquerade(runner: ns.runner)
            let comment = MasqueradeNames.nftComment(network: network, ifname: "eth0", containerID: "ctr-1")
            try m.setup(backend: .nftables, network: network, containerID: "ctr-1", ifname: "eth0", addresses: dual)
            try m.setup(backend: .nftables, network: network, containerID: "ctr-1", ifname: "eth0", addresses: dual)
            try m.setup(
                backend: .nftables, network: network, containerID: "ctr-2", ifname: "eth0",
                addresses: [IPNetwork("10.77.0.9/24")!])
            let listing = try ns.run("nft", "list", "table", "inet", "cni_plugins_masquerade")
            let rules = listing.split(separator: "\n").map { $0.trimmingBlanks }
            #expect(
                rules.filter { $0.contains(comment) } == [
                    "ip saddr 10.77.0.5 ip daddr != 10.77.0.0/24 masquerade comment \"\(comment)\"",
                    "ip6 saddr fd77::5 ip6 daddr != fd77::/64 masquerade comment \"\(comment)\"",
                ])
            #expect(rules.contains("type nat hook postrouting priority srcnat; policy accept;"))
            #expect(rules.filter { $0 == "goto masq_checks" }.count == 1)
            #expect(
                rules.filter { $0.hasSuffix("masquerade comment \"\(comment)\"") || $0.contains("id: ctr-2") }.count
                    == 3)
            #expect(
                try m.check(backend: .nftables, network: network, containerID: "ctr-1", ifname: "eth0", addresses: dual)
            )

            try m.teardown(network: network, containerID: "ctr-1", ifname: "eth0")
            let after = try ns.run("nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks")
            #expect(!after.contains("id: ctr-1") && after.contains("id: ctr-2"))
            #expect(
                try !m.check(
                    backend: .nftables, network: network, containerID: "ctr-1", ifname: "eth0", addresses: dual))
            try m.teardown(network: network, containerID: "ctr-1", ifname: "eth0")
        }
    }

    @Test func teardownWithNothingThereSucceeds() throws {
        try TestNamespace.with { nss in
            try Masquerade(runner: nss[0].runner).teardown(network: network, containerID: "never", ifname: "eth0")
            try Masquerade(runner: nss[0].runner).gc(network: network, valid: [])
            #expect(try nss[0].natRules() == [])
        }
    }

    @Test func gcRemovesOnlyInvalidAttachments() throws {
        try TestNamespace.with { nss in
            let ns = nss[0]
            let m = Masquerade(runner: ns.runner)
            for (i, backend) in [Masquerade.Backend.iptables, .nftables].enumerated() {
                for (j, cid) in ["keep", "drop"].enumerated() {
                    try m.setup(
                        backend: backend, network: network, containerID: cid, ifname: "eth0",
                        addresses: [IPNetwork("10.77.\(i).\(j + 2)/24")!, IPNetwork("fd77:\(i)::\(j + 2)/64")!])
                }
            }
            // Another network's rules are never touched.
            try m.setup(
                backend: .iptables, network: "other", containerID: "drop", ifname: "eth0",
                addresses: [IPNetwork("10.78.0.2/24")!])
            try m.setup(
                backend: .nftables, network: "other", containerID: "drop", ifname: "eth0",
                addresses: [IPNetwork("10.78.0.2/24")!])

            try m.gc(network: network, valid: [.init(containerID: "keep", ifname: "eth0")])

            let ipt = try ns.natRules().joined(separator: "\n")
            let nft = try ns.run("nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks")
            #expect(ipt.contains(MasqueradeNames.iptablesChain(network: network, containerID: "keep")))
            #expect(!ipt.contains(MasqueradeNames.iptablesChain(network: network, containerID: "drop")))
            #expect(ipt.contains(MasqueradeNames.iptablesChain(network: "other", containerID: "drop")))
            #expect(nft.contains("net: podnet-test, if: eth0, id: keep"))
            #expect(!nft.contains("net: podnet-test, if: eth0, id: drop"))
            #expect(nft.contains("net: other, if: eth0, id: drop"))
            for backend in [Masquerade.Backend.iptables, .nftables] {
                #expect(
                    try m.check(
                        backend: backend, network: network, containerID: "keep", ifname: "eth0",
                        addresses: [IPNetwork(backend == .iptables ? "10.77.0.2/24" : "10.77.1.2/24")!]))
            }
        }
    }
}
