// flanneld's traffic rules (pkg/trafficmngr): masquerading with --ip-masq, and the forward accepts
// that --iptables-forward-rules (default true) adds, in either netfilter backend, with flanneld's
// names, rules and comments, so that a node can switch between flanneld and podnetd either way:
//   iptables  nat    POSTROUTING -> FLANNEL-POSTRTG: RETURN inside the overlay, MASQUERADE leaving it
//             filter FORWARD     -> FLANNEL-FWD:     ACCEPT to and from the overlay
//   nftables  table ip flannel-ipv4, base chains postrtg (nat, srcnat) and forward (filter), the
//             same rules (FlannelNFTables.swift)
// IPv4 only, as podnetd's overlay; every family-dependent name comes from `network`, so dual stack
// can add an instance per family.
//
// `ensure` lists the backend's tables (two iptables listings, or one nft listing) and, unless all
// that the options enable is in place and all they disable is absent, writes one transaction: an
// `iptables-restore --noflush` script or an `nft -f -` script. Both rewrite every enabled chain whole
// inside the transaction (declaring a chain in a --noflush restore flushes it; nft flushes it), so
// the rules are never missing in between; flanneld flushes its chains before restoring, which drops
// masquerading for a moment on every restart (flannel-io/flannel#2237). podnetd's repair loop calls
// `ensure` every --iptables-resync seconds; when all is in place that costs the listings only.
//
// `removeOtherBackend` is flanneld's CleanUp of the traffic manager it does not use, run once at
// start-up. flanneld's iptables CleanUp deletes nat FLANNEL-POSTRTG and nat FLANNEL-FWD (sic: the
// forward chain lives in filter) without their jumps, so the deletes fail while a jump exists; here
// the jumps go first and filter FLANNEL-FWD goes too. A backend whose tool is missing or unusable
// has nothing to remove.
//
// Masquerading with random port allocation (`--random-fully`, nft's `fully-random`) needs
// iptables 1.6.2 and Linux 3.13, or an nft that knows the flag. flanneld probes for it
// before writing (a dry-run chain for nft, iptables' version for iptables); here the transaction
// is simply tried, and when one that asks for it fails, the same transaction without it is tried
// once; if that one works (or the rules without it are in place already), this instance stops
// asking. That costs nothing where it is supported, which is everywhere podnet runs, and no probe
// can disagree with the write. The price: a failure that had nothing to do with fully-random but
// passes on the second try (none is known: iptables -w waits for the lock) drops it until restart.

import Addressing
import Synchronization

