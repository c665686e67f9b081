// The portmap plugin's nftables layout, rendered as `nft -f -` lines. Pure functions over
// strings and listings; `HostPorts` runs them.
//
// One table per family, `ip cni_hostport` and `ip6 cni_hostport` (the reference's layout, §4.4):
//   table ip cni_hostport {
//     comment "CNI portmap plugin"
//     chain hostports { tcp dport 8080 dnat to 10.88.0.5:80 comment "<cid>" ... }
//     chain hostip_hostports { }                          (legacy, still searched on teardown)
//     chain hostports_all { jump hostip_hostports; jump hostports }
//     chain prerouting { type nat hook prerouting priority dstnat; [conditions] fib daddr type local jump hostports_all }
//     chain output { type nat hook output priority -100; [conditions] fib daddr type local jump hostports_all }
//     chain masquerading { type nat hook postrouting priority srcnat;
//       ip saddr 10.88.0.5 ip daddr 10.88.0.5 masquerade comment "<cid>"     (hairpin)
//       ip saddr 127.0.0.1 ip daddr 10.88.0.5 masquerade comment "<cid>" }   (localhost, v4)
//   }
// The rules of a container carry its ID as their comment and nothing else identifies them, so
// removing them takes the handles from a listing. Setup needs no listing: every family's lines
// go into one `nft -f -` transaction (all or nothing) that adds the tables and chains if
// missing, rebuilds the three jump chains, and adds the container's rules. (A repeated ADD of
// one container, which the spec rules out, would add its rules twice; DEL removes all copies.)
//
// Over netlink the same lines are `setupOperations`, one batch for every family, after one dump
// per family that lets jump chains that are already right stay as they are. The
// `conditionsV4`/`conditionsV6` tokens are nft syntax, which only nft parses in full: the
// operations understand address matches (`ip daddr [!=] 192.0.2.0/24`) and leave any other
// condition to the `nft -f -` script.

import Addressing
import Netlink

/// The nftables rules of one container in one family.
public struct NFTPortmap: Hashable, Sendable {
    public var family: IPFamily
    public var forwarding: PortForwarding

    public init(family: IPFamily, forwarding: PortForwarding) {
        self.family = family
        self.forwarding = forwarding
    }

    /// "ip cni_hostport" or "ip6 cni_hostport".
    public static func table(_ family: IPFamily) -> String {
        (family == .v4 ? "ip " : "ip6 ") + PortmapNames.nftTable
    }

    var ipx: String { family == .v4 ? "ip" : "ip6" }
    var comment: String { "comment \"\(forwarding.containerID)\"" }

    /// The DNAT rule of a mapping, as `nft list` prints it (without the comment).
    public func dnatRule(_ m: PortMapping, container: IPAddress) -> String {
        (m.destination.map { "\(ipx) daddr \($0) " } ?? "") + "\(m.proto) dport \(m.hostPort) dnat to "
            + (family == .v4 ? "\(container):\(m.containerPort)" : "[\(container)]:\(m.containerPort)")
    }

    /// The hairpin rule (the container's own address, or every source with masqAll) and, for v4
    /// without masqAll, the localhost rule; none without snat.
    public func masqueradeRules(container: IPAddress) -> [String] {
        guard forwarding.snat else { return [] }
        let source = forwarding.masqAll ? (family == .v4 ? "0.0.0.0/0" : "::/0") : container.description
        var out = ["\(ipx) saddr \(source) \(ipx) daddr \(container) masquerade"]
        if family == .v4 && !forwarding.masqAll { out.append("ip saddr 127.0.0.1 ip daddr \(container) masquerade") }
        return out
    }

