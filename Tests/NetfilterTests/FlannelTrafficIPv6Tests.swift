// flanneld's traffic rules for IPv6 and for both families: the exact ip6tables and `ip6
// flannel-ipv6` text, and what `ensure` and `removeOtherBackend` run per family against a
// recording fake. No root needed.

import Addressing
import TestSupport
import Testing

@testable import Netfilter

@Suite struct FlannelTrafficIPv6Tests {
    static let v4 = (network: IPNetwork("10.244.0.0/16")!, subnet: IPNetwork("10.244.3.1/24")!)
    static let v6 = (network: IPNetwork("fd00:10:244::/48")!, subnet: IPNetwork("fd00:10:244:3::1/64")!)

    static func rules(
        _ backend: NetfilterBackend = .iptables, ipv4: Bool = true, ipv6: Bool = true,
        _ options: FlannelTrafficRules.Options = FlannelTrafficRulesTests.options(),
        runner: any CommandRunner = RecordingCommandRunner()
    ) -> FlannelTrafficRules {
        FlannelTrafficRules(
            ipv4: ipv4 ? v4 : nil, ipv6: ipv6 ? v6 : nil, backend: backend, options: options, runner: runner)
    }

    /// The IPv4 tables of FlannelTrafficRulesTests with this suite's IPv6 network and subnet, as
    /// `ip6tables -S` prints them.
    static func ipv6Text(_ ipv4: String) -> String {
        ipv4.replacingAll("10.244.3.0/24", with: "fd00:10:244:3::/64")
            .replacingAll("10.244.0.0/16", with: "fd00:10:244::/48").replacingAll("224.0.0.0/4", with: "ff00::/8")
            .replacingAll("table ip flannel-ipv4", with: "table ip6 flannel-ipv6")
            .replacingAll("rules for flannel-ipv4", with: "rules for flannel-ipv6")
            .replacingAll("\tip saddr", with: "\tip6 saddr").replacingAll("\tip daddr", with: "\tip6 daddr")
            .replacingAll(" ip daddr", with: " ip6 daddr")
    }
    static let installedNAT6 = ipv6Text(FlannelTrafficRulesTests.installedNAT)
    static let installedFilter6 = ipv6Text(FlannelTrafficRulesTests.installedFilter)
    static let installedNFT6 = ipv6Text(FlannelTrafficRulesTests.installedNFT)

    /// A runner whose iptables, ip6tables and nft list the given tables (empty by default).
    static func listing(
        nat: String = "", filter: String = "", nat6: String = "", filter6: String = "", nft: String? = nil,
        nft6: String? = nil, tables: String = ""
    ) -> RecordingCommandRunner {
        RecordingCommandRunner { c in
            switch (c.executable, c.arguments.prefix(5)) {
            case ("iptables", ["-w", "-t", "nat", "-S"]): CommandOutput(status: 0, stdout: nat)
            case ("iptables", ["-w", "-t", "filter", "-S"]): CommandOutput(status: 0, stdout: filter)
            case ("ip6tables", ["-w", "-t", "nat", "-S"]): CommandOutput(status: 0, stdout: nat6)
            case ("ip6tables", ["-w", "-t", "filter", "-S"]): CommandOutput(status: 0, stdout: filter6)
            case ("nft", ["-a", "list", "table", "ip", "flannel-ipv4"]):
                nft.map { CommandOutput(status: 0, stdout: $0) }
            case ("nft", ["-a", "list", "table", "ip6", "flannel-ipv6"]):
                nft6.map { CommandOutput(status: 0, stdout: $0) }
            case ("nft", ["list", "tables"]): CommandOutput(status: 0, stdout: tables)
            default: nil
            }
        }
    }

    // MARK: - The rules

    @Test func familiesAreKeptIPv4First() {
        #expect(Self.rules().families.map(\.family) == [.v4, .v6])
        #expect(Self.rules(ipv4: false).families.map(\.family) == [.v6])
        #expect(Self.rules(ipv6: false).families.map(\.family) == [.v4])
        // The single-family initializer puts an IPv6 network where it belongs.
        let single = FlannelTrafficRules(
            network: Self.v6.network, subnet: Self.v6.subnet, backend: .iptables,
            options: FlannelTrafficRulesTests.options())
        #expect(single.ipv4 == nil && single.ipv6?.network == Self.v6.network)
        #expect(single.ipv6?.subnet == Self.v6.subnet)
    }

