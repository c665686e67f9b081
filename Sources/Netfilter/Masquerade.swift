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
//     setup     iptables: 2 spawns per family that has an address; nftables: no process, one
//               GETRULE dump of masq_checks and one netlink batch (2 `nft` spawns without netlink)
//     teardown  iptables: none when nf_tables and /proc/net show that iptables holds nothing
//               of the attachment (`iptablesHoldsNothing`: iptables-nft keeps its rules in
//               nf_tables), else a read and a restore per family; nftables: a dump and, if the
//               attachment has rules, one batch (1 + 1 `nft` spawns without netlink)
//     gc        like teardown, but the writes only when something is stale
//     check     nftables still reads `nft -a list table` text (rule bodies are compared as text)
//   A backend probe (`iptables -S INPUT`, `nft --check`) runs only when something failed, to tell
//   "this backend is not usable here" (ignored, as the reference does) from a real error.
// Every process and netlink batch goes through `NetfilterExecutor`; when the kernel refuses
// nftables over netlink (see NFTNetlink.swift), the same change is made with `nft -f -`.

import Addressing
import Netlink

public struct Masquerade: Sendable {
    /// The `ipMasqBackend` config value.
    public typealias Backend = NetfilterBackend

    static let nftTable = (family: "inet", name: MasqueradeNames.nftTable)

    public let runner: any CommandRunner
    let executor: NetfilterExecutor

    /// `nftables` nil makes every nftables change an `nft` process through `runner`
    /// (`NetlinkNFTables()` is what the plugins pass).
    public init(runner: any CommandRunner = SystemCommandRunner(), nftables: (any NFTablesKernel)? = nil) {
        self.runner = runner
        executor = NetfilterExecutor(runner: runner, nftables: nftables)
    }

    /// Installs the rules for one attachment's addresses. `backend` nil means the reference's
    /// default: iptables, unless iptables is unusable and nftables is usable. Idempotent: a
    /// repeated setup adds no duplicates, and replaces the rules of an earlier setup of the same
    /// attachment (in iptables, of the families that `addresses` has).
    public func setup(
        backend: Backend?, network: String, containerID: String, ifname: String,
        addresses: [IPNetwork]
    ) throws(NetfilterError) {
        let families = [IPFamily.v4, .v6].filter { f in addresses.contains { $0.family == f } }
        guard let first = families.first else { return }
        // With the automatic choice, the first read doubles as the usability probe.
        let (chosen, firstListing) = try executor.resolve(backend, nftTable: Self.nftTable) {
            () throws(NetfilterError) in
            try postrouting(first)
        }
        switch chosen {
        case .iptables:
            for family in families {
                let m = IPTablesMasquerade(family: family, network: network, containerID: containerID)
                try executor.transact(
                    first: family == first ? firstListing : nil,
                    list: { () throws(NetfilterError) in try postrouting(family) },
                    render: { .iptables(family, m.setupScript(addresses: addresses, postrouting: $0)) })
            }
        case .nftables:
            // One listing for the handles of the attachment's old rules, one transaction. A handle
            // that vanished between the two (someone flushed the table) fails the whole
            // transaction, so nothing was changed: list again, once.
            let m = NFTMasquerade(network: network, ifname: ifname, containerID: containerID)
            // Over netlink the listing is of the whole table, so that a postrouting chain that is
            // already right is left alone (see `setupBatch`).
            let done = try executor.viaNetlink { (kernel) throws(NetfilterError) in
                try executor.transactNetlink(
                    list: { () throws(NetfilterError) in
                        try kernel.rules(.inet, table: MasqueradeNames.nftTable, chain: nil)
                    },
                    render: { rules in
                        let stale = rules.filter {
                            $0.chain == MasqueradeNames.nftChain && ($0.comment?.hasPrefix(m.instanceHash) ?? false)
                        }
                        return m.setupBatch(
                            addresses: addresses, stale: stale.map(\.handle),
                            keepPostrouting: NFTMasquerade.postroutingIsCurrent(rules))
                    })
            }
            if done { return }
            try executor.transact(attempts: 2, list: masqChecks) { listing in
                let stale = listing.rules(in: MasqueradeNames.nftChain, commentPrefix: m.instanceHash)
                return .nft(m.setupScript(addresses: addresses, stale: stale.map(\.handle)), retryable: !stale.isEmpty)
            }
        }
    }

