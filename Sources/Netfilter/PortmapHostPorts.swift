// Port forwarding for the portmap plugin in the reference's iptables or nftables layout
// (PortmapIPTables.swift, PortmapNFTables.swift), and the conntrack clean-up for UDP host ports.
//
// Processes per call, for a container with one address family (a second family doubles the
// iptables numbers):
//   setup     iptables: 2 (read the nat table, one restore); nftables: none, one GETRULE dump
//             per family and one netlink batch for every family (1 `nft -f` without netlink)
//   teardown  iptables: 1 read per family asked for + 1 restore where the container has rules;
//             nftables: none, one GETRULE dump per family + 1 batch if the container has rules
//             (the same count of `nft` processes without netlink)
//   check     1 read or listing per family (nftables: `nft -a list table` text)
//   gc        iptables: 2 reads + 1 restore per family with stale rules; nftables: 2 dumps + 1
//   conntrack 1 (`conntrack -R -`, every UDP port and family in one batch), only for UDP ports
// nftables goes over netlink (NFTNetlink.swift) when `nftables` is given, and falls back to the
// same change as an `nft -f -` script when the kernel refuses the batch, or when a condition is
// nft syntax that the netlink encoder does not understand.
// With the backend left to the reference's automatic choice, the first iptables read doubles as
// the usability probe; nftables is probed only when it fails. Every process but conntrack goes
// through `NetfilterExecutor`.
//
// What differs from the reference, on purpose:
// - Teardown needs no port list: the container's chain (iptables) and comment (nftables) are
//   derived from network and container ID, so a DEL without portMappings removes everything.
// - GC removes the rules of containers that are not valid attachments (the reference's is a no-op).

import Addressing
import Netlink

public struct HostPorts: Sendable {
    /// The `backend` config value; the same two as the bridge's `ipMasqBackend`.
    public typealias Backend = NetfilterBackend

    static func nftTable(_ family: IPFamily) -> (family: String, name: String) {
        (family == .v4 ? "ip" : "ip6", PortmapNames.nftTable)
    }

    public let runner: any CommandRunner
    let executor: NetfilterExecutor

    /// `nftables` nil makes every nftables change an `nft` process through `runner`
    /// (`NetlinkNFTables()` is what the plugin passes).
    public init(runner: any CommandRunner = SystemCommandRunner(), nftables: (any NFTablesKernel)? = nil) {
        self.runner = runner
        executor = NetfilterExecutor(runner: runner, nftables: nftables)
    }

    /// Installs the forwarding to the first address of each family in `addresses`. `backend`
    /// nil means the reference's default: iptables, unless iptables is unusable and nftables is
    /// usable. Returns the backend used. A failure leaves no rule of this call behind.
    @discardableResult
    public func setup(
        backend: Backend?, _ forwarding: PortForwarding,
        addresses: [IPNetwork]
    ) throws(NetfilterError) -> Backend {
        let containers = Self.firstPerFamily(addresses)
        guard let first = containers.first else { return backend ?? .iptables }
        let (chosen, firstTable) = try resolve(backend, probing: first.family)
        switch chosen {
        case .iptables:
            var done: [IPFamily] = []
            for c in containers {
                let p = IPTablesPortmap(family: c.family, forwarding: forwarding)
                do throws(NetfilterError) {
                    try applyIPTables(c.family, first: c.family == first.family ? firstTable : nil) { table in
                        p.setupScript(container: c, table: table)
                    }
                    done.append(c.family)
                } catch {
                    for family in done {
                        _ = try? applyIPTables(family) { IPTablesPortmap.teardownScript(chains: [p.chain], table: $0) }
                    }
                    throw error
                }
            }
        case .nftables:
            var encodable = true
            let done = try executor.viaNetlink { (kernel) throws(NetfilterError) in
                var batch = NFTBatch()
                for c in containers {
                    let listed = try kernel.rules(NFTFamily(c.family), table: PortmapNames.nftTable, chain: nil)
                    guard
                        let ops = NFTPortmap(family: c.family, forwarding: forwarding).setupOperations(
                            container: c.address, listed: listed)
                    else {
                        encodable = false
                        return
                    }
                    batch.operations += ops
                }
                try kernel.apply(batch)
            }
            if done && encodable { return chosen }
            let lines = containers.flatMap {
                NFTPortmap(family: $0.family, forwarding: forwarding).setupLines(container: $0.address)
            }
            try executor.apply(.nft((lines + [""]).joined(separator: "\n")))
        }
        return chosen
    }