    /// This family's part of the setup transaction.
    public func setupLines(container: IPAddress) -> [String] {
        let t = Self.table(family)
        let cond = forwarding.conditions(family).map { $0 + " " }.joined()
        var lines = [
            "add table \(t) { comment \"\(PortmapNames.nftTableComment)\" ; }",
            "add chain \(t) \(PortmapNames.nftHostPorts)",
            "add chain \(t) \(PortmapNames.nftHostIPHostPorts)",
            "add chain \(t) \(PortmapNames.nftHostPortsAll)",
            "flush chain \(t) \(PortmapNames.nftHostPortsAll)",
            "add rule \(t) \(PortmapNames.nftHostPortsAll) jump \(PortmapNames.nftHostIPHostPorts)",
            "add rule \(t) \(PortmapNames.nftHostPortsAll) jump \(PortmapNames.nftHostPorts)",
            "add chain \(t) \(PortmapNames.nftPrerouting) { type nat hook prerouting priority dstnat ; }",
            "flush chain \(t) \(PortmapNames.nftPrerouting)",
            "add rule \(t) \(PortmapNames.nftPrerouting) \(cond)fib daddr type local jump \(PortmapNames.nftHostPortsAll)",
            // dstnat is not accepted on the output hook; -100 is its value.
            "add chain \(t) \(PortmapNames.nftOutput) { type nat hook output priority -100 ; }",
            "flush chain \(t) \(PortmapNames.nftOutput)",
            "add rule \(t) \(PortmapNames.nftOutput) \(cond)fib daddr type local jump \(PortmapNames.nftHostPortsAll)",
        ]
        if forwarding.snat {
            lines.append(
                "add chain \(t) \(PortmapNames.nftMasquerading) { type nat hook postrouting priority srcnat ; }")
        }
        for m in forwarding.mappings where m.applies(to: family) {
            lines.append("add rule \(t) \(PortmapNames.nftHostPorts) \(dnatRule(m, container: container)) \(comment)")
        }
        for r in masqueradeRules(container: container) {
            lines.append("add rule \(t) \(PortmapNames.nftMasquerading) \(r) \(comment)")
        }
        return lines
    }

    /// `setupLines` as netlink operations: the same objects and rules in the same order; nil
    /// when a condition is not one `NFTPortmap.conditionExpressions` understands. `listed`, a dump
    /// of this family's table, lets a jump chain that already holds exactly its rules be left
    /// alone instead of flushed and rebuilt (`nft list ruleset` prints the same; a batch that
    /// deletes no rule spares the RCU grace period nf_tables waits for when its socket closes).
    public func setupOperations(container: IPAddress, listed: [NFTListedRule] = []) -> [NFTOperation]? {
        guard let cond = Self.conditionExpressions(forwarding.conditions(family), family: family) else { return nil }
        let f = NFTFamily(family), t = PortmapNames.nftTable
        func rule(_ chain: String, _ e: [NFTExpression], _ comment: String? = nil) -> NFTOperation {
            .addRule(f, table: t, chain: chain, expressions: e, comment: comment)
        }
        func chain(_ name: String, _ base: NFTBaseChain? = nil) -> NFTOperation {
            .addChain(f, table: t, chain: name, base: base, comment: nil)
        }
        /// Flushes `name` and adds `rules`, unless it holds exactly these rules already.
        func rebuild(_ name: String, _ rules: [[NFTExpression]]) -> [NFTOperation] {
            let now = listed.filter { $0.chain == name }
            if now.allSatisfy({ $0.comment == nil }) && now.map(\.expressions) == rules { return [] }
            return [.flushChain(f, table: t, chain: name)] + rules.map { rule(name, $0) }
        }
        let all = PortmapNames.nftHostPortsAll
        var ops: [NFTOperation] = [
            .addTable(f, t, comment: PortmapNames.nftTableComment),
            chain(PortmapNames.nftHostPorts), chain(PortmapNames.nftHostIPHostPorts), chain(all),
        ]
        ops += rebuild(
            all, [[.verdict(.jump(PortmapNames.nftHostIPHostPorts))], [.verdict(.jump(PortmapNames.nftHostPorts))]])
        for (name, hook) in [(PortmapNames.nftPrerouting, NFTHook.prerouting), (PortmapNames.nftOutput, .output)] {
            ops.append(chain(name, NFTBaseChain(type: "nat", hook: hook, priority: NFTBaseChain.dstnat)))
            ops += rebuild(name, [cond + NFTMatch.fibDaddrLocal + [.verdict(.jump(all))]])
        }
        if forwarding.snat {
            ops.append(
                chain(
                    PortmapNames.nftMasquerading,
                    NFTBaseChain(type: "nat", hook: .postrouting, priority: NFTBaseChain.srcnat)))
        }
        for m in forwarding.mappings where m.applies(to: family) {
            guard let dport = NFTMatch.dport(m.proto, m.hostPort),
                let dnat = NFTMatch.dnat(container, port: m.containerPort)
            else { return nil }
            let daddr = m.destination.map { NFTMatch.address(source: false, $0) } ?? []
            ops.append(rule(PortmapNames.nftHostPorts, daddr + dport + dnat, forwarding.containerID))
        }
        if forwarding.snat {
            let source =
                forwarding.masqAll
                ? IPNetwork(address: family == .v4 ? IPAddress("0.0.0.0")! : IPAddress("::")!, prefixLength: 0)!
                : IPNetwork(address: container, prefixLength: family.bitWidth)!
            var sources = [source]
            if family == .v4 && !forwarding.masqAll {
                sources.append(IPNetwork(address: IPAddress("127.0.0.1")!, prefixLength: 32)!)
            }
            for s in sources {
                let e =
                    NFTMatch.address(source: true, .eq, s) + NFTMatch.address(source: false, container)
                    + [.masquerade]
                ops.append(rule(PortmapNames.nftMasquerading, e, forwarding.containerID))
            }
        }
        return ops
    }

