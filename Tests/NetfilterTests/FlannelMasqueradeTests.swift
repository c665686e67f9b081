// flanneld's masquerade and forward rules: the whole restore script for each state the tables can
// be in, and what `ensure` runs against a recording fake. No root needed.

import Addressing
import TestSupport
import Testing

@testable import Netfilter

@Suite struct FlannelMasqueradeTests {
    let masq = FlannelMasquerade(
        network: IPNetwork("10.244.0.0/16")!, subnet: IPNetwork("10.244.3.1/24")!,
        runner: RecordingCommandRunner())

    /// Both chains with every rule flanneld writes, and the jumps to them, as `iptables -S` prints them.
    static let installedNAT = """
        -P PREROUTING ACCEPT
        -P INPUT ACCEPT
        -P OUTPUT ACCEPT
        -P POSTROUTING ACCEPT
        -N FLANNEL-POSTRTG
        -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
        -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
        -A FLANNEL-POSTRTG -s 10.244.3.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
        -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN
        -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN
        -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
        -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully

        """
    static let installedFilter = """
        -P INPUT ACCEPT
        -P FORWARD DROP
        -P OUTPUT ACCEPT
        -N FLANNEL-FWD
        -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
        -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
        -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT

        """

    @Test func emptyTablesGetBothChainsAndBothJumps() {
        #expect(
            masq.restoreScript(nat: IPTablesListing(), filter: IPTablesListing()) == """
                *nat
                :FLANNEL-POSTRTG - [0:0]
                -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
                -A FLANNEL-POSTRTG -s 10.244.3.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
                -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN
                -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN
                -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
                -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
                -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
                COMMIT
                *filter
                :FLANNEL-FWD - [0:0]
                -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
                -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
                -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
                COMMIT

                """)
    }

    @Test func everythingInPlaceWritesNothing() {
        #expect(
            masq.restoreScript(
                nat: IPTablesListing(parsing: Self.installedNAT),
                filter: IPTablesListing(parsing: Self.installedFilter)) == nil)
    }

    /// A missing rule rewrites both chains whole; the jumps that are there are not added again.
    @Test func aMissingRuleRewritesTheChainsButNotTheJumps() {
        let nat = Self.installedNAT.droppingLines { $0.hasPrefix("-A FLANNEL-POSTRTG -s 10.244.3.0/24") }
        #expect(
            masq.restoreScript(
                nat: IPTablesListing(parsing: nat),
                filter: IPTablesListing(parsing: Self.installedFilter)) == """
                    *nat
                    :FLANNEL-POSTRTG - [0:0]
                    -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
                    -A FLANNEL-POSTRTG -s 10.244.3.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
                    -A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN
                    -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.3.0/24 -m comment --comment "flanneld masq" -j RETURN
                    -A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
                    -A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
                    COMMIT
                    *filter
                    :FLANNEL-FWD - [0:0]
                    -A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
                    -A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
                    COMMIT

                    """)
    }

    @Test func aMissingJumpOrAStrayRuleIsRepaired() {
        let filter = IPTablesListing(parsing: Self.installedFilter)
        let noJump = Self.installedNAT.droppingLines { $0.hasPrefix("-A POSTROUTING ") }
        let script = masq.restoreScript(nat: IPTablesListing(parsing: noJump), filter: filter)
        #expect(
            script?.contains(
                "\n-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\nCOMMIT\n*filter\n") == true
        )
        #expect(script?.contains("-A FORWARD ") == false)

        // Someone else's rule in flanneld's chain: the chain is rewritten without it.
        let stray = Self.installedNAT + "-A FLANNEL-POSTRTG -s 10.9.0.0/16 -j ACCEPT\n"
        let rewrite = masq.restoreScript(nat: IPTablesListing(parsing: stray), filter: filter)
        #expect(rewrite?.hasPrefix("*nat\n:FLANNEL-POSTRTG - [0:0]\n") == true)
        #expect(rewrite?.contains("10.9.0.0/16") == false)
    }

    @Test func ensureReadsBothTablesAndWritesOnlyWhenSomethingIsMissing() throws {
        let fresh = RecordingCommandRunner()
        #expect(try FlannelMasquerade(network: masq.network, subnet: masq.subnet, runner: fresh).ensure())
        #expect(fresh.lines == ["iptables -w -t nat -S", "iptables -w -t filter -S", "iptables-restore --noflush -w"])
        #expect(fresh.commands[2].stdin == masq.restoreScript(nat: IPTablesListing(), filter: IPTablesListing()))

        let installed = RecordingCommandRunner { c in
            c.arguments.starts(with: ["-w", "-t", "nat", "-S"])
                ? CommandOutput(status: 0, stdout: Self.installedNAT)
                : c.arguments.starts(with: ["-w", "-t", "filter", "-S"])
                    ? CommandOutput(status: 0, stdout: Self.installedFilter)
                    : nil
        }
        #expect(try !FlannelMasquerade(network: masq.network, subnet: masq.subnet, runner: installed).ensure())
        #expect(installed.lines == ["iptables -w -t nat -S", "iptables -w -t filter -S"])
    }

    @Test func aFailedRestoreIsReportedWithWhatItPrinted() {
        let failing = RecordingCommandRunner { c in
            c.executable == "iptables-restore"
                ? CommandOutput(status: 1, stderr: "iptables-restore: line 4 failed\n") : nil
        }
        #expect(
            throws: NetfilterError.commandFailed(
                command: "iptables-restore --noflush -w", status: 1,
                stderr: "iptables-restore: line 4 failed")
        ) {
            try FlannelMasquerade(network: masq.network, subnet: masq.subnet, runner: failing).ensure()
        }
        // No retry: the repair loop calls ensure again.
        #expect(failing.lines.count == 3)
    }
}

extension String {
    /// The text without the lines that `drop` matches.
    func droppingLines(_ drop: (Substring) -> Bool) -> String {
        split(separator: "\n", omittingEmptySubsequences: false).filter { !drop($0) }.joined(separator: "\n")
    }
}
