// The nftables backends over netlink against a recording kernel: one listing and one batch per
// ADD and DEL, no process, and `nft -f` only when the kernel refuses the batch.

import Addressing
import Netlink
import TestSupport
import Testing

@testable import Netfilter

@Suite struct NetlinkMasqueradeUnitTests {
    let dual = [IPNetwork("10.99.0.2/24")!, IPNetwork("fd99::2/64")!]
    let m = NFTMasquerade(network: "mynet", ifname: "eth0", containerID: "abc123")

    func setup(_ masq: Masquerade) throws {
        try masq.setup(backend: .nftables, network: "mynet", containerID: "abc123", ifname: "eth0", addresses: dual)
    }

    @Test func setupIsOneListingAndOneBatchWithoutProcesses() throws {
        let old = NFTListedRule(chain: "masq_checks", handle: 9, comment: m.comment, expressions: [])
        let other = NFTListedRule(chain: "masq_checks", handle: 10, comment: "0000-1111, net: x", expressions: [])
        let kernel = RecordingNFTables(listing: { _, _, _ in [old, other] })
        let fake = RecordingCommandRunner()
        try setup(Masquerade(runner: fake, nftables: kernel))
        #expect(fake.lines == [])
        #expect(kernel.listings == ["inet cni_plugins_masquerade"])
        #expect(kernel.batches == [m.setupBatch(addresses: dual, stale: [9])])
        #expect(kernel.batches[0].operations.contains { if case .flushChain = $0 { true } else { false } })
    }

    @Test func aPostroutingChainThatIsRightIsNotRebuilt() throws {
        // What the kernel lists after a first setup.
        let listed = m.setupBatch(addresses: dual, stale: []).operations.enumerated().compactMap {
            i, op -> NFTListedRule? in
            guard case .addRule(_, _, let chain, let e, let c) = op else { return nil }
            return NFTListedRule(chain: chain, handle: UInt64(i), comment: c, expressions: e)
        }
        #expect(NFTMasquerade.postroutingIsCurrent(listed))
        let kernel = RecordingNFTables(listing: { _, _, _ in listed })
        try setup(Masquerade(runner: RecordingCommandRunner(), nftables: kernel))
        let ops = try #require(kernel.batches.first).operations
        #expect(!ops.contains { if case .flushChain = $0 { true } else { false } })
        #expect(ops.filter { if case .deleteRule = $0 { true } else { false } }.count == 2)
        #expect(ops.filter { if case .addRule = $0 { true } else { false } }.count == 2)

        // One rule of postrouting missing: rebuilt.
        #expect(!NFTMasquerade.postroutingIsCurrent(listed.filter { $0.handle != 6 }))
    }

    @Test func teardownDeletesTheAttachmentsRulesInOneBatch() throws {
        let mine = NFTListedRule(chain: "masq_checks", handle: 9, comment: m.comment, expressions: [])
        let other = NFTListedRule(chain: "masq_checks", handle: 10, comment: "0000-1111, net: x", expressions: [])
        let kernel = RecordingNFTables(listing: { _, _, _ in [mine, other] })
        let fake = RecordingCommandRunner()
        try Masquerade(runner: fake, nftables: kernel).teardown(
            network: "mynet", containerID: "abc123", ifname: "eth0", families: [.v4])
        #expect(fake.lines == ["iptables -w -t nat -S"])
        #expect(kernel.batches == [NFTMasquerade.deleteBatch(handles: [9])])

        // Nothing of the attachment's: a listing and no batch.
        let empty = RecordingNFTables(listing: { _, _, _ in [other] })
        try Masquerade(runner: fake, nftables: empty).teardown(
            network: "mynet", containerID: "abc123", ifname: "eth0", families: [])
        #expect(empty.batches == [])
    }

    @Test func teardownStartsNoIPTablesWhenNFTablesShowsItHoldsNothing() throws {
        let mine = NFTListedRule(chain: "masq_checks", handle: 9, comment: m.comment, expressions: [])
        let chain = IPTablesMasquerade(family: .v4, network: "mynet", containerID: "abc123").chain
        // iptables-nft keeps its nat table in nf_tables as `ip nat`: no rule in the attachment's
        // chain and no jump to it from POSTROUTING, so iptables holds nothing of it.
        let jump = NFTListedRule(chain: "POSTROUTING", handle: 3, comment: nil, expressions: [.verdict(.jump(chain))])
        for (postrouting, expected) in [([NFTListedRule](), [String]()), ([jump], ["iptables -w -t nat -S"])] {
            let kernel = RecordingNFTables(listing: { family, table, c in
                switch (family, table, c) {
                case (.inet, _, _): [mine]
                case (.ip, "nat", "POSTROUTING"): postrouting
                default: []
                }
            })
            let fake = RecordingCommandRunner()
            try Masquerade(runner: fake, nftables: kernel).teardown(
                network: "mynet", containerID: "abc123", ifname: "eth0", families: [.v4])
            #expect(fake.lines == expected)
            #expect(kernel.listings.prefix(2) == ["ip nat \(chain)", "ip nat POSTROUTING"])
            #expect(kernel.batches == [NFTMasquerade.deleteBatch(handles: [9])])
        }
    }