/// flanneld's masquerade and forward rules for one node's `subnet` of the overlay `network`.
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

    public let network: IPNetwork
    public let subnet: IPNetwork
    public let backend: NetfilterBackend
    public let options: Options
    let executor: NetfilterExecutor
    /// Set once a transaction without fully-random worked where the same one with it failed.
    let fullyRandomFailed: Flag
    /// Set once, with nothing enabled, the rules of an earlier run were found removed.
    let disabledRulesRemoved: Flag

    public static let postroutingChain = "FLANNEL-POSTRTG"
    public static let forwardChain = "FLANNEL-FWD"
    public static let masqComment = "flanneld masq"
    public static let forwardComment = "flanneld forward"

    public init(
        network: IPNetwork, subnet: IPNetwork, backend: NetfilterBackend, options: Options,
        runner: any CommandRunner = SystemCommandRunner()
    ) {
        self.network = network
        self.subnet = subnet
        self.backend = backend
        self.options = options
        executor = NetfilterExecutor(runner: runner)
        fullyRandomFailed = Flag()
        disabledRulesRemoved = Flag()
    }

    /// Whether the next transaction asks for random port allocation.
    var fullyRandom: Bool { options.fullyRandom && !fullyRandomFailed.value }

    // MARK: - Keeping the rules

    /// Installs what Options enable unless all of it is in place; returns whether it (re)wrote
    /// anything. A disabled part is removed if present (flanneld leaves it). Nothing enabled: the
    /// first call removes what an earlier run left, and every later one runs no process at all.
    // iptables -w -t nat -S; iptables -w -t filter -S; [iptables-restore --noflush -w]
    // nft -a list table ip flannel-ipv4; [nft -f -]
    public func ensure() throws(NetfilterError) -> Bool {
        let enabled = options.masquerade || options.forward
        guard enabled || !disabledRulesRemoved.value else { return false }
        let wrote = try converge()
        if !enabled { disabledRulesRemoved.value = true }
        return wrote
    }

    /// One listing of the backend's tables, and one transaction when they are not as the options say.
    func converge() throws(NetfilterError) -> Bool {
        switch backend {
        case .iptables:
            let nat = try executor.listIPTables(network.family, table: "nat")
            let filter = try executor.listIPTables(network.family, table: "filter")
            return try apply { random in
                restoreScript(nat: nat, filter: filter, fullyRandom: random).map { .iptables(network.family, $0) }
            }
        case .nftables:
            let table = Self.nftTable(network.family)
            let listing = try executor.listNFT(table.family, table.name)
            return try apply { random in nftScript(listing: listing, fullyRandom: random).map { .nft($0) } }
        }
    }

    /// Applies `render(fullyRandom)`; when that fails and asked for fully-random, applies
    /// `render(false)` instead (see the file's note). Returns whether a transaction was applied.
    func apply(_ render: (Bool) -> Transaction?) throws(NetfilterError) -> Bool {
        let random = fullyRandom
        guard let transaction = render(random) else { return false }
        let out = try executor.runner.run(transaction.command)
        if out.status == 0 { return true }
        let failure = NetfilterError.commandFailed(
            command: transaction.command.description, status: out.status, stderr: trimmed(out.stderr))
        guard random else { throw failure }
        // Without fully-random all is in place already (an earlier fallback's rules): keep them.
        guard let plain = render(false) else {
            fullyRandomFailed.value = true
            return false
        }
        // When both fail, the first failure is reported: it is what the options asked for.
        guard plain != transaction, (try? executor.runner.run(plain.command))?.status == 0 else { throw failure }
        fullyRandomFailed.value = true
        return true
    }

    // MARK: - Removing the other backend's rules

    /// Start-up, once, before the first ensure (flanneld's CleanUp of the other traffic manager):
    /// with .nftables removes the iptables side (nat FLANNEL-POSTRTG and filter FLANNEL-FWD, their
    /// jumps, and flanneld's sic nat FLANNEL-FWD if present); with .iptables deletes the nft tables
    /// `ip flannel-ipv4` and `ip6 flannel-ipv6`. Returns whether anything was removed. A backend
    /// whose tool is not installed or unusable (its listing fails) has nothing to remove.
    // iptables -w -t nat -S; iptables -w -t filter -S; [iptables-restore --noflush -w]
    // nft list tables; [nft -f -]
    public func removeOtherBackend() throws(NetfilterError) -> Bool {
        switch backend {
        case .nftables:
            let family = network.family
            let list = { (table: String) throws(NetfilterError) in
                try Self.listingOrNothing { () throws(NetfilterError) in
                    try executor.listIPTables(family, table: table)
                }
            }
            guard let nat = try list("nat"), let filter = try list("filter"),
                let script = Self.iptablesRemovalScript(nat: nat, filter: filter)
            else { return false }
            try executor.apply(.iptables(family, script))
            return true
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

    /// FLANNEL-POSTRTG (nat): leave marked traffic and traffic within the overlay alone; masquerade
    /// what leaves it from the overlay, and what enters it from elsewhere.
    public func postroutingRules(fullyRandom: Bool) -> [IPTablesRule] {
        let (n, s) = (network.network.description, subnet.network.description)
        let c = ["-m", "comment", "--comment", Self.masqComment]
        let masquerade = ["-j", "MASQUERADE"] + (fullyRandom ? ["--random-fully"] : [])
        return [
            ["-m", "mark", "--mark", "0x4000/0x4000"] + c + ["-j", "RETURN"],
            ["-s", s, "-d", n] + c + ["-j", "RETURN"],
            ["-s", n, "-d", s] + c + ["-j", "RETURN"],
            ["!", "-s", n, "-d", s] + c + ["-j", "RETURN"],
            ["-s", n, "!", "-d", Self.multicast(network.family)] + c + masquerade,
            ["!", "-s", n, "-d", n] + c + masquerade,
        ].map { IPTablesRule(chain: Self.postroutingChain, arguments: $0) }
    }

    /// FLANNEL-POSTRTG's rules as the options ask for them.
    public var postroutingRules: [IPTablesRule] { postroutingRules(fullyRandom: fullyRandom) }

    /// FLANNEL-FWD (filter): accept forwarded traffic from and to the overlay.
    public var forwardRules: [IPTablesRule] {
        let c = ["-m", "comment", "--comment", Self.forwardComment]
        return [
            ["-s", network.network.description] + c + ["-j", "ACCEPT"],
            ["-d", network.network.description] + c + ["-j", "ACCEPT"],
        ]
        .map { IPTablesRule(chain: Self.forwardChain, arguments: $0) }
    }

    /// The jump from nat's POSTROUTING to FLANNEL-POSTRTG.
    public static let postroutingJump = IPTablesRule(
        chain: "POSTROUTING", arguments: ["-m", "comment", "--comment", masqComment, "-j", postroutingChain])
    /// The jump from filter's FORWARD to FLANNEL-FWD.
    public static let forwardJump = IPTablesRule(
        chain: "FORWARD", arguments: ["-m", "comment", "--comment", forwardComment, "-j", forwardChain])

    static func multicast(_ family: IPFamily) -> String { family == .v4 ? "224.0.0.0/4" : "ff00::/8" }

    /// The restore script that puts the enabled rules in place and removes the disabled ones,
    /// given the nat and filter tables; nil when all is as it should be. An enabled chain is in
    /// place when it holds exactly its rules, in order, and its jump exists; when one is not,
    /// every enabled chain is rewritten whole, and jumps are added only where missing. A disabled
    /// chain that is there is deleted with the jumps to it.
    public func restoreScript(nat: IPTablesListing, filter: IPTablesListing, fullyRandom: Bool? = nil) -> String? {
        let parts = [
            (
                enabled: options.masquerade, listing: nat, chain: Self.postroutingChain, jump: Self.postroutingJump,
                rules: postroutingRules(fullyRandom: fullyRandom ?? self.fullyRandom)
            ),
            (
                enabled: options.forward, listing: filter, chain: Self.forwardChain, jump: Self.forwardJump,
                rules: forwardRules
            ),
        ]
        let inPlace = parts.allSatisfy { p in
            !p.enabled || p.listing.rules.contains(p.jump) && p.listing.rules.filter { $0.chain == p.chain } == p.rules
        }
        let removals = parts.map { p in p.enabled ? nil : Self.removal(of: [p.chain], in: p.listing) }
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

    /// Restore lines deleting `chains` of one table and every rule elsewhere that jumps to them;
    /// nil when none of them is there. Declaring a chain flushes it, so `-X` finds it empty.
    static func removal(of chains: [String], in listing: IPTablesListing) -> [String]? {
        let jumps = listing.rules.filter { r in r.target.map(chains.contains) == true && !chains.contains(r.chain) }
        let present = chains.filter(listing.chains.contains)
        guard !present.isEmpty || !jumps.isEmpty else { return nil }
        return present.map { ":\($0) - [0:0]" } + jumps.map { $0.line("-D") } + present.map { "-X \($0)" }
    }

    /// The restore script removing flanneld's iptables rules (the other backend of nftables mode):
    /// nat FLANNEL-POSTRTG, nat FLANNEL-FWD (flanneld's CleanUp names it there), filter FLANNEL-FWD,
    /// and their jumps; nil when there is none of them.
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

/// A fact learnt once (fully-random unsupported; leftovers removed), shared by the copies of one
/// FlannelTrafficRules.
final class Flag: Sendable {
    private let flag = Atomic<Bool>(false)

    var value: Bool {
        get { flag.load(ordering: .relaxed) }
        set { flag.store(newValue, ordering: .relaxed) }
    }
}
