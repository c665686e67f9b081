// Masquerading of pod traffic that leaves the pod's subnet (the bridge plugin's `ipMasq`), in the
// reference plugins' iptables or nftables layout (see IPTables.swift and NFTables.swift), so a Go
// plugin and podnet can each remove what the other added.
//
// What differs from the reference, on purpose:
// - Teardown needs no addresses. The iptables chain is named after network and container ID, so
//   the POSTROUTING jumps are found by target; the reference deletes them by source address and
//   leaks the chain when DEL comes without the link (plugins#810).
// - GC works for both layouts (the reference's iptables GC is a stub).
// - Each family costs one read and one write per call instead of a process per rule:
//     setup     iptables: 2 spawns per family that has an address; nftables: 2
//     teardown  4 (iptables and ip6tables, read + restore) + 1 (nft list) + 1 if nft rules exist
//     gc        like teardown, but the writes only when something is stale
//   A backend probe (`iptables -S INPUT`, `nft --check`) runs only when something failed, to tell
//   "this backend is not usable here" (ignored, as the reference does) from a real error.

import Addressing

public struct Masquerade: Sendable {
    /// The `ipMasqBackend` config value.
    public enum Backend: String, Sendable, Hashable, CaseIterable {
        case iptables, nftables

        /// Parses the config value; the reference's error for anything else.
        public init(named name: String) throws(NetfilterError) {
            guard let b = Backend(rawValue: name) else { throw .unknownBackend(name) }
            self = b
        }
    }

    public let runner: any CommandRunner

    public init(runner: any CommandRunner = SystemCommandRunner()) {
        self.runner = runner
    }

    /// Installs the rules for one attachment's addresses. `backend` nil means the reference's
    /// default: iptables, unless iptables is unusable and nftables is usable. Idempotent: a
    /// repeated setup adds no duplicates, and replaces the rules of an earlier setup of the same
    /// attachment (in iptables, of the families that `addresses` has).
    public func setup(backend: Backend?, network: String, containerID: String, ifname: String,
                      addresses: [IPNetwork]) throws(NetfilterError) {
        let families = [IPFamily.v4, .v6].filter { f in addresses.contains { $0.family == f } }
        guard let first = families.first else { return }
        var chosen = backend ?? .iptables
        var firstListing: IPTablesListing?
        if backend == nil {
            // The first read doubles as the usability probe, so auto costs no extra process.
            do throws(NetfilterError) {
                firstListing = try readNAT(first, chain: "POSTROUTING")
            } catch {
                guard nftablesUsable() else { throw error }
                chosen = .nftables
            }
        }
        switch chosen {
        case .iptables:
            for family in families {
                let m = IPTablesMasquerade(family: family, network: network, containerID: containerID)
                let postrouting: IPTablesListing
                if family == first, let read = firstListing { postrouting = read }
                else { postrouting = try readNAT(family, chain: "POSTROUTING") }
                try restore(family, m.setupScript(addresses: addresses, postrouting: postrouting))
            }
        case .nftables:
            try setupNFT(NFTMasquerade(network: network, ifname: ifname, containerID: containerID), addresses)
        }
    }

    /// One listing for the handles of the attachment's old rules, one transaction.
    private func setupNFT(_ m: NFTMasquerade, _ addresses: [IPNetwork]) throws(NetfilterError) {
        for attempt in 0..<2 {
            let stale = try listNFT(chain: true).rules(in: MasqueradeNames.nftChain, commentPrefix: m.instanceHash)
            let command = Command("nft", ["-f", "-"], stdin: m.setupScript(addresses: addresses, stale: stale.map(\.handle)))
            let out = try runner.run(command)
            if out.status == 0 { return }
            // A handle that vanished between the listing and the transaction (someone flushed the
            // table) fails the whole transaction, so nothing was changed: list again, once.
            if stale.isEmpty || attempt == 1 {
                throw .commandFailed(command: command.description, status: out.status, stderr: trimmed(out.stderr))
            }
        }
    }

    /// Removes every rule of the attachment from both layouts, without needing its addresses.
    /// Idempotent; errors are reported only for a backend that is usable on this host.
    /// `families`, when the caller knows which address families the attachment had (from the
    /// interface or prevResult), limits the iptables side to them; nil tries both.
    public func teardown(network: String, containerID: String, ifname: String,
                         families: Set<IPFamily>? = nil) throws(NetfilterError) {
        var errors: [NetfilterError] = []
        for family in [IPFamily.v4, .v6] where families?.contains(family) ?? true {
            let m = IPTablesMasquerade(family: family, network: network, containerID: containerID)
            do throws(NetfilterError) {
                let table = try readNAT(family, chain: nil)
                if m.isPresent(in: table) { try restore(family, m.teardownScript(postrouting: table)) }
            } catch {
                if iptablesUsable(family) { errors.append(error) }
            }
        }
        do throws(NetfilterError) {
            let prefix = MasqueradeNames.nftInstanceHash(network: network, ifname: ifname, containerID: containerID)
            try deleteNFT(try listNFT(chain: true).rules(in: MasqueradeNames.nftChain, commentPrefix: prefix))
        } catch {
            if nftablesUsable() { errors.append(error) }
        }
        if let error = NetfilterError.joined(errors) { throw error }
    }

