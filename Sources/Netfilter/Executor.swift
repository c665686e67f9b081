// The one way the rule sets reach the kernel. Bridge masquerading (`Masquerade`), port mapping
// (`HostPorts`) and flanneld's rules (`FlannelTrafficRules`) are pure renderers from listings to
// scripts; this executor lists, applies and probes for all of them, one process per operation:
//   list   iptables -w -t <table> -S [chain]         nft -a list table|chain <family> <table> [chain]
//   apply  iptables-restore --noflush -w < script    nft -f - < script
//   probe  iptables -w -t filter -S INPUT            nft --check add table <family> <table>
//
// An applied script is one transaction (one table replace for iptables-legacy, one netlink batch
// for iptables-nft and nft): when it fails, nothing changed. So a failure that a concurrent writer
// may have caused (a shared chain created, a listed rule handle deleted between our listing and our
// write) is retried by listing again and rendering again (`transact`). How many attempts an
// operation gets is the rule set's call, since only it knows which races its scripts can lose.

import Addressing
import Netlink

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The two ways to program netfilter: the bridge's `ipMasqBackend` and portmap's `backend` values.
public enum NetfilterBackend: String, Sendable, Hashable, CaseIterable {
    case iptables, nftables

    /// Parses the config value; the reference's error for anything else.
    public init(named name: String) throws(NetfilterError) {
        guard let b = NetfilterBackend(rawValue: name) else { throw .unknownBackend(name) }
        self = b
    }
}

/// One transaction to apply: a restore script for iptables or ip6tables, or an nft script.
public struct Transaction: Hashable, Sendable {
    public var command: Command
    /// Whether listing again could render a transaction that succeeds where this one failed
    /// (it deletes rules by handle, or creates chains that another writer may create too).
    public var retryable: Bool

    /// `iptables-restore --noflush -w` (`ip6tables-restore` for v6) with `script` on stdin.
    /// `--noflush` leaves every chain the script does not declare as it is.
    public static func iptables(_ family: IPFamily, _ script: String, retryable: Bool = true) -> Transaction {
        Transaction(
            command: Command(NetfilterExecutor.iptables(family) + "-restore", ["--noflush", "-w"], stdin: script),
            retryable: retryable)
    }

    /// `nft -f -` with `script` on stdin.
    public static func nft(_ script: String, retryable: Bool = true) -> Transaction {
        Transaction(command: Command("nft", ["-f", "-"], stdin: script), retryable: retryable)
    }
}

/// Lists tables, applies transactions and probes backends through a `CommandRunner`, and
/// nftables batches through `nftables` when there is one.
public struct NetfilterExecutor: Sendable {
    public let runner: any CommandRunner
    /// nftables over netlink; nil: every nftables change is an `nft -f -` process.
    public let nftables: (any NFTablesKernel)?

    public init(runner: any CommandRunner = SystemCommandRunner(), nftables: (any NFTablesKernel)? = nil) {
        self.runner = runner
        self.nftables = nftables
    }

    /// "iptables" or "ip6tables".
    public static func iptables(_ family: IPFamily) -> String { family == .v4 ? "iptables" : "ip6tables" }

    // MARK: - Listing

    /// The chains and rules of `table` (or only of `chain` in it); throws when iptables fails,
    /// which is also how an unusable iptables shows.
    // iptables -w -t <table> -S [chain]
    public func listIPTables(
        _ family: IPFamily, table: String = "nat",
        chain: String? = nil
    ) throws(NetfilterError) -> IPTablesListing {
        let args = ["-w", "-t", table, "-S"] + (chain.map { [$0] } ?? [])
        return IPTablesListing(parsing: try runner.succeed(Command(Self.iptables(family), args)))
    }

    /// The rules of nft table `family table` (or only of `chain` in it), with their handles;
    /// empty when the table or chain does not exist yet.
    // nft -a list table <family> <table>  |  nft -a list chain <family> <table> <chain>
    public func listNFT(_ family: String, _ table: String, chain: String? = nil) throws(NetfilterError) -> NFTListing {
        let args = ["-a", "list", chain == nil ? "table" : "chain", family, table] + (chain.map { [$0] } ?? [])
        let command = Command("nft", args)
        let out = try runner.run(command)
        if out.status == 0 { return NFTListing(parsing: out.stdout) }
        if out.stderr.contains("No such file or directory") { return NFTListing() }
        throw .commandFailed(command: command.description, status: out.status, stderr: trimmed(out.stderr))
    }

    // MARK: - Applying

    /// Applies one transaction; throws `commandFailed` unless it succeeds.
    public func apply(_ transaction: Transaction) throws(NetfilterError) {
        _ = try runner.succeed(transaction.command)
    }

    /// Renders a transaction from a listing and applies it, up to `attempts` times: the first
    /// attempt renders from `first` when given (a listing the caller already has, which saves a
    /// process), every other from a fresh `list()`. A failed transaction is tried again only when
    /// it is `retryable`. Returns the listing the applied transaction was rendered from; nil when
    /// `render` found nothing to do.
    @discardableResult
    public func transact<Listing>(
        attempts: Int = 1, first: Listing? = nil,
        list: () throws(NetfilterError) -> Listing,
        render: (Listing) -> Transaction?
    ) throws(NetfilterError) -> Listing? {
        var given = first
        for attempt in 1...max(attempts, 1) {
            let listing: Listing
            if let g = given { listing = g; given = nil } else { listing = try list() }
            guard let transaction = render(listing) else { return nil }
            let out = try runner.run(transaction.command)
            if out.status == 0 { return listing }
            if attempt >= attempts || !transaction.retryable {
                throw .commandFailed(
                    command: transaction.command.description, status: out.status,
                    stderr: trimmed(out.stderr))
            }
        }
        return nil
    }

