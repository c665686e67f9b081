// flanneld's traffic rules (pkg/trafficmngr): masquerading with --ip-masq, and the forward accepts
// that --iptables-forward-rules (default true) adds, in either netfilter backend, with flanneld's
// names, rules and comments, so that a node can switch between flanneld and podnetd either way:
//   iptables  nat    POSTROUTING -> FLANNEL-POSTRTG: RETURN inside the overlay, MASQUERADE leaving it
//             filter FORWARD     -> FLANNEL-FWD:     ACCEPT to and from the overlay
//   nftables  table ip flannel-ipv4, base chains postrtg (nat, srcnat) and forward (filter), the
//             same rules (FlannelNFTables.swift)
// Per family, as flanneld does it: an IPv6 network gets the same rules in ip6tables (with ff00::/8
// for 224.0.0.0/4) or in table `ip6 flannel-ipv6`. One instance keeps the families the cluster
// runs: IPv4, IPv6 or both (`FamilyRules`, one per family, renders; this type lists and writes).
//
// `ensure` lists the backend's tables (two iptables listings, or one nft listing, per family) and,
// for each family where not all that the options enable is in place or not all they disable is
// absent, writes one transaction: an `iptables-restore --noflush` script (`ip6tables-restore` for
// IPv6) or an `nft -f -` script. Both rewrite every enabled chain whole inside the transaction
// (declaring a chain in a --noflush restore flushes it; nft flushes it), so the rules are never
// missing in between; flanneld flushes its chains before restoring, which drops masquerading for a
// moment on every restart (flannel-io/flannel#2237). podnetd's repair loop calls `ensure` every
// --iptables-resync seconds; when all is in place that costs the listings only. A family that fails
// does not stop the other from being repaired; the first failure is reported after both ran.
//
// flanneld deletes the rule set built from the Network and subnet recorded in subnet.env before it
// writes the new one when they differ. Here that needs no record: a chain whose rules are not
// exactly the current ones (old subnet, old network) is rewritten whole, in either family.
//
// `removeOtherBackend` is flanneld's CleanUp of the traffic manager it does not use, run once at
// start-up. flanneld's iptables CleanUp deletes nat FLANNEL-POSTRTG and nat FLANNEL-FWD (sic: the
// forward chain lives in filter) without their jumps, so the deletes fail while a jump exists; here
// the jumps go first and filter FLANNEL-FWD goes too, in iptables and/or ip6tables for the families
// this instance keeps. The nftables side is both of flanneld's tables, whatever the families, as
// flanneld's nftables CleanUp does. A backend whose tool is missing or unusable has nothing to remove.
//
// Masquerading with random port allocation (`--random-fully`, nft's `fully-random`) needs
// iptables 1.6.2 and Linux 3.13, or an nft that knows the flag. flanneld probes for it
// before writing (a dry-run chain for nft, iptables' version for iptables); here the transaction
// is simply tried, and when one that asks for it fails, the same transaction without it is tried
// once; if that one works (or the rules without it are in place already), this family stops
// asking. That costs nothing where it is supported, which is everywhere podnet runs, and no probe
// can disagree with the write. The price: a failure that had nothing to do with fully-random but
// passes on the second try (none is known: iptables -w waits for the lock) drops it until restart.

import Addressing
import Synchronization

/// flanneld's masquerade and forward rules for one node's subnets of the overlay: IPv4, IPv6 or both.
public struct FlannelTrafficRules: Sendable {
    /// What flanneld's flags enable.
    public struct Options: Sendable, Equatable {
        /// `--ip-masq`: FLANNEL-POSTRTG (iptables) or chain postrtg (nftables).
        public var masquerade = false
        /// `--iptables-forward-rules` (default true): FLANNEL-FWD (iptables) or chain forward (nftables).
        public var forward = true
        /// False with `--ip-masq-fully-random-disable`.
        public var fullyRandom = true

        public init() {}
    }

    /// The rules of one family: its overlay `network` and this node's `subnet` of it.
    public struct FamilyRules: Sendable {
        public let network: IPNetwork
        public let subnet: IPNetwork
        public let options: Options
        /// Set once a transaction without fully-random worked where the same one with it failed.
        let fullyRandomFailed: Flag

        init(network: IPNetwork, subnet: IPNetwork, options: Options) {
            precondition(network.family == subnet.family, "the subnet \(subnet) is not of \(network)'s family")
            self.network = network
            self.subnet = subnet
            self.options = options
            fullyRandomFailed = Flag()
        }

        public var family: IPFamily { network.family }

        /// Whether the next transaction asks for random port allocation.
        var fullyRandom: Bool { options.fullyRandom && !fullyRandomFailed.value }
    }