    /// Removes the rules of `network` whose attachment is not in `valid`, in both layouts.
    /// iptables rules know only the container ID, so there an attachment is valid when any valid
    /// attachment has its container ID; nftables rules are matched on (ifname, containerID).
    public func gc(network: String, valid: Set<Attachment>) throws(NetfilterError) {
        var errors: [NetfilterError] = []
        let ids = Set(valid.map(\.containerID))
        for family in [IPFamily.v4, .v6] {
            do throws(NetfilterError) {
                let table = try readNAT(family, chain: nil)
                if let script = IPTablesMasquerade.gcScript(network: network, validContainerIDs: ids, table: table) {
                    try restore(family, script)
                }
            } catch {
                if iptablesUsable(family) { errors.append(error) }
            }
        }
        do throws(NetfilterError) {
            let keep = Set(valid.map {
                MasqueradeNames.nftInstanceHash(network: network, ifname: $0.ifname, containerID: $0.containerID)
            })
            let prefix = MasqueradeNames.nftNetworkHash(network) + "-"
            let rules = try listNFT(chain: true).rules(in: MasqueradeNames.nftChain, commentPrefix: prefix)
            try deleteNFT(rules.filter { rule in !keep.contains { rule.comment?.hasPrefix($0) ?? false } })
        } catch {
            if nftablesUsable() { errors.append(error) }
        }
        if let error = NetfilterError.joined(errors) { throw error }
    }

    /// Whether the attachment's rules for `addresses` are all in place (for CHECK), in the
    /// backend that setup would use.
    public func check(backend: Backend?, network: String, containerID: String, ifname: String,
                      addresses: [IPNetwork]) throws(NetfilterError) -> Bool {
        let chosen = backend ?? (!iptablesUsable(.v4) && nftablesUsable() ? .nftables : .iptables)
        switch chosen {
        case .iptables:
            for family in [IPFamily.v4, .v6] where addresses.contains(where: { $0.family == family }) {
                let m = IPTablesMasquerade(family: family, network: network, containerID: containerID)
                guard m.isInstalled(addresses: addresses, in: try readNAT(family, chain: nil)) else { return false }
            }
            return true
        case .nftables:
            let m = NFTMasquerade(network: network, ifname: ifname, containerID: containerID)
            return m.isInstalled(addresses: addresses, in: try listNFT(chain: false))
        }
    }

    // MARK: - Commands

    private static func iptables(_ family: IPFamily) -> String { family == .v4 ? "iptables" : "ip6tables" }

    /// `iptables -w -t nat -S [chain]`: the chain's rules, or the whole nat table.
    private func readNAT(_ family: IPFamily, chain: String?) throws(NetfilterError) -> IPTablesListing {
        let args = ["-w", "-t", "nat", "-S"] + (chain.map { [$0] } ?? [])
        return IPTablesListing(parsing: try runner.succeed(Command(Self.iptables(family), args)))
    }

    /// `iptables-restore --noflush -w` with `script` on stdin: one transaction.
    private func restore(_ family: IPFamily, _ script: String) throws(NetfilterError) {
        _ = try runner.succeed(Command(Self.iptables(family) + "-restore", ["--noflush", "-w"], stdin: script))
    }

    /// `nft -a list chain|table inet cni_plugins_masquerade [masq_checks]`; empty when the table
    /// or chain does not exist yet.
    private func listNFT(chain: Bool) throws(NetfilterError) -> NFTListing {
        let args = ["-a", "list", chain ? "chain" : "table", "inet", MasqueradeNames.nftTable]
            + (chain ? [MasqueradeNames.nftChain] : [])
        let command = Command("nft", args)
        let out = try runner.run(command)
        if out.status == 0 { return NFTListing(parsing: out.stdout) }
        if out.stderr.contains("No such file or directory") { return NFTListing() }
        throw .commandFailed(command: command.description, status: out.status, stderr: trimmed(out.stderr))
    }

    private func deleteNFT(_ rules: [NFTRule]) throws(NetfilterError) {
        guard !rules.isEmpty else { return }
        _ = try runner.succeed(Command("nft", ["-f", "-"], stdin: NFTMasquerade.deleteScript(handles: rules.map(\.handle))))
    }

    /// The reference's `SupportsIPTables`: the filter table can be listed.
    private func iptablesUsable(_ family: IPFamily) -> Bool {
        (try? runner.run(Command(Self.iptables(family), ["-w", "-t", "filter", "-S", "INPUT"])))?.status == 0
    }

    /// The reference's `SupportsNFTables`: nft accepts a dry-run transaction.
    private func nftablesUsable() -> Bool {
        (try? runner.run(Command("nft", ["--check", "add", "table", "inet", MasqueradeNames.nftTable])))?.status == 0
    }
}