    /// Removes every rule of the attachment from both layouts, without needing its addresses.
    /// Idempotent; errors are reported only for a backend that is usable on this host.
    /// `families`, when the caller knows which address families the attachment had (from the
    /// interface or prevResult), limits the iptables side to them; nil tries both.
    public func teardown(
        network: String, containerID: String, ifname: String,
        families: Set<IPFamily>? = nil
    ) throws(NetfilterError) {
        var errors: [NetfilterError] = []
        for family in [IPFamily.v4, .v6] where families?.contains(family) ?? true {
            let m = IPTablesMasquerade(family: family, network: network, containerID: containerID)
            // Known in-process to hold nothing of this attachment: no iptables process to start.
            if executor.iptablesHoldsNothing(family, chain: m.chain, from: "POSTROUTING") { continue }
            do throws(NetfilterError) {
                try executor.transact(
                    list: { () throws(NetfilterError) in try nat(family) },
                    render: { table in
                        m.isPresent(in: table) ? .iptables(family, m.teardownScript(postrouting: table)) : nil
                    })
            } catch {
                if executor.iptablesUsable(family) { errors.append(error) }
            }
        }
        do throws(NetfilterError) {
            let prefix = MasqueradeNames.nftInstanceHash(network: network, ifname: ifname, containerID: containerID)
            if try !deleteNetlink({ $0.comment?.hasPrefix(prefix) ?? false }) {
                try executor.transact(list: masqChecks) {
                    Self.deleteNFT($0.rules(in: MasqueradeNames.nftChain, commentPrefix: prefix))
                }
            }
        } catch {
            if executor.nftablesUsable(Self.nftTable.family, Self.nftTable.name) { errors.append(error) }
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
                try executor.transact(
                    list: { () throws(NetfilterError) in try nat(family) },
                    render: { table in
                        IPTablesMasquerade.gcScript(network: network, validContainerIDs: ids, table: table).map {
                            .iptables(family, $0)
                        }
                    })
            } catch {
                if executor.iptablesUsable(family) { errors.append(error) }
            }
        }
        do throws(NetfilterError) {
            let keep = Set(
                valid.map {
                    MasqueradeNames.nftInstanceHash(network: network, ifname: $0.ifname, containerID: $0.containerID)
                })
            let prefix = MasqueradeNames.nftNetworkHash(network) + "-"
            let stale = { (comment: String?) -> Bool in
                guard let c = comment, c.hasPrefix(prefix) else { return false }
                return !keep.contains { c.hasPrefix($0) }
            }
            if try !deleteNetlink({ stale($0.comment) }) {
                try executor.transact(list: masqChecks) { listing in
                    let rules = listing.rules(in: MasqueradeNames.nftChain, commentPrefix: prefix)
                    return Self.deleteNFT(
                        rules.filter { rule in !keep.contains { rule.comment?.hasPrefix($0) ?? false } })
                }
            }
        } catch {
            if executor.nftablesUsable(Self.nftTable.family, Self.nftTable.name) { errors.append(error) }
        }
        if let error = NetfilterError.joined(errors) { throw error }
    }

    /// Whether the attachment's rules for `addresses` are all in place (for CHECK), in the
    /// backend that setup would use.
    public func check(
        backend: Backend?, network: String, containerID: String, ifname: String,
        addresses: [IPNetwork]
    ) throws(NetfilterError) -> Bool {
        switch backend ?? executor.probedBackend(nftTable: Self.nftTable) {
        case .iptables:
            for family in [IPFamily.v4, .v6] where addresses.contains(where: { $0.family == family }) {
                let m = IPTablesMasquerade(family: family, network: network, containerID: containerID)
                guard m.isInstalled(addresses: addresses, in: try nat(family)) else { return false }
            }
            return true
        case .nftables:
            let m = NFTMasquerade(network: network, ifname: ifname, containerID: containerID)
            return m.isInstalled(
                addresses: addresses, in: try executor.listNFT(Self.nftTable.family, Self.nftTable.name))
        }
    }

    // MARK: - Listings

    /// The whole nat table of `family`.
    private func nat(_ family: IPFamily) throws(NetfilterError) -> IPTablesListing {
        try executor.listIPTables(family)
    }

    /// The POSTROUTING chain of the nat table of `family`: all that setup needs.
    private func postrouting(_ family: IPFamily) throws(NetfilterError) -> IPTablesListing {
        try executor.listIPTables(family, chain: "POSTROUTING")
    }

    /// The `masq_checks` chain, with handles; empty when it does not exist yet.
    private func masqChecks() throws(NetfilterError) -> NFTListing {
        try executor.listNFT(Self.nftTable.family, Self.nftTable.name, chain: MasqueradeNames.nftChain)
    }

    /// The rules of `masq_checks` over netlink; empty when the table or chain does not exist yet.
    private static func masqChecks(_ kernel: any NFTablesKernel) throws(NetfilterError) -> [NFTListedRule] {
        try kernel.rules(.inet, table: MasqueradeNames.nftTable, chain: MasqueradeNames.nftChain)
    }

    /// Deletes the rules of `masq_checks` that `select` picks, over netlink: one dump, and one
    /// batch when there is something to delete. False when the caller must do it with `nft`.
    private func deleteNetlink(_ select: @escaping (NFTListedRule) -> Bool) throws(NetfilterError) -> Bool {
        try executor.viaNetlink { (kernel) throws(NetfilterError) in
            try executor.transactNetlink(
                list: { () throws(NetfilterError) in try Self.masqChecks(kernel) },
                render: { NFTMasquerade.deleteBatch(handles: $0.filter(select).map(\.handle)) })
        }
    }

    /// The transaction deleting `rules` from `masq_checks`; nil when there are none.
    private static func deleteNFT(_ rules: [NFTRule]) -> Transaction? {
        rules.isEmpty ? nil : .nft(NFTMasquerade.deleteScript(handles: rules.map(\.handle)))
    }
}