    /// The IPv4 rules; nil in an IPv6-only cluster.
    public let ipv4: FamilyRules?
    /// The IPv6 rules; nil unless the cluster runs IPv6.
    public let ipv6: FamilyRules?
    public let backend: NetfilterBackend
    public let options: Options
    let executor: NetfilterExecutor
    /// Set once, with nothing enabled, the rules of an earlier run were found removed.
    let disabledRulesRemoved: Flag

    public static let postroutingChain = "FLANNEL-POSTRTG"
    public static let forwardChain = "FLANNEL-FWD"
    public static let masqComment = "flanneld masq"
    public static let forwardComment = "flanneld forward"

    /// The rules of each family the cluster runs, given its overlay network and this node's
    /// subnet of it; at least one. Each pair is of its family (an IPv6 pair as `ipv4` is a
    /// programming error).
    public init(
        ipv4: (network: IPNetwork, subnet: IPNetwork)?, ipv6: (network: IPNetwork, subnet: IPNetwork)?,
        backend: NetfilterBackend, options: Options, runner: any CommandRunner = SystemCommandRunner()
    ) {
        precondition(ipv4 != nil || ipv6 != nil, "traffic rules need an IPv4 or an IPv6 network")
        precondition(ipv4.map { $0.network.family == .v4 } ?? true, "ipv4: \(ipv4!.network) is not IPv4")
        precondition(ipv6.map { $0.network.family == .v6 } ?? true, "ipv6: \(ipv6!.network) is not IPv6")
        self.ipv4 = ipv4.map { FamilyRules(network: $0.network, subnet: $0.subnet, options: options) }
        self.ipv6 = ipv6.map { FamilyRules(network: $0.network, subnet: $0.subnet, options: options) }
        self.backend = backend
        self.options = options
        executor = NetfilterExecutor(runner: runner)
        disabledRulesRemoved = Flag()
    }

    /// The rules of one family: `network`'s (a single-stack cluster).
    public init(
        network: IPNetwork, subnet: IPNetwork, backend: NetfilterBackend, options: Options,
        runner: any CommandRunner = SystemCommandRunner()
    ) {
        let pair = (network: network, subnet: subnet)
        self.init(
            ipv4: network.family == .v4 ? pair : nil, ipv6: network.family == .v6 ? pair : nil, backend: backend,
            options: options, runner: runner)
    }

    /// The families' rules, IPv4 first.
    public var families: [FamilyRules] { [ipv4, ipv6].compactMap { $0 } }

    // MARK: - Keeping the rules