    /// The expressions of condition tokens that are address matches of `family`
    /// (`ip|ip6 saddr|daddr [==|!=] <address>[/<prefix>]`, repeated); nil for anything else.
    public static func conditionExpressions(_ tokens: [String], family: IPFamily) -> [NFTExpression]? {
        var out: [NFTExpression] = []
        var rest = tokens[...]
        while let ipx = rest.popFirst() {
            guard ipx == (family == .v4 ? "ip" : "ip6"), let field = rest.popFirst(),
                field == "saddr" || field == "daddr"
            else { return nil }
            var op = NFTCmpOp.eq
            if rest.first == "!=" || rest.first == "==" {
                op = rest.popFirst() == "!=" ? .neq : .eq
            }
            guard let text = rest.popFirst() else { return nil }
            let net: IPNetwork?
            if text.contains("/") {
                net = IPNetwork(text).flatMap { $0.hasHostBits ? nil : $0 }
            } else {
                net = IPAddress(text).flatMap { IPNetwork(address: $0, prefixLength: $0.family.bitWidth) }
            }
            guard let net, net.family == family else { return nil }
            out += NFTMatch.address(source: field == "saddr", op, net)
        }
        return out
    }

    /// The UDP host ports that DNAT rules among `rules` (from a netlink listing) forward: a
    /// rule whose layer 4 protocol is UDP (`meta l4proto`, or `ip protocol`/`ip6 nexthdr` as
    /// reference v1.6 wrote it) and whose transport destination port is compared.
    public static func udpPorts(_ rules: [NFTListedRule]) -> [Int] {
        var out: [Int] = []
        for r in rules where r.chain != PortmapNames.nftMasquerading {
            var loaded: NFTExpression?
            var udp = false
            var port: Int?
            for e in r.expressions {
                switch e {
                case .meta, .payload: loaded = e
                case .cmp(.eq, _, let data):
                    switch loaded {
                    case .meta(.l4proto, _)?, .payload(.network, offset: 9, length: 1, _)?,
                        .payload(.network, offset: 6, length: 1, _)?:
                        if data == [17] { udp = true }
                    case .payload(.transport, offset: 2, length: 2, _)? where data.count == 2:
                        port = Int(data[0]) << 8 | Int(data[1])
                    default: break
                    }
                    loaded = nil
                default: loaded = nil
                }
            }
            if udp, let port, !out.contains(port) { out.append(port) }
        }
        return out
    }

    /// The rules of a netlink listing whose comment is exactly the container ID, in the chains
    /// that hold such rules (`containerRules` for listings).
    public static func containerRules(containerID: String, in rules: [NFTListedRule]) -> [NFTListedRule] {
        rules.filter { PortmapNames.nftContainerChains.contains($0.chain) && $0.comment == containerID }
    }