    @Test func emptyIP6TablesGetBothChainsWithIPv6Addresses() {
        #expect(
            Self.rules().ipv6!.restoreScript(nat: IPTablesListing(), filter: IPTablesListing()) == """
                *nat
                :FLANNEL-POSTRTG - [0:0]
                -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
                -A FLANNEL-POSTRTG -s fd00:10:244:3::/64 -d fd00:10:244::/48 -m comment --comment "flanneld masq" -j RETURN
                -A FLANNEL-POSTRTG -s fd00:10:244::/48 -d fd00:10:244:3::/64 -m comment --comment "flanneld masq" -j RETURN
                -A FLANNEL-POSTRTG ! -s fd00:10:244::/48 -d fd00:10:244:3::/64 -m comment --comment "flanneld masq" -j RETURN
                -A FLANNEL-POSTRTG -s fd00:10:244::/48 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
                -A FLANNEL-POSTRTG ! -s fd00:10:244::/48 -d fd00:10:244::/48 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
                -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
                COMMIT
                *filter
                :FLANNEL-FWD - [0:0]
                -A FLANNEL-FWD -s fd00:10:244::/48 -m comment --comment "flanneld forward" -j ACCEPT
                -A FLANNEL-FWD -d fd00:10:244::/48 -m comment --comment "flanneld forward" -j ACCEPT
                -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
                COMMIT

                """)
        // The IPv4 family of the same instance is the IPv4 rules, untouched by the IPv6 one.
        #expect(
            Self.rules().ipv4!.restoreScript(nat: IPTablesListing(), filter: IPTablesListing())
                == FlannelTrafficRulesTests.rules().ipv4!.restoreScript(
                    nat: IPTablesListing(), filter: IPTablesListing()))
    }

    @Test func emptyNFTGetsTheIP6Table() {
        #expect(
            Self.rules(.nftables).ipv6!.nftScript(listing: NFTListing()) == """
                add table ip6 flannel-ipv6 { comment "rules for flannel-ipv6" ; }
                add chain ip6 flannel-ipv6 postrtg { type nat hook postrouting priority srcnat ; comment "chain to manage traffic masquerading by flannel" ; }
                flush chain ip6 flannel-ipv6 postrtg
                add rule ip6 flannel-ipv6 postrtg meta mark 0x00004000 return
                add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:244:3::/64 ip6 daddr fd00:10:244::/48 return
                add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:244::/48 ip6 daddr fd00:10:244:3::/64 return
                add rule ip6 flannel-ipv6 postrtg ip6 saddr != fd00:10:244:3::/64 ip6 daddr fd00:10:244::/48 return
                add rule ip6 flannel-ipv6 postrtg ip6 saddr fd00:10:244::/48 ip6 daddr != ff00::/8 masquerade fully-random
                add rule ip6 flannel-ipv6 postrtg ip6 saddr != fd00:10:244::/48 ip6 daddr fd00:10:244::/48 masquerade fully-random
                add chain ip6 flannel-ipv6 forward { type filter hook forward priority filter ; comment "chain to accept flannel traffic" ; }
                flush chain ip6 flannel-ipv6 forward
                add rule ip6 flannel-ipv6 forward ip6 saddr fd00:10:244::/48 accept
                add rule ip6 flannel-ipv6 forward ip6 daddr fd00:10:244::/48 accept

                """)
    }

    @Test func installedIPv6RulesAreInPlace() {
        let r = Self.rules().ipv6!
        let (nat, filter) = (
            IPTablesListing(parsing: Self.installedNAT6), IPTablesListing(parsing: Self.installedFilter6)
        )
        #expect(r.restoreScript(nat: nat, filter: filter) == nil)
        #expect(Self.rules(.nftables).ipv6!.nftScript(listing: NFTListing(parsing: Self.installedNFT6)) == nil)
        // The IPv4 rules are not the IPv6 ones.
        #expect(
            Self.rules().ipv6!.restoreScript(
                nat: IPTablesListing(parsing: FlannelTrafficRulesTests.installedNAT),
                filter: IPTablesListing(parsing: FlannelTrafficRulesTests.installedFilter)) != nil)
    }

    /// The rules of an earlier IPv6 subnet (subnet.env's FLANNEL_IPV6_SUBNET before the lease
    /// changed) are not in place: the chains are rewritten with the new subnet only.
    @Test func anOldIPv6SubnetsRulesAreReplaced() {
        let old = { (s: String) in s.replacingAll("fd00:10:244:3::/64", with: "fd00:10:244:9::/64") }
        let nat = IPTablesListing(parsing: old(Self.installedNAT6))
        let filter = IPTablesListing(parsing: Self.installedFilter6)
        let script = Self.rules().ipv6!.restoreScript(nat: nat, filter: filter)
        #expect(script?.hasPrefix("*nat\n:FLANNEL-POSTRTG - [0:0]\n") == true)
        #expect(script?.contains("fd00:10:244:9::") == false)
        #expect(script?.contains("-s fd00:10:244:3::/64 -d fd00:10:244::/48") == true)
        let nft = NFTListing(parsing: old(Self.installedNFT6))
        let nftScript = Self.rules(.nftables).ipv6!.nftScript(listing: nft)
        #expect(nftScript == Self.rules(.nftables).ipv6!.nftScript(listing: NFTListing()))
    }

    // MARK: - ensure

    @Test func dualStackEnsureKeepsBothFamiliesInIPTables() throws {
        let fresh = Self.listing()
        #expect(try Self.rules(runner: fresh).ensure())
        #expect(
            fresh.lines == [
                "iptables -w -t nat -S", "iptables -w -t filter -S", "iptables-restore --noflush -w",
                "ip6tables -w -t nat -S", "ip6tables -w -t filter -S", "ip6tables-restore --noflush -w",
            ])
        let empty = (IPTablesListing(), IPTablesListing())
        #expect(fresh.commands[2].stdin == Self.rules().ipv4!.restoreScript(nat: empty.0, filter: empty.1))
        #expect(fresh.commands[5].stdin == Self.rules().ipv6!.restoreScript(nat: empty.0, filter: empty.1))

        let installed = Self.listing(
            nat: FlannelTrafficRulesTests.installedNAT, filter: FlannelTrafficRulesTests.installedFilter,
            nat6: Self.installedNAT6, filter6: Self.installedFilter6)
        #expect(try !Self.rules(runner: installed).ensure())
        #expect(
            installed.lines == [
                "iptables -w -t nat -S", "iptables -w -t filter -S", "ip6tables -w -t nat -S",
                "ip6tables -w -t filter -S",
            ])

        // A missing IPv6 rule is repaired in ip6tables alone.
        let missing = Self.listing(
            nat: FlannelTrafficRulesTests.installedNAT, filter: FlannelTrafficRulesTests.installedFilter,
            nat6: Self.installedNAT6.droppingLines { $0.contains("! -d ff00::/8") }, filter6: Self.installedFilter6)
        #expect(try Self.rules(runner: missing).ensure())
        #expect(missing.lines.filter { $0.contains("restore") } == ["ip6tables-restore --noflush -w"])
    }

    @Test func dualStackEnsureKeepsBothNFTTables() throws {
        let fresh = Self.listing()
        #expect(try Self.rules(.nftables, runner: fresh).ensure())
        #expect(
            fresh.lines == [
                "nft -a list table ip flannel-ipv4", "nft -f -", "nft -a list table ip6 flannel-ipv6", "nft -f -",
            ])
        #expect(fresh.commands[3].stdin == Self.rules(.nftables).ipv6!.nftScript(listing: NFTListing()))

        let installed = Self.listing(nft: FlannelTrafficRulesTests.installedNFT, nft6: Self.installedNFT6)
        #expect(try !Self.rules(.nftables, runner: installed).ensure())
        #expect(installed.lines == ["nft -a list table ip flannel-ipv4", "nft -a list table ip6 flannel-ipv6"])

        // `nft delete table ip6 flannel-ipv6`: only that table is written again.
        let gone = Self.listing(nft: FlannelTrafficRulesTests.installedNFT)
        #expect(try Self.rules(.nftables, runner: gone).ensure())
        #expect(gone.lines == ["nft -a list table ip flannel-ipv4", "nft -a list table ip6 flannel-ipv6", "nft -f -"])
        #expect(gone.commands[2].stdin.hasPrefix("add table ip6 flannel-ipv6 "))
    }

    /// An IPv6-only cluster runs only the IPv6 tools and tables.
    @Test(arguments: NetfilterBackend.allCases)
    func ipv6OnlyTouchesNoIPv4Table(backend: NetfilterBackend) throws {
        let runner = Self.listing(
            nat6: Self.installedNAT6, filter6: Self.installedFilter6, tables: "table ip6 flannel-ipv6\n")
        let r = Self.rules(backend, ipv4: false, runner: runner)
        // ip6tables holds the rules already; the nft table is missing.
        #expect(try r.ensure() == (backend == .nftables))
        #expect(try r.removeOtherBackend())
        #expect(!runner.lines.contains { $0.hasPrefix("iptables") || $0.contains(" ip flannel-ipv4") })
        let writes = runner.lines.filter { $0.contains("restore") || $0 == "nft -f -" }
        #expect(writes == (backend == .iptables ? ["nft -f -"] : ["nft -f -", "ip6tables-restore --noflush -w"]))
    }

    /// A family whose tool fails does not keep the other family from being repaired; the failure
    /// is reported after both ran.
    @Test func aFailingFamilyDoesNotStopTheOther() {
        let noIPv4 = RecordingCommandRunner { c in
            c.executable == "iptables"
                ? CommandOutput(status: 3, stderr: "can't initialize iptables table `nat'\n") : nil
        }
        #expect(throws: NetfilterError.self) { try Self.rules(runner: noIPv4).ensure() }
        #expect(noIPv4.lines.last == "ip6tables-restore --noflush -w")
    }

    /// fully-random refused by ip6tables only: IPv6 falls back, IPv4 keeps asking for it.
    @Test func fullyRandomFallsBackPerFamily() throws {
        let refusing = RecordingCommandRunner { c in
            c.executable == "ip6tables-restore" && c.stdin.contains("--random-fully")
                ? CommandOutput(status: 2, stderr: "unknown option \"--random-fully\"\n") : nil
        }
        let r = Self.rules(runner: refusing)
        #expect(try r.ensure())
        #expect(r.ipv4!.fullyRandom && !r.ipv6!.fullyRandom)
        let writes = refusing.commands.filter { !$0.stdin.isEmpty }
        #expect(writes.map(\.executable) == ["iptables-restore", "ip6tables-restore", "ip6tables-restore"])
        #expect(writes[0].stdin.contains("--random-fully") && !writes[2].stdin.contains("--random-fully"))
    }

    // MARK: - removeOtherBackend

    @Test func nftablesModeRemovesFlanneldsIP6TablesRules() throws {
        let runner = Self.listing(
            nat: FlannelTrafficRulesTests.installedNAT, filter: FlannelTrafficRulesTests.installedFilter,
            nat6: Self.installedNAT6, filter6: Self.installedFilter6)
        #expect(try Self.rules(.nftables, runner: runner).removeOtherBackend())
        #expect(
            runner.lines == [
                "iptables -w -t nat -S", "iptables -w -t filter -S", "iptables-restore --noflush -w",
                "ip6tables -w -t nat -S", "ip6tables -w -t filter -S", "ip6tables-restore --noflush -w",
            ])
        #expect(runner.commands[5].stdin == runner.commands[2].stdin)
        #expect(runner.commands[5].stdin.contains("-X FLANNEL-POSTRTG"))

        // IPv6 only: ip6tables alone; only IPv4 left there: nothing to do.
        let v6Only = Self.listing(nat6: Self.installedNAT6, filter6: Self.installedFilter6)
        #expect(try Self.rules(.nftables, ipv4: false, runner: v6Only).removeOtherBackend())
        #expect(
            v6Only.lines == ["ip6tables -w -t nat -S", "ip6tables -w -t filter -S", "ip6tables-restore --noflush -w"])
        let v4Left = Self.listing(
            nat: FlannelTrafficRulesTests.installedNAT, filter: FlannelTrafficRulesTests.installedFilter)
        #expect(try !Self.rules(.nftables, ipv4: false, runner: v4Left).removeOtherBackend())

        // No ip6tables at all: the IPv4 side is still removed.
        let noIP6 = RecordingCommandRunner(missing: ["ip6tables", "ip6tables-restore"]) { c in
            c.executable == "iptables" && c.arguments[2] == "nat"
                ? CommandOutput(status: 0, stdout: FlannelTrafficRulesTests.installedNAT) : nil
        }
        #expect(try Self.rules(.nftables, runner: noIP6).removeOtherBackend())
        #expect(noIP6.lines.last == "ip6tables -w -t nat -S")
    }

    @Test func iptablesModeDeletesBothNFTTablesWhateverTheFamilies() throws {
        let tables = "table ip flannel-ipv4\ntable ip6 flannel-ipv6\n"
        for (ipv4, ipv6) in [(true, true), (false, true), (true, false)] {
            let runner = Self.listing(tables: tables)
            #expect(try Self.rules(.iptables, ipv4: ipv4, ipv6: ipv6, runner: runner).removeOtherBackend())
            #expect(runner.commands.last?.stdin == "delete table ip flannel-ipv4\ndelete table ip6 flannel-ipv6\n")
        }
    }
}
