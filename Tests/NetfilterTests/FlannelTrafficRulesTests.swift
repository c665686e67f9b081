// flanneld's masquerade and forward rules in both backends: the whole script for each state the
// tables can be in and each combination of options, and what `ensure` and `removeOtherBackend` run
// against a recording fake. No root needed.

import Addressing
import TestSupport
import Testing

@testable import Netfilter

@Suite struct FlannelTrafficRulesTests {
    static let network = IPNetwork("10.244.0.0/16")!
    static let subnet = IPNetwork("10.244.3.1/24")!

    static func options(masquerade: Bool = true, forward: Bool = true, fullyRandom: Bool = true)
        -> FlannelTrafficRules.Options
    {
        var o = FlannelTrafficRules.Options()
        o.masquerade = masquerade
        o.forward = forward
        o.fullyRandom = fullyRandom
        return o
    }

    static func rules(
        _ backend: NetfilterBackend = .iptables, _ options: FlannelTrafficRules.Options = options(),
        runner: any CommandRunner = RecordingCommandRunner()
    ) -> FlannelTrafficRules {
        FlannelTrafficRules(network: network, subnet: subnet, backend: backend, options: options, runner: runner)
    }

    /// --ip-masq with the default forward rules: what podnetd's --ip-masq always installed.
    let masq = Self.rules()

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
    /// flanneld's table as `nft -a list table ip flannel-ipv4` prints it (nft 1.0.6).
    static let installedNFT = """
        table ip flannel-ipv4 { # handle 1
        	comment "rules for flannel-ipv4"
        	chain postrtg { # handle 1
        		comment "chain to manage traffic masquerading by flannel"
        		type nat hook postrouting priority srcnat; policy accept;
        		meta mark 0x00004000 return # handle 3
        		ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return # handle 4
        		ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return # handle 5
        		ip saddr != 10.244.3.0/24 ip daddr 10.244.0.0/16 return # handle 6
        		ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random # handle 7
        		ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random # handle 8
        	}

        	chain forward { # handle 2
        		comment "chain to accept flannel traffic"
        		type filter hook forward priority filter; policy accept;
        		ip saddr 10.244.0.0/16 accept # handle 9
        		ip daddr 10.244.0.0/16 accept # handle 10
        	}
        }

        """

    /// A runner whose iptables and nft list the given tables.
    static func listing(nat: String = "", filter: String = "", nft: String? = nil, tables: String = "")
        -> RecordingCommandRunner
    {
        RecordingCommandRunner { c in
            switch (c.executable, c.arguments.prefix(4)) {
            case ("iptables", ["-w", "-t", "nat", "-S"]): CommandOutput(status: 0, stdout: nat)
            case ("iptables", ["-w", "-t", "filter", "-S"]): CommandOutput(status: 0, stdout: filter)
            case ("nft", ["-a", "list", "table", "ip"]): nft.map { CommandOutput(status: 0, stdout: $0) }
            case ("nft", ["list", "tables"]): CommandOutput(status: 0, stdout: tables)
            default: nil
            }
        }
    }

    // MARK: - iptables scripts

