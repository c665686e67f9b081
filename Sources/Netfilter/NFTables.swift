// nftables text in and out: parsing `nft -a list` output and rendering `nft -f -` scripts.
// Pure functions over strings; `Masquerade` runs them.
//
// The reference layout (plugins v1.6+), shared by every network on the host:
//   table inet cni_plugins_masquerade {
//     chain masq_checks {
//       ip saddr 10.88.0.5 ip daddr != 10.88.0.0/16 masquerade comment "<h16(net)>-<h16(if:cid)>, net: ..."
//     }
//     chain postrouting {
//       type nat hook postrouting priority srcnat; policy accept;
//       ip daddr 224.0.0.0/4 return
//       ip6 daddr ff00::/8 return
//       goto masq_checks
//     }
//   }
// One rule per address; the comment's hash prefix is the only key, so deleting needs the rule
// handles, which only a listing gives. Setup is therefore one read and one `nft -f -` script,
// which nft applies as one transaction: the table and chains are added if missing, postrouting is
// rebuilt, the attachment's old rules are deleted and its new ones added, all or nothing.

import Addressing
import Netlink

/// One rule line of `nft -a list ...`: its chain, text (without `# handle N`) and handle.
public struct NFTRule: Hashable, Sendable {
    public var chain: String
    public var body: String
    public var handle: UInt64

    public init(chain: String, body: String, handle: UInt64) {
        self.chain = chain
        self.body = body
        self.handle = handle
    }

    /// The text of the trailing `comment "..."`, if any. nft comments cannot contain `"`.
    public var comment: String? {
        guard body.hasSuffix("\"") else { return nil }
        let inner = body.dropLast()
        guard let open = inner.lastIndex(of: "\""), inner[..<open].hasSuffix("comment ") else { return nil }
        return String(inner[inner.index(after: open)...])
    }
}

/// The rules of `nft -a list table|chain ...` output.
public struct NFTListing: Hashable, Sendable {
    public var chains: Set<String>
    public var rules: [NFTRule]

    public init(chains: Set<String> = [], rules: [NFTRule] = []) {
        self.chains = chains
        self.rules = rules
    }

    public init(parsing text: some StringProtocol) {
        self.init()
        var chain: String?
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingBlanks
            if line.hasPrefix("chain ") {
                let name = String(line.dropFirst(6).prefix { $0 != " " && $0 != "{" })
                chains.insert(name)
                chain = name
            } else if line == "}" {
                chain = nil
            } else if let chain, let mark = line.firstRange(of: " # handle "),
                let handle = UInt64(line[mark.upperBound...])
            {
                rules.append(NFTRule(chain: chain, body: String(line[..<mark.lowerBound]), handle: handle))
            }
        }
    }

    /// Rules of `chain` whose comment starts with `prefix`.
    public func rules(in chain: String, commentPrefix prefix: String) -> [NFTRule] {
        rules.filter { $0.chain == chain && ($0.comment?.hasPrefix(prefix) ?? false) }
    }
}

/// The nftables rules of one attachment and the scripts that install and remove them.
public struct NFTMasquerade: Hashable, Sendable {
    public var instanceHash: String
    public var comment: String

    public init(network: String, ifname: String, containerID: String) {
        instanceHash = MasqueradeNames.nftInstanceHash(network: network, ifname: ifname, containerID: containerID)
        comment = MasqueradeNames.nftComment(network: network, ifname: ifname, containerID: containerID)
    }

    static let table = "inet " + MasqueradeNames.nftTable
    static let chain = MasqueradeNames.nftChain
    static let base = MasqueradeNames.nftBaseChain

    /// The rule for one address, as `nft list` prints it (so it also serves to check).
    public func rule(_ address: IPNetwork) -> String {
        let ip = address.family == .v4 ? "ip" : "ip6"
        return "\(ip) saddr \(address.address) \(ip) daddr != \(address.network) masquerade comment \"\(comment)\""
    }

    /// The setup transaction: ensure table and chains, rebuild postrouting, delete the rules with
    /// handles `stale`, add a rule per address.
    public func setupScript(addresses: [IPNetwork], stale: [UInt64]) -> String {
        let t = Self.table
        var lines = [
            "add table \(t) { comment \"\(MasqueradeNames.nftTableComment)\" ; }",
            "add chain \(t) \(Self.chain) { comment \"\(MasqueradeNames.nftChainComment)\" ; }",
            "add chain \(t) \(Self.base) { type nat hook postrouting priority srcnat ; }",
            "flush chain \(t) \(Self.base)",
            "add rule \(t) \(Self.base) ip daddr 224.0.0.0/4 return",
            "add rule \(t) \(Self.base) ip6 daddr ff00::/8 return",
            "add rule \(t) \(Self.base) goto \(Self.chain)",
        ]
        lines += stale.map { "delete rule \(t) \(Self.chain) handle \($0)" }
        var seen: Set<IPAddress> = []
        for a in addresses where seen.insert(a.address).inserted {
            lines.append("add rule \(t) \(Self.chain) \(rule(a))")
        }
        return (lines + [""]).joined(separator: "\n")
    }