    /// `staleRules` for a netlink listing.
    public static func staleRules(validContainerIDs: Set<String>, in rules: [NFTListedRule]) -> [NFTListedRule] {
        rules.filter { r in
            guard PortmapNames.nftContainerChains.contains(r.chain), let c = r.comment else { return false }
            return !validContainerIDs.contains(c)
        }
    }

    /// Operations deleting `rules` (by handle) from this family's table.
    public static func deleteOperations(_ family: IPFamily, _ rules: [NFTListedRule]) -> [NFTOperation] {
        rules.map { .deleteRule(NFTFamily(family), table: PortmapNames.nftTable, chain: $0.chain, handle: $0.handle) }
    }

    /// What is missing for this container in `listing` (of this family's table), or nil: a DNAT
    /// rule per mapping of this family, the masquerade rules, and the jumps that lead to them.
    /// Rules are recognised by their comment and key fields, not by their exact text, which nft
    /// versions print differently.
    public func missingRule(container: IPAddress, in listing: NFTListing) -> String? {
        let t = Self.table(family)
        let jumps: [(String, String)] = [
            (PortmapNames.nftPrerouting, "jump \(PortmapNames.nftHostPortsAll)"),
            (PortmapNames.nftOutput, "jump \(PortmapNames.nftHostPortsAll)"),
            (PortmapNames.nftHostPortsAll, "jump \(PortmapNames.nftHostPorts)"),
        ]
        for (chain, jump) in jumps
        where !listing.rules.contains(where: { $0.chain == chain && $0.body.hasSuffix(jump) }) {
            return "\"\(jump)\" missing in chain \(chain) of table \(t)"
        }
        let own = Self.containerRules(containerID: forwarding.containerID, in: listing)
        for m in forwarding.mappings where m.applies(to: family) {
            let want = dnatRule(m, container: container)
            let target = String(want[want.firstRange(of: "dnat to ")!.upperBound...])
            let found = own.contains { r in
                r.chain != PortmapNames.nftMasquerading && r.body.contains("\(m.proto) dport \(m.hostPort) ")
                    && r.body.contains("dnat to \(target) ")
                    && (m.destination.map { r.body.contains("\(ipx) daddr \($0) ") } ?? true)
            }
            if !found { return "missing hostport rule \"\(want)\" in table \(t)" }
        }
        let masq = own.filter { $0.chain == PortmapNames.nftMasquerading }.count
        let wanted = masqueradeRules(container: container).count
        if masq < wanted { return "missing masquerade rules in chain \(PortmapNames.nftMasquerading) of table \(t)" }
        return nil
    }

    /// The rules whose comment is exactly the container ID, in the chains that hold such rules.
    public static func containerRules(containerID: String, in listing: NFTListing) -> [NFTRule] {
        listing.rules.filter { PortmapNames.nftContainerChains.contains($0.chain) && $0.comment == containerID }
    }

    /// The rules of containers not in `validContainerIDs`. nft rules carry only the container ID,
    /// not the network, so this sees every network's containers (see `HostPorts.gc`).
    public static func staleRules(validContainerIDs: Set<String>, in listing: NFTListing) -> [NFTRule] {
        listing.rules.filter { r in
            guard PortmapNames.nftContainerChains.contains(r.chain), let c = r.comment else { return false }
            return !validContainerIDs.contains(c)
        }
    }

    /// Lines deleting `rules` (by handle) from this family's table.
    public static func deleteLines(_ family: IPFamily, _ rules: [NFTRule]) -> [String] {
        rules.map { "delete rule \(table(family)) \($0.chain) handle \($0.handle)" }
    }

    /// The UDP host ports that DNAT rules among `rules` forward, for the conntrack clean-up.
    public static func udpPorts(_ rules: [NFTRule]) -> [Int] {
        var out: [Int] = []
        // "udp dport N", or "ip protocol udp th dport N" as reference v1.6 wrote it.
        for r in rules where r.chain != PortmapNames.nftMasquerading && r.body.contains("udp ") {
            guard let range = r.body.firstRange(of: "dport ") else { continue }
            if let p = Int(r.body[range.upperBound...].prefix { $0.isNumber }), !out.contains(p) { out.append(p) }
        }
        return out
    }
}