    /// Installs what Options enable unless all of it is in place; returns whether it (re)wrote
    /// anything. A disabled part is removed if present (flanneld leaves it). Nothing enabled: the
    /// first call removes what an earlier run left, and every later one runs no process at all.
    /// Each family is listed and written on its own; when one fails, the other is still kept and
    /// then the first failure is thrown.
    // iptables -w -t nat -S; iptables -w -t filter -S; [iptables-restore --noflush -w]  (IPv4)
    // ip6tables -w -t nat -S; ip6tables -w -t filter -S; [ip6tables-restore --noflush -w]  (IPv6)
    // nft -a list table ip flannel-ipv4; [nft -f -]  (IPv4)
    // nft -a list table ip6 flannel-ipv6; [nft -f -]  (IPv6)
    public func ensure() throws(NetfilterError) -> Bool {
        let enabled = options.masquerade || options.forward
        guard enabled || !disabledRulesRemoved.value else { return false }
        var wrote = false
        var failure: NetfilterError?
        for rules in families {
            do throws(NetfilterError) {
                if try converge(rules) { wrote = true }
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
        if !enabled { disabledRulesRemoved.value = true }
        return wrote
    }

    /// One listing of the backend's tables for `rules`' family, and one transaction when they are
    /// not as the options say.
    func converge(_ rules: FamilyRules) throws(NetfilterError) -> Bool {
        let family = rules.family
        switch backend {
        case .iptables:
            let nat = try executor.listIPTables(family, table: "nat")
            let filter = try executor.listIPTables(family, table: "filter")
            return try apply(rules) { random in
                rules.restoreScript(nat: nat, filter: filter, fullyRandom: random).map { .iptables(family, $0) }
            }
        case .nftables:
            let table = Self.nftTable(family)
            let listing = try executor.listNFT(table.family, table.name)
            return try apply(rules) { random in rules.nftScript(listing: listing, fullyRandom: random).map { .nft($0) }
            }
        }
    }

    /// Applies `render(fullyRandom)`; when that fails and asked for fully-random, applies
    /// `render(false)` instead (see the file's note), and `rules`' family stops asking. Returns
    /// whether a transaction was applied.
    func apply(_ rules: FamilyRules, _ render: (Bool) -> Transaction?) throws(NetfilterError) -> Bool {
        let random = rules.fullyRandom
        guard let transaction = render(random) else { return false }
        let out = try executor.runner.run(transaction.command)
        if out.status == 0 { return true }
        let failure = NetfilterError.commandFailed(
            command: transaction.command.description, status: out.status, stderr: trimmed(out.stderr))
        guard random else { throw failure }
        // Without fully-random all is in place already (an earlier fallback's rules): keep them.
        guard let plain = render(false) else {
            rules.fullyRandomFailed.value = true
            return false
        }
        // When both fail, the first failure is reported: it is what the options asked for.
        guard plain != transaction, (try? executor.runner.run(plain.command))?.status == 0 else { throw failure }
        rules.fullyRandomFailed.value = true
        return true
    }

    // MARK: - Removing the other backend's rules

    /// Start-up, once, before the first ensure (flanneld's CleanUp of the other traffic manager):
    /// with .nftables removes the iptables side of each family this instance keeps (nat
    /// FLANNEL-POSTRTG and filter FLANNEL-FWD, their jumps, and flanneld's sic nat FLANNEL-FWD if
    /// present; ip6tables for IPv6); with .iptables deletes the nft tables `ip flannel-ipv4` and
    /// `ip6 flannel-ipv6`. Returns whether anything was removed. A backend whose tool is not
    /// installed or unusable (its listing fails) has nothing to remove.
    // iptables -w -t nat -S; iptables -w -t filter -S; [iptables-restore --noflush -w]  (and ip6tables)
    // nft list tables; [nft -f -]
    public func removeOtherBackend() throws(NetfilterError) -> Bool {
        switch backend {
        case .nftables:
            var removed = false
            for family in families.map(\.family) {
                let list = { (table: String) throws(NetfilterError) in
                    try Self.listingOrNothing { () throws(NetfilterError) in
                        try executor.listIPTables(family, table: table)
                    }
                }
                guard let nat = try list("nat"), let filter = try list("filter"),
                    let script = Self.iptablesRemovalScript(nat: nat, filter: filter)
                else { continue }
                try executor.apply(.iptables(family, script))
                removed = true
            }
            return removed
        case .iptables:
            let tables = try Self.listingOrNothing { () throws(NetfilterError) in
                try executor.runner.succeed(Command("nft", ["list", "tables"]))
            }
            guard let script = tables.flatMap(Self.nftRemovalScript) else { return false }
            try executor.apply(.nft(script))
            return true
        }
    }

    /// `list()`, or nil when the tool is missing (launchFailed) or unusable (it failed): then
    /// the backend holds nothing of ours. A tool that hangs (timedOut) is an error.
    static func listingOrNothing<L>(_ list: () throws(NetfilterError) -> L) throws(NetfilterError) -> L? {
        do throws(NetfilterError) {
            return try list()
        } catch {
            switch error {
            case .launchFailed, .commandFailed: return nil
            default: throw error
            }
        }
    }

    // MARK: - iptables

    /// The jump from nat's POSTROUTING to FLANNEL-POSTRTG.
    public static let postroutingJump = IPTablesRule(
        chain: "POSTROUTING", arguments: ["-m", "comment", "--comment", masqComment, "-j", postroutingChain])
    /// The jump from filter's FORWARD to FLANNEL-FWD.
    public static let forwardJump = IPTablesRule(
        chain: "FORWARD", arguments: ["-m", "comment", "--comment", forwardComment, "-j", forwardChain])

    static func multicast(_ family: IPFamily) -> String { family == .v4 ? "224.0.0.0/4" : "ff00::/8" }

    /// Restore lines deleting `chains` of one table and every rule elsewhere that jumps to them;
    /// nil when none of them is there. Declaring a chain flushes it, so `-X` finds it empty.
    static func removal(of chains: [String], in listing: IPTablesListing) -> [String]? {
        let jumps = listing.rules.filter { r in r.target.map(chains.contains) == true && !chains.contains(r.chain) }
        let present = chains.filter(listing.chains.contains)
        guard !present.isEmpty || !jumps.isEmpty else { return nil }
        return present.map { ":\($0) - [0:0]" } + jumps.map { $0.line("-D") } + present.map { "-X \($0)" }
    }

    /// The restore script removing flanneld's iptables rules of one family (the other backend of
    /// nftables mode): nat FLANNEL-POSTRTG, nat FLANNEL-FWD (flanneld's CleanUp names it there),
    /// filter FLANNEL-FWD, and their jumps; nil when there is none of them.
    static func iptablesRemovalScript(nat: IPTablesListing, filter: IPTablesListing) -> String? {
        let natLines = removal(of: [postroutingChain, forwardChain], in: nat)
        let filterLines = removal(of: [forwardChain], in: filter)
        if natLines == nil && filterLines == nil { return nil }
        let lines =
            (natLines.map { ["*nat"] + $0 + ["COMMIT"] } ?? [])
            + (filterLines.map { ["*filter"] + $0 + ["COMMIT"] } ?? [])
        return (lines + [""]).joined(separator: "\n")
    }
}

extension FlannelTrafficRules.FamilyRules {
    typealias Rules = FlannelTrafficRules

    /// FLANNEL-POSTRTG (nat): leave marked traffic and traffic within the overlay alone; masquerade
    /// what leaves it from the overlay, and what enters it from elsewhere.
    public func postroutingRules(fullyRandom: Bool) -> [IPTablesRule] {
        let (n, s) = (network.network.description, subnet.network.description)
        let c = ["-m", "comment", "--comment", Rules.masqComment]
        let masquerade = ["-j", "MASQUERADE"] + (fullyRandom ? ["--random-fully"] : [])
        return [
            ["-m", "mark", "--mark", "0x4000/0x4000"] + c + ["-j", "RETURN"],
            ["-s", s, "-d", n] + c + ["-j", "RETURN"],
            ["-s", n, "-d", s] + c + ["-j", "RETURN"],
            ["!", "-s", n, "-d", s] + c + ["-j", "RETURN"],
            ["-s", n, "!", "-d", Rules.multicast(family)] + c + masquerade,
            ["!", "-s", n, "-d", n] + c + masquerade,
        ].map { IPTablesRule(chain: Rules.postroutingChain, arguments: $0) }
    }

    /// FLANNEL-POSTRTG's rules as the options ask for them.
    public var postroutingRules: [IPTablesRule] { postroutingRules(fullyRandom: fullyRandom) }

    /// FLANNEL-FWD (filter): accept forwarded traffic from and to the overlay.
    public var forwardRules: [IPTablesRule] {
        let c = ["-m", "comment", "--comment", Rules.forwardComment]
        return [
            ["-s", network.network.description] + c + ["-j", "ACCEPT"],
            ["-d", network.network.description] + c + ["-j", "ACCEPT"],
        ]
        .map { IPTablesRule(chain: Rules.forwardChain, arguments: $0) }
    }

    /// The restore script (for iptables-restore or ip6tables-restore, by the family) that puts the
    /// enabled rules in place and removes the disabled ones, given the family's nat and filter
    /// tables; nil when all is as it should be. An enabled chain is in place when it holds exactly
    /// its rules, in order, and its jump exists; when one is not, every enabled chain is rewritten
    /// whole, and jumps are added only where missing. A disabled chain that is there is deleted
    /// with the jumps to it.
    public func restoreScript(nat: IPTablesListing, filter: IPTablesListing, fullyRandom: Bool? = nil) -> String? {
        let parts = [
            (
                enabled: options.masquerade, listing: nat, chain: Rules.postroutingChain,
                jump: Rules.postroutingJump, rules: postroutingRules(fullyRandom: fullyRandom ?? self.fullyRandom)
            ),
            (
                enabled: options.forward, listing: filter, chain: Rules.forwardChain, jump: Rules.forwardJump,
                rules: forwardRules
            ),
        ]
        let inPlace = parts.allSatisfy { p in
            !p.enabled || p.listing.rules.contains(p.jump) && p.listing.rules.filter { $0.chain == p.chain } == p.rules
        }
        let removals = parts.map { p in p.enabled ? nil : Rules.removal(of: [p.chain], in: p.listing) }
        if inPlace && removals.allSatisfy({ $0 == nil }) { return nil }
        var lines: [String] = []
        for (i, p) in parts.enumerated() {
            var body = removals[i] ?? []
            if p.enabled && !inPlace {
                body = [":\(p.chain) - [0:0]"] + p.rules.map { $0.line() }
                if !p.listing.rules.contains(p.jump) { body.append(p.jump.line()) }
            }
            if !body.isEmpty { lines += [i == 0 ? "*nat" : "*filter"] + body + ["COMMIT"] }
        }
        return (lines + [""]).joined(separator: "\n")
    }
}

/// A fact learnt once (fully-random unsupported; leftovers removed), shared by the copies of one
/// FlannelTrafficRules.
final class Flag: Sendable {
    private let flag = Atomic<Bool>(false)

    var value: Bool {
        get { flag.load(ordering: .relaxed) }
        set { flag.store(newValue, ordering: .relaxed) }
    }
}
