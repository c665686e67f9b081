// Masquerade's orchestration against a recording fake: which commands run, how many, with which
// scripts, and which failures are reported.

import Addressing
import Synchronization
import TestSupport
import Testing

@testable import Netfilter

typealias FakeRunner = RecordingCommandRunner

@Suite struct MasqueradeTests {
    let dual = [IPNetwork("10.99.0.2/24")!, IPNetwork("fd99::2/64")!]
    let listPostrouting = "iptables -w -t nat -S POSTROUTING"
    let listChain = "nft -a list chain inet cni_plugins_masquerade masq_checks"

    @Test func iptablesSetupIsOneReadAndOneWritePerFamily() throws {
        let fake = FakeRunner()
        try Masquerade(runner: fake).setup(
            backend: nil, network: "mynet", containerID: "abc123", ifname: "eth0",
            addresses: dual)
        #expect(
            fake.lines == [
                listPostrouting, "iptables-restore --noflush -w",
                "ip6tables -w -t nat -S POSTROUTING", "ip6tables-restore --noflush -w",
            ])
        #expect(fake.commands[1].stdin.contains("-A POSTROUTING -s 10.99.0.2/32 "))
        #expect(fake.commands[3].stdin.contains("-A POSTROUTING -s fd99::2/128 "))

        let v4only = FakeRunner()
        try Masquerade(runner: v4only).setup(
            backend: .iptables, network: "mynet", containerID: "abc123",
            ifname: "eth0", addresses: [dual[0]])
        #expect(v4only.commands.count == 2)
    }

    @Test func autoFallsBackToNftablesWhenIptablesIsMissing() throws {
        let fake = FakeRunner(missing: ["iptables", "ip6tables"])
        try Masquerade(runner: fake).setup(
            backend: nil, network: "mynet", containerID: "abc123", ifname: "eth0",
            addresses: dual)
        #expect(
            fake.lines == [
                listPostrouting, "nft --check add table inet cni_plugins_masquerade", listChain,
                "nft -f -",
            ])
        #expect(
            fake.commands[3].stdin
                == NFTMasquerade(network: "mynet", ifname: "eth0", containerID: "abc123")
                .setupScript(addresses: dual, stale: []))
    }

    @Test func autoReportsTheIptablesErrorWhenNeitherWorks() {
        let fake = FakeRunner(missing: ["iptables", "nft"])
        #expect(throws: NetfilterError.launchFailed(command: listPostrouting, errno: 2)) {
            try Masquerade(runner: fake).setup(
                backend: nil, network: "n", containerID: "c", ifname: "eth0",
                addresses: [IPNetwork("10.0.0.2/24")!])
        }
    }

    @Test func nftablesSetupReplacesOnlyThisInstancesRules() throws {
        let fake = FakeRunner { c in
            c.arguments.first == "-a" ? CommandOutput(status: 0, stdout: NFTablesTests.listing) : nil
        }
        try Masquerade(runner: fake).setup(
            backend: .nftables, network: "mynet", containerID: "abc123",
            ifname: "eth0", addresses: [dual[0]])
        #expect(fake.lines == [listChain, "nft -f -"])
        let script = fake.commands[1].stdin
        #expect(script.contains("delete rule inet cni_plugins_masquerade masq_checks handle 6\n"))
        #expect(script.contains("delete rule inet cni_plugins_masquerade masq_checks handle 7\n"))
        #expect(!script.contains("handle 11"))
    }

    @Test func nftablesSetupListsAgainWhenAHandleVanished() throws {
        let applied = Mutex(0)
        let fake = FakeRunner { c in
            if c.arguments.first == "-a" { return CommandOutput(status: 0, stdout: NFTablesTests.listing) }
            let n = applied.withLock {
                $0 += 1; return $0
            }
            return n == 1
                ? CommandOutput(status: 1, stderr: "Error: Could not process rule: No such file or directory") : nil
        }
        try Masquerade(runner: fake).setup(
            backend: .nftables, network: "mynet", containerID: "abc123",
            ifname: "eth0", addresses: [dual[0]])
        #expect(fake.lines == [listChain, "nft -f -", listChain, "nft -f -"])
    }

    @Test func teardownSendsNothingWhenNothingIsThere() throws {
        let fake = FakeRunner()
        try Masquerade(runner: fake).teardown(network: "mynet", containerID: "abc123", ifname: "eth0")
        // Reads only: an empty restore would still cost the kernel a transaction.
        #expect(fake.lines == ["iptables -w -t nat -S", "ip6tables -w -t nat -S", listChain])
    }

    @Test func teardownRemovesAChainItFinds() throws {
        let fake = FakeRunner { c in
            c.executable == "iptables" && c.arguments.contains("-S")
                ? CommandOutput(status: 0, stdout: "-P POSTROUTING ACCEPT\n-N CNI-70a29d9dc18bc4d652ea5d59\n") : nil
        }
        try Masquerade(runner: fake).teardown(network: "mynet", containerID: "abc123", ifname: "eth0", families: [.v4])
        // Only the family the attachment had is read; its chain is deleted.
        #expect(fake.lines == ["iptables -w -t nat -S", "iptables-restore --noflush -w", listChain])
        #expect(
            fake.commands[1].stdin == """
                *nat
                :CNI-70a29d9dc18bc4d652ea5d59 - [0:0]
                -X CNI-70a29d9dc18bc4d652ea5d59
                COMMIT

                """)
    }

    @Test func teardownDeletesNftRulesByInstanceHash() throws {
        let fake = FakeRunner { c in
            c.arguments.first == "-a" ? CommandOutput(status: 0, stdout: NFTablesTests.listing) : nil
        }
        try Masquerade(runner: fake).teardown(network: "mynet", containerID: "abc123", ifname: "eth0")
        #expect(fake.lines.suffix(2) == [listChain, "nft -f -"])
        #expect(fake.commands.last?.stdin == NFTMasquerade.deleteScript(handles: [6, 7]))
    }

    @Test func teardownIgnoresUnusableBackends() throws {
        // ip6tables exists but cannot work (IPv6 disabled); nft is not installed.
        let fake = FakeRunner(missing: ["nft"]) { c in
            c.executable == "ip6tables"
                ? CommandOutput(status: 3, stderr: "can't initialize ip6tables table `nat'") : nil
        }
        try Masquerade(runner: fake).teardown(network: "mynet", containerID: "abc123", ifname: "eth0")
        #expect(fake.lines.contains("ip6tables -w -t filter -S INPUT"))
        #expect(fake.lines.contains("nft --check add table inet cni_plugins_masquerade"))
    }

    @Test func teardownReportsErrorsOfUsableBackends() {
        let fake = FakeRunner { c in
            if c.executable == "iptables-restore" {
                return CommandOutput(status: 4, stderr: "iptables-restore: line 3 failed\n")
            }
            // Both families hold the attachment's chain, so both restores are attempted.
            if c.arguments.contains("-S") {
                return CommandOutput(status: 0, stdout: "-N CNI-70a29d9dc18bc4d652ea5d59\n")
            }
            return nil
        }
        #expect(
            throws: NetfilterError.commandFailed(
                command: "iptables-restore --noflush -w", status: 4,
                stderr: "iptables-restore: line 3 failed")
        ) {
            try Masquerade(runner: fake).teardown(network: "mynet", containerID: "abc123", ifname: "eth0")
        }
        // ...after still trying the other family and nftables.
        #expect(fake.lines.contains("ip6tables-restore --noflush -w"))
        #expect(fake.lines.contains(listChain))
    }

    @Test func gcKeepsValidAttachments() throws {
        let fake = FakeRunner { c in
            switch c.executable {
            case "iptables": return CommandOutput(status: 0, stdout: IPTablesTests.referenceV4)
            case "nft" where c.arguments.first == "-a": return CommandOutput(status: 0, stdout: NFTablesTests.listing)
            default: return nil
            }
        }
        try Masquerade(runner: fake).gc(network: "mynet", valid: [.init(containerID: "abc123", ifname: "eth0")])
        #expect(fake.lines == ["iptables -w -t nat -S", "ip6tables -w -t nat -S", listChain, "nft -f -"])
        #expect(fake.commands[3].stdin == NFTMasquerade.deleteScript(handles: [11]))

        // Same container, other interface: the iptables chain stays (it has no ifname), the nft
        // rules of eth0 go.
        let other = FakeRunner { c in
            switch c.executable {
            case "iptables": return CommandOutput(status: 0, stdout: IPTablesTests.referenceV4)
            case "nft" where c.arguments.first == "-a": return CommandOutput(status: 0, stdout: NFTablesTests.listing)
            default: return nil
            }
        }
        try Masquerade(runner: other).gc(network: "mynet", valid: [.init(containerID: "abc123", ifname: "net1")])
        #expect(other.lines == ["iptables -w -t nat -S", "ip6tables -w -t nat -S", listChain, "nft -f -"])
        #expect(other.commands[3].stdin == NFTMasquerade.deleteScript(handles: [6, 7, 11]))

        // Nothing valid: everything of the network goes.
        let none = FakeRunner { c in
            c.executable == "iptables" ? CommandOutput(status: 0, stdout: IPTablesTests.referenceV4) : nil
        }
        try Masquerade(runner: none).gc(network: "mynet", valid: [])
        #expect(
            none.lines == [
                "iptables -w -t nat -S", "iptables-restore --noflush -w", "ip6tables -w -t nat -S", listChain,
            ])
    }

    @Test func checkReadsTheChosenBackend() throws {
        let fake = FakeRunner { c in
            c.executable == "iptables" ? CommandOutput(status: 0, stdout: IPTablesTests.referenceV4) : nil
        }
        let m = Masquerade(runner: fake)
        #expect(
            try m.check(
                backend: .iptables, network: "mynet", containerID: "abc123", ifname: "eth0",
                addresses: [dual[0]]))
        #expect(
            try !m.check(
                backend: .iptables, network: "mynet", containerID: "abc123", ifname: "eth0",
                addresses: dual))
        #expect(
            try !m.check(
                backend: .nftables, network: "mynet", containerID: "abc123", ifname: "eth0",
                addresses: [dual[0]]))
    }
}
