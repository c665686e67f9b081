// The executor every rule set goes through: which processes a listing, a transaction and a probe
// cost, and when a failed transaction is tried again.

import Addressing
import Synchronization
import TestSupport
import Testing

@testable import Netfilter

@Suite struct ExecutorTests {
    @Test func listingsAndProbesAreOneProcessEach() throws {
        let fake = RecordingCommandRunner()
        let x = NetfilterExecutor(runner: fake)
        _ = try x.listIPTables(.v4)
        _ = try x.listIPTables(.v6, table: "filter", chain: "FORWARD")
        #expect(try x.listNFT("inet", "t", chain: "c").rules.isEmpty)  // "No such file or directory": empty
        #expect(x.iptablesUsable(.v6))
        #expect(x.nftablesUsable("ip", "t"))
        #expect(
            fake.lines == [
                "iptables -w -t nat -S", "ip6tables -w -t filter -S FORWARD", "nft -a list chain inet t c",
                "ip6tables -w -t filter -S INPUT", "nft --check add table ip t",
            ])
    }

    /// Both rule sets of the plugins probe iptables the same way (the reference's SupportsIPTables).
    @Test func bridgeAndPortmapProbeIptablesAlike() throws {
        let fake = RecordingCommandRunner()
        _ = HostPorts(runner: fake).iptablesUsable()
        #expect(fake.lines == ["iptables -w -t filter -S INPUT"])
    }

    @Test func aFailedTransactionIsRenderedAgainFromAFreshListing() throws {
        let writes = Mutex(0)
        let fake = RecordingCommandRunner { c in
            guard c.executable == "nft" && c.arguments.first == "-f" else { return nil }
            return writes.withLock {
                $0 += 1; return $0
            } < 3 ? CommandOutput(status: 1, stderr: "busy") : nil
        }
        let x = NetfilterExecutor(runner: fake)
        let listings = Mutex(0)
        let used = try x.transact(
            attempts: 3, first: 0,
            list: {
                listings.withLock {
                    $0 += 1; return $0
                }
            },
            render: { .nft("script \($0)\n") })
        #expect(used == 2)  // the given listing, then two fresh ones
        #expect(fake.commands.map(\.stdin) == ["script 0\n", "script 1\n", "script 2\n"])
    }

    @Test func aTransactionThatIsNotRetryableOrOutOfAttemptsFails() {
        let fake = RecordingCommandRunner { c in
            c.arguments.first == "--noflush" ? CommandOutput(status: 2, stderr: "no\n") : nil
        }
        let x = NetfilterExecutor(runner: fake)
        let failed = NetfilterError.commandFailed(command: "ip6tables-restore --noflush -w", status: 2, stderr: "no")
        #expect(throws: failed) {
            try x.transact(
                attempts: 3, list: { () throws(NetfilterError) in try x.listIPTables(.v6) },
                render: { _ in .iptables(.v6, "*nat\nCOMMIT\n", retryable: false) })
        }
        #expect(throws: failed) {
            try x.transact(
                attempts: 2, list: { () throws(NetfilterError) in try x.listIPTables(.v6) },
                render: { _ in .iptables(.v6, "*nat\nCOMMIT\n") })
        }
        #expect(
            fake.lines == [
                "ip6tables -w -t nat -S", "ip6tables-restore --noflush -w",
                "ip6tables -w -t nat -S", "ip6tables-restore --noflush -w",
                "ip6tables -w -t nat -S", "ip6tables-restore --noflush -w",
            ])
    }

    @Test func nothingToRenderRunsNothing() throws {
        let fake = RecordingCommandRunner()
        let x = NetfilterExecutor(runner: fake)
        #expect(
            try x.transact(list: { () throws(NetfilterError) in try x.listIPTables(.v4) }, render: { _ in nil }) == nil)
        #expect(fake.lines == ["iptables -w -t nat -S"])
    }

    @Test func automaticChoiceReadsFirstAndProbesNftablesOnlyOnFailure() throws {
        let fake = RecordingCommandRunner(missing: ["iptables"])
        let x = NetfilterExecutor(runner: fake)
        let (chosen, listing) = try x.resolve(nil, nftTable: ("inet", "t")) { () throws(NetfilterError) in
            try x.listIPTables(.v4)
        }
        #expect(chosen == .nftables && listing == nil)
        #expect(fake.lines == ["iptables -w -t nat -S", "nft --check add table inet t"])
        #expect(x.probedBackend(nftTable: ("inet", "t")) == .nftables)

        let works = RecordingCommandRunner()
        let y = NetfilterExecutor(runner: works)
        let given = try y.resolve(.nftables, nftTable: ("inet", "t")) { () throws(NetfilterError) in
            try y.listIPTables(.v4)
        }
        #expect(given.0 == .nftables && given.1 == nil)
        #expect(works.lines.isEmpty)
        #expect(y.probedBackend(nftTable: ("inet", "t")) == .iptables)
        #expect(works.lines == ["iptables -w -t filter -S INPUT"])
    }
}