    /// Removes every rule of the container (network + container ID) in `families`, without
    /// needing its ports or addresses, and returns the UDP host ports whose DNAT rules were
    /// removed. Idempotent. iptables: a family whose iptables is unusable is skipped, as in the
    /// reference, unless no family is usable.
    public func teardown(
        backend: Backend?, network: String, containerID: String,
        families: [IPFamily] = [.v4, .v6]
    ) throws(NetfilterError) -> [UDPPort] {
        if backend == .nftables { return try teardownNFT(containerID: containerID, families: families) }
        let chains = [
            PortmapNames.containerChain(network: network, containerID: containerID),
            PortmapNames.legacyContainerSNATChain(network: network, containerID: containerID),
        ]
        var removed: [UDPPort] = [], errors: [NetfilterError] = [], unusable: [NetfilterError] = []
        for family in families {
            let table: IPTablesListing
            do throws(NetfilterError) { table = try executor.listIPTables(family) } catch {
                unusable.append(error); continue
            }
            do throws(NetfilterError) {
                if let used = try applyIPTables(
                    family, first: table, { IPTablesPortmap.teardownScript(chains: chains, table: $0) })
                {
                    removed += IPTablesPortmap.udpPorts(chain: chains[0], table: used).map {
                        UDPPort(family: family, port: $0)
                    }
                }
            } catch { errors.append(error) }
        }
        if unusable.count == families.count && !families.isEmpty {
            if backend == nil && nftablesUsable() {
                return try teardownNFT(containerID: containerID, families: families)
            }
            throw NetfilterError.joined(unusable)!
        }
        if let error = NetfilterError.joined(errors) { throw error }
        return removed
    }

    private func teardownNFT(containerID: String, families: [IPFamily]) throws(NetfilterError) -> [UDPPort] {
        var removed: [UDPPort] = []
        let done = try executor.viaNetlink { (kernel) throws(NetfilterError) in
            let used = try deleteNetlink(kernel, families) {
                NFTPortmap.containerRules(containerID: containerID, in: $1)
            }
            removed = (used ?? []).flatMap { family, rules in
                NFTPortmap.udpPorts(NFTPortmap.containerRules(containerID: containerID, in: rules)).map {
                    UDPPort(family: family, port: $0)
                }
            }
        }
        if done { return removed }
        let select = { (_: IPFamily, listing: NFTListing) in
            NFTPortmap.containerRules(containerID: containerID, in: listing)
        }
        guard let listings = try deleteNFT(families, select) else { return [] }
        return listings.flatMap { family, listing in
            NFTPortmap.udpPorts(select(family, listing)).map { UDPPort(family: family, port: $0) }
        }
    }

    /// What is missing of the container's forwarding, or nil when every rule is in place.
    public func check(
        backend: Backend?, _ forwarding: PortForwarding,
        addresses: [IPNetwork]
    ) throws(NetfilterError) -> String? {
        let containers = Self.firstPerFamily(addresses)
        guard let first = containers.first else { return nil }
        let (chosen, firstTable) = try resolve(backend, probing: first.family)
        for c in containers {
            let missing: String?
            switch chosen {
            case .iptables:
                let table: IPTablesListing
                if c.family == first.family, let t = firstTable {
                    table = t
                } else {
                    table = try executor.listIPTables(c.family)
                }
                missing = IPTablesPortmap(family: c.family, forwarding: forwarding).missingRule(container: c, in: table)
            case .nftables:
                missing = NFTPortmap(family: c.family, forwarding: forwarding).missingRule(
                    container: c.address, in: try listNFT(c.family))
            }
            if let missing { return missing }
        }
        return nil
    }

    /// Removes the rules of every container not in `validContainerIDs`. iptables: only rules of
    /// `network` (their comments name it). nftables: the reference's rules carry the container ID
    /// alone, so rules of containers attached to another network that also uses portmap's
    /// nftables backend are removed too; run GC with the valid attachments of every such network.
    public func gc(backend: Backend?, network: String, validContainerIDs: Set<String>) throws(NetfilterError) {
        if backend == .nftables { return try gcNFT(validContainerIDs) }
        var errors: [NetfilterError] = [], unusable: [NetfilterError] = []
        for family in [IPFamily.v4, .v6] {
            let table: IPTablesListing
            do throws(NetfilterError) { table = try executor.listIPTables(family) } catch {
                unusable.append(error); continue
            }
            do throws(NetfilterError) {
                try applyIPTables(family, first: table) { t in
                    IPTablesPortmap.teardownScript(
                        chains: IPTablesPortmap.staleChains(
                            network: network, validContainerIDs: validContainerIDs, table: t), table: t)
                }
            } catch { errors.append(error) }
        }
        if unusable.count == 2 {
            if backend == nil && nftablesUsable() { return try gcNFT(validContainerIDs) }
            throw NetfilterError.joined(unusable)!
        }
        if let error = NetfilterError.joined(errors) { throw error }
    }

    private func gcNFT(_ valid: Set<String>) throws(NetfilterError) {
        let done = try executor.viaNetlink { (kernel) throws(NetfilterError) in
            try deleteNetlink(kernel, [.v4, .v6]) { NFTPortmap.staleRules(validContainerIDs: valid, in: $1) }
        }
        if done { return }
        try deleteNFT([.v4, .v6]) { _, listing in NFTPortmap.staleRules(validContainerIDs: valid, in: listing) }
    }