    @Test func emptyTablesGetBothChainsAndBothJumps() {
        #expect(
            masq.ipv4!.restoreScript(nat: IPTablesListing(), filter: IPTablesListing()) == """
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

    /// Every combination of options on empty tables: a section per enabled part, nothing for a
    /// disabled one (there is nothing to remove), `--random-fully` only when asked for.
    @Test(arguments: [false, true], [false, true])
    func everyCombinationOnEmptyTables(masquerade: Bool, forward: Bool) {
        for fullyRandom in [false, true] {
            let r = Self.rules(
                .iptables, Self.options(masquerade: masquerade, forward: forward, fullyRandom: fullyRandom))
            let script = r.ipv4!.restoreScript(nat: IPTablesListing(), filter: IPTablesListing())
            guard masquerade || forward else {
                #expect(script == nil)
                continue
            }
            var expected: [String] = []
            if masquerade {
                expected += ["*nat", ":FLANNEL-POSTRTG - [0:0]"] + r.ipv4!.postroutingRules.map { $0.line() }
                expected += [FlannelTrafficRules.postroutingJump.line(), "COMMIT"]
            }
            if forward {
                expected += ["*filter", ":FLANNEL-FWD - [0:0]"] + r.ipv4!.forwardRules.map { $0.line() }
                expected += [FlannelTrafficRules.forwardJump.line(), "COMMIT"]
            }
            #expect(script == (expected + [""]).joined(separator: "\n"))
            #expect(r.ipv4!.postroutingRules.filter { $0.target == "MASQUERADE" }.count == 2)
            #expect(
                r.ipv4!.postroutingRules.filter { $0.arguments.last == "--random-fully" }.count == (fullyRandom ? 2 : 0)
            )
        }
    }

    @Test func everythingInPlaceWritesNothing() {
        #expect(
            masq.ipv4!.restoreScript(
                nat: IPTablesListing(parsing: Self.installedNAT),
                filter: IPTablesListing(parsing: Self.installedFilter)) == nil)
    }

    /// A missing rule rewrites both chains whole; the jumps that are there are not added again.
    @Test func aMissingRuleRewritesTheChainsButNotTheJumps() {
        let nat = Self.installedNAT.droppingLines { $0.hasPrefix("-A FLANNEL-POSTRTG -s 10.244.3.0/24") }
        #expect(
            masq.ipv4!.restoreScript(
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
        let script = masq.ipv4!.restoreScript(nat: IPTablesListing(parsing: noJump), filter: filter)
        #expect(
            script?.contains(
                "\n-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\nCOMMIT\n*filter\n") == true
        )
        #expect(script?.contains("-A FORWARD ") == false)

        // Someone else's rule in flanneld's chain: the chain is rewritten without it.
        let stray = Self.installedNAT + "-A FLANNEL-POSTRTG -s 10.9.0.0/16 -j ACCEPT\n"
        let rewrite = masq.ipv4!.restoreScript(nat: IPTablesListing(parsing: stray), filter: filter)
        #expect(rewrite?.hasPrefix("*nat\n:FLANNEL-POSTRTG - [0:0]\n") == true)
        #expect(rewrite?.contains("10.9.0.0/16") == false)
        // The same in the forward chain.
        let strayForward = Self.installedFilter + "-A FLANNEL-FWD -s 10.9.0.0/16 -j ACCEPT\n"
        #expect(
            masq.ipv4!.restoreScript(
                nat: IPTablesListing(parsing: Self.installedNAT), filter: IPTablesListing(parsing: strayForward))
                != nil)
    }

    /// Rules without --random-fully are not in place when it is asked for, and the reverse.
    @Test func fullyRandomIsPartOfBeingInPlace() {
        let plainNAT = Self.installedNAT.replacingAll(" --random-fully", with: "")
        let (nat, plain, filter) = (
            IPTablesListing(parsing: Self.installedNAT), IPTablesListing(parsing: plainNAT),
            IPTablesListing(parsing: Self.installedFilter)
        )
        let noRandom = Self.rules(.iptables, Self.options(fullyRandom: false)).ipv4!
        #expect(masq.ipv4!.restoreScript(nat: plain, filter: filter) != nil)
        #expect(noRandom.restoreScript(nat: plain, filter: filter) == nil)
        #expect(noRandom.restoreScript(nat: nat, filter: filter)?.contains("--random-fully") == false)
    }

    /// A disabled part that is there goes, jump first; the enabled part that is in place stays.
    @Test func aDisabledPartIsRemoved() {
        let (nat, filter) = (
            IPTablesListing(parsing: Self.installedNAT), IPTablesListing(parsing: Self.installedFilter)
        )
        #expect(
            Self.rules(.iptables, Self.options(masquerade: false)).ipv4!.restoreScript(nat: nat, filter: filter) == """
                *nat
                :FLANNEL-POSTRTG - [0:0]
                -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
                -X FLANNEL-POSTRTG
                COMMIT

                """)
        #expect(
            Self.rules(.iptables, Self.options(forward: false)).ipv4!.restoreScript(nat: nat, filter: filter) == """
                *filter
                :FLANNEL-FWD - [0:0]
                -D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
                -X FLANNEL-FWD
                COMMIT

                """)
        // The enabled part is rewritten when it needs to be, in the same transaction.
        let noJump = IPTablesListing(parsing: Self.installedFilter.droppingLines { $0.hasPrefix("-A FORWARD ") })
        #expect(
            Self.rules(.iptables, Self.options(masquerade: false)).ipv4!.restoreScript(nat: nat, filter: noJump)?
                .hasSuffix(
                    "-X FLANNEL-POSTRTG\nCOMMIT\n*filter\n:FLANNEL-FWD - [0:0]\n"
                        + Self.rules().ipv4!.forwardRules.map { $0.line() }.joined(separator: "\n") + "\n"
                        + FlannelTrafficRules.forwardJump.line() + "\nCOMMIT\n") == true)
        // Gone already: nothing to do.
        let bare = IPTablesListing(parsing: "-P POSTROUTING ACCEPT\n")
        #expect(
            Self.rules(.iptables, Self.options(masquerade: false)).ipv4!.restoreScript(nat: bare, filter: filter) == nil
        )
    }

    // MARK: - nftables scripts

    @Test func emptyNFTGetsTheTableAndBothChains() {
        #expect(
            Self.rules(.nftables).ipv4!.nftScript(listing: NFTListing()) == """
                add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }
                add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }
                flush chain ip flannel-ipv4 postrtg
                add rule ip flannel-ipv4 postrtg meta mark 0x00004000 return
                add rule ip flannel-ipv4 postrtg ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return
                add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return
                add rule ip flannel-ipv4 postrtg ip saddr != 10.244.3.0/24 ip daddr 10.244.0.0/16 return
                add rule ip flannel-ipv4 postrtg ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
                add rule ip flannel-ipv4 postrtg ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random
                add chain ip flannel-ipv4 forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }
                flush chain ip flannel-ipv4 forward
                add rule ip flannel-ipv4 forward ip saddr 10.244.0.0/16 accept
                add rule ip flannel-ipv4 forward ip daddr 10.244.0.0/16 accept

                """)
    }

    @Test(arguments: [false, true], [false, true])
    func everyNFTCombinationOnAnEmptyTable(masquerade: Bool, forward: Bool) {
        for fullyRandom in [false, true] {
            let r = Self.rules(
                .nftables, Self.options(masquerade: masquerade, forward: forward, fullyRandom: fullyRandom))
            let script = r.ipv4!.nftScript(listing: NFTListing())
            guard masquerade || forward else {
                #expect(script == nil)
                continue
            }
            let lines = script?.split(separator: "\n").map(String.init) ?? []
            #expect(lines.first == "add table ip flannel-ipv4 { comment \"rules for flannel-ipv4\" ; }")
            #expect(lines.filter { $0.hasPrefix("add rule ip flannel-ipv4 postrtg ") }.count == (masquerade ? 6 : 0))
            #expect(lines.filter { $0.hasPrefix("add rule ip flannel-ipv4 forward ") }.count == (forward ? 2 : 0))
            #expect(
                lines.filter { $0.hasSuffix(" masquerade fully-random") }.count == (masquerade && fullyRandom ? 2 : 0))
            #expect(lines.filter { $0.hasSuffix(" masquerade") }.count == (masquerade && !fullyRandom ? 2 : 0))
            #expect(!lines.contains { $0.hasPrefix("delete ") })
        }
    }

    @Test func nftInPlaceWritesNothingAndAnythingElseRewrites() {
        let installed = NFTListing(parsing: Self.installedNFT)
        #expect(Self.rules(.nftables).ipv4!.nftScript(listing: installed) == nil)
        // `nft flush ruleset`, a deleted rule, a stray rule, fully-random turned off.
        #expect(Self.rules(.nftables).ipv4!.nftScript(listing: NFTListing()) != nil)
        let deleted = NFTListing(parsing: Self.installedNFT.droppingLines { $0.contains("# handle 9") })
        #expect(
            Self.rules(.nftables).ipv4!.nftScript(listing: deleted)
                == Self.rules(.nftables).ipv4!.nftScript(listing: NFTListing()))
        let stray = NFTListing(
            parsing: Self.installedNFT.replacingAll(
                "\t\tip daddr 10.244.0.0/16 accept # handle 10\n",
                with: "\t\tip daddr 10.244.0.0/16 accept # handle 10\n\t\tip saddr 10.9.0.0/16 accept # handle 11\n"))
        #expect(Self.rules(.nftables).ipv4!.nftScript(listing: stray) != nil)
        let plain = Self.rules(.nftables, Self.options(fullyRandom: false))
        #expect(plain.ipv4!.nftScript(listing: installed)?.contains("fully-random") == false)
    }

    @Test func aDisabledNFTChainIsDeleted() {
        let installed = NFTListing(parsing: Self.installedNFT)
        #expect(
            Self.rules(.nftables, Self.options(masquerade: false)).ipv4!.nftScript(listing: installed) == """
                flush chain ip flannel-ipv4 postrtg
                delete chain ip flannel-ipv4 postrtg

                """)
        // The enabled part is rewritten when it needs to be, in the same transaction.
        let noForward = NFTListing(parsing: Self.installedNFT.droppingLines { $0.contains("# handle 9") })
        #expect(
            Self.rules(.nftables, Self.options(masquerade: false)).ipv4!.nftScript(listing: noForward)?
                .hasSuffix("accept\nflush chain ip flannel-ipv4 postrtg\ndelete chain ip flannel-ipv4 postrtg\n")
                == true)
        // Only the forward chain there: in place.
        let forwardOnly = NFTListing(parsing: Self.installedNFT.droppingLines { $0.contains("postrtg") })
        #expect(Self.rules(.nftables, Self.options(masquerade: false)).ipv4!.nftScript(listing: forwardOnly) == nil)
    }

    // MARK: - ensure

    @Test func ensureReadsBothTablesAndWritesOnlyWhenSomethingIsMissing() throws {
        let fresh = RecordingCommandRunner()
        #expect(try Self.rules(runner: fresh).ensure())
        #expect(fresh.lines == ["iptables -w -t nat -S", "iptables -w -t filter -S", "iptables-restore --noflush -w"])
        #expect(fresh.commands[2].stdin == masq.ipv4!.restoreScript(nat: IPTablesListing(), filter: IPTablesListing()))

        let installed = Self.listing(nat: Self.installedNAT, filter: Self.installedFilter)
        #expect(try !Self.rules(runner: installed).ensure())
        #expect(installed.lines == ["iptables -w -t nat -S", "iptables -w -t filter -S"])
    }

    @Test func nftEnsureListsTheTableAndWritesOnlyWhenSomethingIsMissing() throws {
        let fresh = RecordingCommandRunner()
        #expect(try Self.rules(.nftables, runner: fresh).ensure())
        #expect(fresh.lines == ["nft -a list table ip flannel-ipv4", "nft -f -"])
        #expect(fresh.commands[1].stdin == Self.rules(.nftables).ipv4!.nftScript(listing: NFTListing()))

        let installed = Self.listing(nft: Self.installedNFT)
        #expect(try !Self.rules(.nftables, runner: installed).ensure())
        #expect(installed.lines == ["nft -a list table ip flannel-ipv4"])
    }

    /// Both turned off: the first ensure removes what an earlier run installed, later ones run nothing.
    @Test func nothingEnabledRemovesTheRulesOnceThenRunsNothing() throws {
        let off = Self.options(masquerade: false, forward: false)
        let iptables = Self.listing(nat: Self.installedNAT, filter: Self.installedFilter)
        let rules = Self.rules(.iptables, off, runner: iptables)
        #expect(try rules.ensure())
        #expect(
            iptables.lines == ["iptables -w -t nat -S", "iptables -w -t filter -S", "iptables-restore --noflush -w"])
        #expect(try !rules.ensure())
        #expect(iptables.lines.count == 3)

        let nft = Self.listing(nft: Self.installedNFT)
        let nftRules = Self.rules(.nftables, off, runner: nft)
        #expect(try nftRules.ensure())
        #expect(nft.lines == ["nft -a list table ip flannel-ipv4", "nft -f -"])
        #expect(try !nftRules.ensure())
        #expect(nft.lines.count == 2)

        // Nothing there: one listing, then nothing.
        let empty = RecordingCommandRunner()
        let emptyRules = Self.rules(.nftables, off, runner: empty)
        #expect(try !emptyRules.ensure() && !emptyRules.ensure())
        #expect(empty.lines == ["nft -a list table ip flannel-ipv4"])
    }

    @Test func aFailedRestoreIsReportedWithWhatItPrinted() {
        let failing = RecordingCommandRunner { c in
            c.executable == "iptables-restore"
                ? CommandOutput(status: 1, stderr: "iptables-restore: line 4 failed\n") : nil
        }
        let error = NetfilterError.commandFailed(
            command: "iptables-restore --noflush -w", status: 1, stderr: "iptables-restore: line 4 failed")
        #expect(throws: error) {
            try Self.rules(.iptables, Self.options(fullyRandom: false), runner: failing).ensure()
        }
        // No retry: the repair loop calls ensure again.
        #expect(failing.lines.count == 3)

        // With --random-fully, the same once more without it; the first failure is reported.
        let failingTwice = RecordingCommandRunner { c in
            c.executable == "iptables-restore"
                ? CommandOutput(status: 1, stderr: "iptables-restore: line 4 failed\n") : nil
        }
        #expect(throws: error) { try Self.rules(runner: failingTwice).ensure() }
        #expect(failingTwice.lines.count == 4)
        #expect(failingTwice.commands[2].stdin.contains("--random-fully"))
        #expect(!failingTwice.commands[3].stdin.contains("--random-fully"))
    }

    /// Where fully-random is refused, the rules go in without it, and the instance stops asking.
    @Test(arguments: NetfilterBackend.allCases)
    func fullyRandomFallsBackOnce(backend: NetfilterBackend) throws {
        let flag = backend == .iptables ? "--random-fully" : "fully-random"
        let refusing = RecordingCommandRunner { c in
            c.stdin.contains(flag) ? CommandOutput(status: 1, stderr: "unknown option \(flag)\n") : nil
        }
        let r = Self.rules(backend, runner: refusing)
        #expect(try r.ensure())
        let writes = refusing.commands.filter { !$0.stdin.isEmpty }
        #expect(writes.count == 2 && writes[0].stdin.contains(flag) && !writes[1].stdin.contains(flag))
        #expect(writes[1].stdin == Self.rules(backend, Self.options(fullyRandom: false)).ipv4!.script(backend))

        // Next time: straight to the rules without it.
        let before = refusing.commands.count
        #expect(try r.ensure())
        let next = refusing.commands.dropFirst(before).filter { !$0.stdin.isEmpty }
        #expect(next.count == 1 && !next[next.startIndex].stdin.contains(flag))
    }

    /// Rules without fully-random in place (an earlier run's fallback) and fully-random refused:
    /// they stay, and the next ensure only lists.
    @Test func fullyRandomRefusedWithThePlainRulesInPlaceWritesNothing() throws {
        let plainNAT = Self.installedNAT.replacingAll(" --random-fully", with: "")
        let refusing = RecordingCommandRunner { c in
            switch (c.executable, c.arguments.prefix(4)) {
            case ("iptables", ["-w", "-t", "nat", "-S"]): CommandOutput(status: 0, stdout: plainNAT)
            case ("iptables", ["-w", "-t", "filter", "-S"]): CommandOutput(status: 0, stdout: Self.installedFilter)
            case ("iptables-restore", _): CommandOutput(status: 2, stderr: "unknown option \"--random-fully\"\n")
            default: nil
            }
        }
        let r = Self.rules(runner: refusing)
        #expect(try !r.ensure())
        #expect(try !r.ensure())
        #expect(
            refusing.lines == [
                "iptables -w -t nat -S", "iptables -w -t filter -S", "iptables-restore --noflush -w",
                "iptables -w -t nat -S", "iptables -w -t filter -S",
            ])
    }

    // MARK: - removeOtherBackend

    @Test func nftablesModeRemovesFlanneldsIPTablesRules() throws {
        // flanneld's own CleanUp also names nat FLANNEL-FWD, which it never made; an old one may have.
        let nat = Self.installedNAT + "-N FLANNEL-FWD\n"
        let runner = Self.listing(nat: nat, filter: Self.installedFilter)
        #expect(try Self.rules(.nftables, runner: runner).removeOtherBackend())
        #expect(runner.lines == ["iptables -w -t nat -S", "iptables -w -t filter -S", "iptables-restore --noflush -w"])
        #expect(
            runner.commands[2].stdin == """
                *nat
                :FLANNEL-POSTRTG - [0:0]
                :FLANNEL-FWD - [0:0]
                -D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
                -X FLANNEL-POSTRTG
                -X FLANNEL-FWD
                COMMIT
                *filter
                :FLANNEL-FWD - [0:0]
                -D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
                -X FLANNEL-FWD
                COMMIT

                """)

        // Nothing there: only the listings.
        let clean = RecordingCommandRunner()
        #expect(try !Self.rules(.nftables, runner: clean).removeOtherBackend())
        #expect(clean.lines == ["iptables -w -t nat -S", "iptables -w -t filter -S"])

        // Unusable iptables (no kernel tables): nothing to remove, no error.
        let unusable = RecordingCommandRunner { c in
            c.executable == "iptables"
                ? CommandOutput(status: 3, stderr: "can't initialize iptables table `nat'\n") : nil
        }
        #expect(try !Self.rules(.nftables, runner: unusable).removeOtherBackend())
        #expect(unusable.lines == ["iptables -w -t nat -S"])
    }

    @Test func iptablesModeDeletesFlanneldsNFTTables() throws {
        let runner = Self.listing(
            tables: "table inet cni_plugins_masquerade\ntable ip flannel-ipv4\ntable ip6 flannel-ipv6\n")
        #expect(try Self.rules(.iptables, runner: runner).removeOtherBackend())
        #expect(runner.lines == ["nft list tables", "nft -f -"])
        #expect(runner.commands[1].stdin == "delete table ip flannel-ipv4\ndelete table ip6 flannel-ipv6\n")

        let v4Only = Self.listing(tables: "table ip flannel-ipv4\n")
        #expect(try Self.rules(.iptables, runner: v4Only).removeOtherBackend())
        #expect(v4Only.commands[1].stdin == "delete table ip flannel-ipv4\n")

        let clean = Self.listing(tables: "table inet cni_plugins_masquerade\n")
        #expect(try !Self.rules(.iptables, runner: clean).removeOtherBackend())
        #expect(clean.lines == ["nft list tables"])

        // No nft installed, or a kernel without nf_tables: nothing to remove, no error.
        let missing = RecordingCommandRunner(missing: ["nft"])
        #expect(try !Self.rules(.iptables, runner: missing).removeOtherBackend())
        let unusable = RecordingCommandRunner { c in
            c.executable == "nft" ? CommandOutput(status: 1, stderr: "Error: Protocol not supported\n") : nil
        }
        #expect(try !Self.rules(.iptables, runner: unusable).removeOtherBackend())
        #expect(unusable.lines == ["nft list tables"])
    }

    /// A host with nft and no iptables at all (RHEL 10, a minimal Debian): start-up and the repair
    /// loop work, and no iptables program is ever started.
    @Test func nftablesModeWithoutIPTablesRunsOnlyNFT() throws {
        let noIPTables: Set<String> = ["iptables", "iptables-restore", "ip6tables", "ip6tables-restore"]
        let runner = RecordingCommandRunner(missing: noIPTables)
        let r = Self.rules(.nftables, runner: runner)
        #expect(try !r.removeOtherBackend())
        #expect(try r.ensure())
        let started = runner.commands.filter { !noIPTables.contains($0.executable) }
        #expect(started.map(\.executable) == ["nft", "nft"])
        // The one attempt on iptables found it missing (the real runner looks in PATH before spawning).
        #expect(
            runner.commands.filter { noIPTables.contains($0.executable) }.map(\.description) == [
                "iptables -w -t nat -S"
            ])
    }
}

extension FlannelTrafficRules.FamilyRules {
    /// What `ensure` writes on empty tables in `backend`.
    func script(_ backend: NetfilterBackend) -> String? {
        backend == .iptables
            ? restoreScript(nat: IPTablesListing(), filter: IPTablesListing()) : nftScript(listing: NFTListing())
    }
}

extension String {
    /// The text without the lines that `drop` matches.
    func droppingLines(_ drop: (Substring) -> Bool) -> String {
        split(separator: "\n", omittingEmptySubsequences: false).filter { !drop($0) }.joined(separator: "\n")
    }

    /// Every occurrence of `target` replaced (no Foundation in this target).
    func replacingAll(_ target: String, with replacement: String) -> String {
        var out = "", rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound] + replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