    // MARK: - iptables without a process

    /// Whether iptables holds nothing of `chain` in `table` for `family`, known without starting
    /// a process: there is no legacy x_tables `table` in this namespace (it would be listed in
    /// /proc/net/ip_tables_names or ip6_tables_names), and in nf_tables, where iptables-nft keeps
    /// its rules (table `ip|ip6 <table>`), `chain` has no rule and no rule of `from` jumps to it.
    /// False whenever it cannot tell (no nftables over netlink, a listing that fails), so a
    /// caller then lists with iptables as before.
    public func iptablesHoldsNothing(_ family: IPFamily, table: String = "nat", chain: String, from: String) -> Bool {
        guard let nftables, !Self.legacyTables(family).contains(table) else { return false }
        let nftFamily = NFTFamily(family)
        guard let own = try? nftables.rules(nftFamily, table: table, chain: chain), own.isEmpty,
            let entry = try? nftables.rules(nftFamily, table: table, chain: from)
        else { return false }
        return !entry.contains { rule in
            rule.expressions.contains { $0 == .verdict(.jump(chain)) || $0 == .verdict(.goto(chain)) }
        }
    }

    /// The legacy (x_tables) iptables tables of this network namespace; none when the module is
    /// not loaded.
    static func legacyTables(_ family: IPFamily) -> [String] {
        let path = family == .v4 ? "/proc/net/ip_tables_names" : "/proc/net/ip6_tables_names"
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return [] }
        return String(decoding: bytes.prefix(n), as: UTF8.self).split(separator: "\n").map(String.init)
    }

    // MARK: - nftables over netlink

    /// Runs `body` against the netlink kernel. Returns false, having done nothing, when there is
    /// none or the kernel refused nftables over netlink (`refusesNetlink`): then the caller does
    /// the same with `nft`. Every other error is thrown.
    public func viaNetlink(_ body: (any NFTablesKernel) throws(NetfilterError) -> Void) throws(NetfilterError) -> Bool {
        guard let nftables else { return false }
        do throws(NetfilterError) {
            try body(nftables)
            return true
        } catch {
            if error.refusesNetlink { return false }
            throw error
        }
    }

    /// The netlink twin of `transact`: lists, renders a batch and applies it, up to `attempts`
    /// times; a batch that failed because a listed rule was gone (ENOENT) is rendered again from
    /// a fresh listing, as is nothing else. Returns the listing the applied batch came from; nil
    /// when `render` found nothing to do.
    @discardableResult
    public func transactNetlink<Listing>(
        attempts: Int = 2, list: () throws(NetfilterError) -> Listing,
        render: (Listing) -> NFTBatch
    ) throws(NetfilterError) -> Listing? {
        for attempt in 1...max(attempts, 1) {
            let listing = try list()
            let batch = render(listing)
            if batch.isEmpty { return nil }
            guard let nftables else { return nil }
            do throws(NetfilterError) {
                try nftables.apply(batch)
                return listing
            } catch {
                if attempt >= attempts || !error.isNetlinkNotFound { throw error }
            }
        }
        return nil
    }

    // MARK: - Choosing a backend

    /// Whether iptables works here: the reference's `SupportsIPTables`, which lists the filter
    /// table's INPUT chain (it fails when the binary is missing or the kernel lacks the tables).
    // iptables -w -t filter -S INPUT
    public func iptablesUsable(_ family: IPFamily = .v4) -> Bool {
        (try? runner.run(Command(Self.iptables(family), ["-w", "-t", "filter", "-S", "INPUT"])))?.status == 0
    }

    /// Whether nft works here for the table a rule set writes: nft accepts a dry-run transaction
    /// adding it (it fails when the binary is missing or the kernel lacks the table's family).
    // nft --check add table <family> <table>
    public func nftablesUsable(_ family: String, _ table: String) -> Bool {
        (try? runner.run(Command("nft", ["--check", "add", "table", family, table])))?.status == 0
    }

    /// The backend for `backend`, where nil is the reference's automatic choice: iptables,
    /// unless `read` (the rule set's first iptables listing) fails and nftables is usable for
    /// `nftTable`. The listing is returned so that it doubles as the probe and costs no extra
    /// process; nil when `backend` was given. Throws `read`'s error when neither backend works.
    public func resolve<Listing>(
        _ backend: NetfilterBackend?, nftTable: (family: String, name: String),
        reading read: () throws(NetfilterError) -> Listing
    )
        throws(NetfilterError) -> (NetfilterBackend, Listing?)
    {
        if let backend { return (backend, nil) }
        do throws(NetfilterError) {
            return (.iptables, try read())
        } catch {
            guard nftablesUsable(nftTable.family, nftTable.name) else { throw error }
            return (.nftables, nil)
        }
    }

    /// The automatic choice by probes alone, where nothing needs reading first (CHECK):
    /// nftables when iptables is unusable and nftables usable for `nftTable`, else iptables.
    public func probedBackend(nftTable: (family: String, name: String)) -> NetfilterBackend {
        !iptablesUsable(.v4) && nftablesUsable(nftTable.family, nftTable.name) ? .nftables : .iptables
    }
}