    /// Deletes the conntrack entries whose original destination port is one of these UDP host
    /// ports (the reference's `DeleteConntrackEntriesForDstPort`), so that flows of a container
    /// that is gone stop going to its address. One `conntrack -R -` batch; conntrack before
    /// 1.4.7 has no -R, and then each port is one `conntrack -D`.
    public func deleteConntrack(_ ports: [UDPPort]) throws(NetfilterError) {
        guard !ports.isEmpty else { return }
        let commands = ports.sorted().map {
            ["-D", "-f", $0.family == .v4 ? "ipv4" : "ipv6", "-p", "udp", "--orig-port-dst", String($0.port)]
        }
        let batch = Command(
            "conntrack", ["-R", "-"], stdin: commands.map { $0.joined(separator: " ") + "\n" }.joined())
        if try runner.run(batch).status == 0 { return }
        var errors: [NetfilterError] = []
        for args in commands {
            let command = Command("conntrack", args)
            let out = try runner.run(command)
            // Exit status 1 with "0 flow entries have been deleted" only means nothing matched.
            if out.status != 0 && !out.stderr.contains(" 0 flow entries") {
                errors.append(
                    .commandFailed(command: command.description, status: out.status, stderr: trimmed(out.stderr)))
            }
        }
        if let error = NetfilterError.joined(errors) { throw error }
    }

    /// Whether iptables works here (`NetfilterExecutor.iptablesUsable`).
    public func iptablesUsable(_ family: IPFamily = .v4) -> Bool {
        executor.iptablesUsable(family)
    }

    /// nft accepts a dry-run transaction on the portmap table.
    public func nftablesUsable() -> Bool {
        let table = Self.nftTable(.v4)
        return executor.nftablesUsable(table.family, table.name)
    }

    // MARK: - Helpers

    /// The first address of each family, v4 first (the reference's ContIPv4 / ContIPv6).
    static func firstPerFamily(_ addresses: [IPNetwork]) -> [IPNetwork] {
        [IPFamily.v4, .v6].compactMap { f in addresses.first { $0.family == f } }
    }

    /// The backend to use: `backend`, or for nil iptables, unless reading the nat table of
    /// `family` fails (the read is returned, so it doubles as the probe) and nftables is usable.
    private func resolve(_ backend: Backend?, probing family: IPFamily) throws(NetfilterError) -> (
        Backend, IPTablesListing?
    ) {
        try executor.resolve(backend, nftTable: Self.nftTable(.v4)) { () throws(NetfilterError) in
            try executor.listIPTables(family)
        }
    }

    /// Reads the nat table (unless `first` is given), renders a restore script from it and runs
    /// it; nil from `script` means there is nothing to do. A failed restore is retried twice from
    /// a fresh read, since the usual cause is a concurrent ADD or DEL that changed the shared
    /// chains between our read and our write. Returns the listing the successful script was
    /// made from, nil when there was nothing to do.
    @discardableResult
    private func applyIPTables(
        _ family: IPFamily, first: IPTablesListing? = nil,
        _ script: (IPTablesListing) -> String?
    ) throws(NetfilterError) -> IPTablesListing? {
        try executor.transact(
            attempts: 3, first: first, list: { () throws(NetfilterError) in try executor.listIPTables(family) },
            render: { script($0).map { .iptables(family, $0) } })
    }

    /// Lists the portmap table of each family, picks rules with `select`, and deletes them all
    /// in one transaction, retried once from fresh listings (a handle may have vanished).
    /// Returns the listings the deletion was made from; nil when there was nothing to delete.
    @discardableResult
    private func deleteNFT(
        _ families: [IPFamily],
        _ select: (IPFamily, NFTListing) -> [NFTRule]
    ) throws(NetfilterError) -> [(IPFamily, NFTListing)]? {
        try executor.transact(
            attempts: 2,
            list: { () throws(NetfilterError) in
                var listings: [(IPFamily, NFTListing)] = []
                for family in families { listings.append((family, try listNFT(family))) }
                return listings
            },
            render: { listings in
                let lines = listings.flatMap { family, listing in
                    NFTPortmap.deleteLines(family, select(family, listing))
                }
                return lines.isEmpty ? nil : .nft((lines + [""]).joined(separator: "\n"))
            })
    }

    /// `deleteNFT` over netlink: a dump of each family's table, one batch deleting what
    /// `select` picks. Returns the dumps the batch was made from; nil when nothing was deleted.
    @discardableResult
    private func deleteNetlink(
        _ kernel: any NFTablesKernel, _ families: [IPFamily],
        _ select: @escaping (IPFamily, [NFTListedRule]) -> [NFTListedRule]
    ) throws(NetfilterError) -> [(IPFamily, [NFTListedRule])]? {
        try executor.transactNetlink(
            list: { () throws(NetfilterError) in
                var dumps: [(IPFamily, [NFTListedRule])] = []
                for family in families {
                    dumps.append(
                        (family, try kernel.rules(NFTFamily(family), table: PortmapNames.nftTable, chain: nil)))
                }
                return dumps
            },
            render: { dumps in
                NFTBatch(dumps.flatMap { family, rules in NFTPortmap.deleteOperations(family, select(family, rules)) })
            })
    }

    /// The portmap table of `family`, with handles; empty when it does not exist.
    private func listNFT(_ family: IPFamily) throws(NetfilterError) -> NFTListing {
        let table = Self.nftTable(family)
        return try executor.listNFT(table.family, table.name)
    }
}