    @Test func aRefusedBatchFallsBackToNft() throws {
        let kernel = RecordingNFTables(failure: { _ in RecordingNFTables.refusal })
        let fake = RecordingCommandRunner()
        try setup(Masquerade(runner: fake, nftables: kernel))
        #expect(
            fake.lines == ["nft -a list chain inet cni_plugins_masquerade masq_checks", "nft -f -"])
        #expect(fake.commands[1].stdin == m.setupScript(addresses: dual, stale: []))
    }

    @Test func otherKernelErrorsAreReportedWithTheOperation() throws {
        let denied = NetfilterError.netlink(
            .libnl(.permission, operation: "nf_tables batch of 9", message: "Operation not permitted"))
        let kernel = RecordingNFTables(failure: { _ in denied })
        let fake = RecordingCommandRunner()
        #expect(throws: denied) { try setup(Masquerade(runner: fake, nftables: kernel)) }
        #expect(fake.lines == [])
        #expect(denied.description == "nftables: nf_tables batch of 9: Operation not permitted")
    }

    @Test func aVanishedHandleIsListedAgainOnce() throws {
        let old = NFTListedRule(chain: "masq_checks", handle: 9, comment: m.comment, expressions: [])
        let gone = NetfilterError.netlink(
            .libnl(
                .notFound, operation: "NFT_MSG_DELRULE inet cni_plugins_masquerade masq_checks handle 9",
                message: "No such file or directory"))
        let kernel = RecordingNFTables(
            listing: { _, _, _ in [old] },
            failure: { $0.operations.contains { if case .deleteRule = $0 { true } else { false } } ? gone : nil })
        #expect(throws: gone) { try setup(Masquerade(runner: RecordingCommandRunner(), nftables: kernel)) }
        #expect(kernel.listings.count == 2)
    }
}

@Suite struct NetlinkPortmapUnitTests {
    let container = IPNetwork("10.88.0.5/16")!
    var forwarding: PortForwarding {
        PortForwarding(
            network: "pmnet", containerID: "ctr1",
            mappings: [
                PortMapping(hostPort: 8080, containerPort: 80, proto: "tcp"),
                PortMapping(hostPort: 5353, containerPort: 53, proto: "udp"),
            ])
    }

    @Test func setupIsOneBatchWithoutProcesses() throws {
        let kernel = RecordingNFTables()
        let fake = RecordingCommandRunner()
        #expect(
            try HostPorts(runner: fake, nftables: kernel).setup(backend: .nftables, forwarding, addresses: [container])
                == .nftables)
        #expect(fake.lines == [])
        #expect(kernel.listings == ["ip cni_hostport"])
        let ops = try #require(
            NFTPortmap(family: .v4, forwarding: forwarding).setupOperations(container: container.address))
        #expect(kernel.batches == [NFTBatch(ops)])
    }

    @Test func jumpChainsThatAreRightAreNotRebuilt() throws {
        let first = try #require(
            NFTPortmap(family: .v4, forwarding: forwarding).setupOperations(container: container.address))
        let listed = first.enumerated().compactMap { i, op -> NFTListedRule? in
            guard case .addRule(_, _, let chain, let e, let c) = op else { return nil }
            return NFTListedRule(chain: chain, handle: UInt64(i), comment: c, expressions: e)
        }
        let again = try #require(
            NFTPortmap(family: .v4, forwarding: forwarding).setupOperations(
                container: container.address, listed: listed))
        #expect(!again.contains { if case .flushChain = $0 { true } else { false } })
        #expect(again.count == first.count - 3 - 4)  // 3 flushes, 4 jump rules
        // Other conditions: prerouting and output are rebuilt, hostports_all is kept.
        var f = forwarding
        f.conditionsV4 = ["ip", "saddr", "10.0.0.0/8"]
        let changed = try #require(
            NFTPortmap(family: .v4, forwarding: f).setupOperations(container: container.address, listed: listed))
        #expect(
            changed.compactMap { if case .flushChain(_, _, let c) = $0 { c } else { nil } } == ["prerouting", "output"])
    }

    @Test func aRefusedBatchFallsBackToNft() throws {
        let kernel = RecordingNFTables(failure: { _ in RecordingNFTables.refusal })
        let fake = RecordingCommandRunner()
        try HostPorts(runner: fake, nftables: kernel).setup(backend: .nftables, forwarding, addresses: [container])
        #expect(fake.lines == ["nft -f -"])
        #expect(
            fake.commands[0].stdin
                == (NFTPortmap(family: .v4, forwarding: forwarding).setupLines(container: container.address) + [""])
                .joined(separator: "\n"))
    }

    @Test func teardownDeletesByHandleAndReportsTheUDPPortsOfTheDump() throws {
        let ops = try #require(
            NFTPortmap(family: .v4, forwarding: forwarding).setupOperations(container: container.address))
        let rules = ops.enumerated().compactMap { i, op -> NFTListedRule? in
            guard case .addRule(_, _, let chain, let e, let c) = op else { return nil }
            return NFTListedRule(chain: chain, handle: UInt64(i), comment: c, expressions: e)
        }
        let kernel = RecordingNFTables(listing: { family, _, _ in family == .ip ? rules : [] })
        let fake = RecordingCommandRunner()
        let removed = try HostPorts(runner: fake, nftables: kernel).teardown(
            backend: .nftables, network: "pmnet", containerID: "ctr1")
        #expect(removed == [UDPPort(family: .v4, port: 5353)])
        #expect(fake.lines == [])
        #expect(kernel.listings == ["ip cni_hostport", "ip6 cni_hostport"])
        let mine = rules.filter { $0.comment == "ctr1" }
        #expect(mine.count == 4)  // two DNAT rules, hairpin and localhost
        #expect(kernel.batches == [NFTBatch(NFTPortmap.deleteOperations(.v4, mine))])
    }
}
