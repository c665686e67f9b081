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

import Addressing

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