    /// `setupScript` as one netlink batch: the same objects, rules and comments, in the same order.
    /// With `keepPostrouting` (the chain already holds exactly `postroutingRules`, see
    /// `postroutingIsCurrent`), the flush and re-add of postrouting are left out: `nft list
    /// ruleset` prints the same afterwards, and a batch that deletes no rule spares the caller the
    /// RCU grace period that nf_tables waits for when the socket of a deleting batch is closed.
    public func setupBatch(addresses: [IPNetwork], stale: [UInt64], keepPostrouting: Bool = false) -> NFTBatch {
        let t = MasqueradeNames.nftTable
        var batch = NFTBatch([
            .addTable(.inet, t, comment: MasqueradeNames.nftTableComment),
            .addChain(.inet, table: t, chain: Self.chain, base: nil, comment: MasqueradeNames.nftChainComment),
            .addChain(
                .inet, table: t, chain: Self.base,
                base: NFTBaseChain(type: "nat", hook: .postrouting, priority: NFTBaseChain.srcnat), comment: nil),
        ])
        if !keepPostrouting {
            batch.append(.flushChain(.inet, table: t, chain: Self.base))
            for e in Self.postroutingRules {
                batch.append(.addRule(.inet, table: t, chain: Self.base, expressions: e, comment: nil))
            }
        }
        for handle in stale { batch.append(.deleteRule(.inet, table: t, chain: Self.chain, handle: handle)) }
        var seen: Set<IPAddress> = []
        for a in addresses where seen.insert(a.address).inserted {
            batch.append(
                .addRule(.inet, table: t, chain: Self.chain, expressions: ruleExpressions(a), comment: comment))
        }
        return batch
    }

    /// The rules of postrouting, as expressions: `ip daddr 224.0.0.0/4 return`,
    /// `ip6 daddr ff00::/8 return`, `goto masq_checks`.
    static let postroutingRules: [[NFTExpression]] = [
        NFTMatch.nfproto(.v4) + NFTMatch.address(source: false, .eq, IPNetwork("224.0.0.0/4")!) + [.verdict(.return)],
        NFTMatch.nfproto(.v6) + NFTMatch.address(source: false, .eq, IPNetwork("ff00::/8")!) + [.verdict(.return)],
        [.verdict(.goto(chain))],
    ]

    /// Whether postrouting in `rules` (a dump of the table) is exactly what setup would rebuild.
    public static func postroutingIsCurrent(_ rules: [NFTListedRule]) -> Bool {
        let base = rules.filter { $0.chain == Self.base }
        return base.allSatisfy { $0.comment == nil } && base.map(\.expressions) == postroutingRules
    }

    /// `rule(address)` as expressions: `ip saddr <a> ip daddr != <net> masquerade`.
    func ruleExpressions(_ address: IPNetwork) -> [NFTExpression] {
        let whole = IPNetwork(address: address.address, prefixLength: address.family.bitWidth)!
        return NFTMatch.nfproto(address.family) + NFTMatch.address(source: true, .eq, whole)
            + NFTMatch.address(source: false, .neq, address.network) + [.masquerade]
    }

    /// `deleteScript` as one netlink batch.
    public static func deleteBatch(handles: [UInt64]) -> NFTBatch {
        NFTBatch(handles.map { .deleteRule(.inet, table: MasqueradeNames.nftTable, chain: chain, handle: $0) })
    }

    /// A transaction deleting the rules with these handles from `masq_checks`.
    public static func deleteScript(handles: [UInt64]) -> String {
        (handles.map { "delete rule \(table) \(chain) handle \($0)" } + [""]).joined(separator: "\n")
    }

    /// Whether `listing` (of the whole table) jumps from postrouting to masq_checks and has the
    /// rule for every address.
    public func isInstalled(addresses: [IPNetwork], in listing: NFTListing) -> Bool {
        let bodies = Set(listing.rules.filter { $0.chain == Self.chain }.map(\.body))
        return listing.rules.contains { $0.chain == Self.base && $0.body == "goto \(Self.chain)" }
            && addresses.allSatisfy { bodies.contains(rule($0)) }
    }
}
