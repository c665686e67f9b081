// flanneld's nftables mode (pkg/trafficmngr/nftables), as `nft list` prints it back (IPv4; an IPv6
// network gets table `ip6 flannel-ipv6`, `ip6 saddr`/`ip6 daddr` and ff00::/8, nothing else differs):
//   table ip flannel-ipv4 {
//     comment "rules for flannel-ipv4"
//     chain postrtg {
//       comment "chain to manage traffic masquerading by flannel"
//       type nat hook postrouting priority srcnat; policy accept;
//       meta mark 0x00004000 return
//       ip saddr <subnet> ip daddr <network> return
//       ip saddr <network> ip daddr <subnet> return
//       ip saddr != <subnet> ip daddr <network> return
//       ip saddr <network> ip daddr != 224.0.0.0/4 masquerade fully-random
//       ip saddr != <network> ip daddr <network> masquerade fully-random
//     }
//     chain forward {
//       comment "chain to accept flannel traffic"
//       type filter hook forward priority filter; policy accept;
//       ip saddr <network> accept
//       ip daddr <network> accept
//     }
//   }
// The rules are flanneld's, kept as they are so that flanneld and podnetd leave the same state,
// including two oddities: the mark match is exact (`meta mark 0x4000`, where iptables matches
// `0x4000/0x4000`), and the fourth rule is not iptables' `! -s <network> -d <subnet>` but
// `saddr != <subnet> daddr <network>`, which returns host-to-overlay traffic before the last rule
// could masquerade it. They are written in the form nft prints (`0x00004000` is how it prints
// flanneld's `0x4000`; same expression), so one text serves to write and to compare.
//
// The forward chain's accepts end this table's chain only: another base chain on the forward hook
// (iptables' FORWARD with policy DROP, as Docker sets it, or any table's drop) still drops, so
// unlike the iptables rules they do not open a closed FORWARD. flanneld's nftables mode has the
// same limit.
//
// Unlike flanneld, which only writes them at start-up, `ensure` compares the listing with these
// rules and rewrites the table's chains in one `nft -f -` transaction when anything differs
// (`nft flush ruleset`, a deleted rule), and deletes a chain whose option is off.

import Addressing

extension FlannelTrafficRules {
    /// flanneld's table for `family`: `ip flannel-ipv4` or `ip6 flannel-ipv6`.
    public static func nftTable(_ family: IPFamily) -> (family: String, name: String) {
        family == .v4 ? ("ip", "flannel-ipv4") : ("ip6", "flannel-ipv6")
    }

    public static let nftPostroutingChain = "postrtg"
    public static let nftForwardChain = "forward"

    /// The chains' definitions (flanneld's types, hooks, priorities and comments).
    static let nftPostroutingSpec =
        "{ type nat hook postrouting priority srcnat ; comment \"chain to manage traffic masquerading by flannel\" ; }"
    static let nftForwardSpec =
        "{ type filter hook forward priority filter ; comment \"chain to accept flannel traffic\" ; }"

    /// The script deleting flanneld's tables of both families (the other backend of iptables
    /// mode), given `nft list tables`; nil when neither is there.
    static func nftRemovalScript(tables: String) -> String? {
        let present = Set(tables.split(separator: "\n").map(\.trimmingBlanks))
        let lines = [nftTable(.v4), nftTable(.v6)].map { "table \($0.family) \($0.name)" }.filter(present.contains)
            .map { "delete \($0)" }
        return lines.isEmpty ? nil : (lines + [""]).joined(separator: "\n")
    }
}

extension FlannelTrafficRules.FamilyRules {
    /// Chain postrtg's rules, as `nft list` prints them.
    public func nftPostroutingRules(fullyRandom: Bool) -> [String] {
        let ip = family == .v4 ? "ip" : "ip6"
        let (n, s) = (network.network.description, subnet.network.description)
        let masquerade = fullyRandom ? "masquerade fully-random" : "masquerade"
        return [
            "meta mark 0x00004000 return",
            "\(ip) saddr \(s) \(ip) daddr \(n) return",
            "\(ip) saddr \(n) \(ip) daddr \(s) return",
            "\(ip) saddr != \(s) \(ip) daddr \(n) return",
            "\(ip) saddr \(n) \(ip) daddr != \(Rules.multicast(family)) \(masquerade)",
            "\(ip) saddr != \(n) \(ip) daddr \(n) \(masquerade)",
        ]
    }

    /// Chain forward's rules, as `nft list` prints them.
    public var nftForwardRules: [String] {
        let ip = family == .v4 ? "ip" : "ip6"
        return ["\(ip) saddr \(network.network) accept", "\(ip) daddr \(network.network) accept"]
    }

    /// The `nft -f -` script that puts the enabled chains in place and deletes the disabled ones,
    /// given `nft -a list table` of flanneld's table; nil when all is as it should be. An enabled
    /// chain is in place when it holds exactly its rules, in order; when one is not, the table is
    /// added (a no-op when it exists) and every enabled chain is added, flushed and filled. A
    /// disabled chain that is there is deleted.
    public func nftScript(listing: NFTListing, fullyRandom: Bool? = nil) -> String? {
        let parts = [
            (
                enabled: options.masquerade, chain: Rules.nftPostroutingChain, spec: Rules.nftPostroutingSpec,
                rules: nftPostroutingRules(fullyRandom: fullyRandom ?? self.fullyRandom)
            ),
            (
                enabled: options.forward, chain: Rules.nftForwardChain, spec: Rules.nftForwardSpec,
                rules: nftForwardRules
            ),
        ]
        let inPlace = parts.allSatisfy { p in
            !p.enabled || listing.rules.filter { $0.chain == p.chain }.map(\.body) == p.rules
        }
        let stale = parts.filter { !$0.enabled && listing.chains.contains($0.chain) }
        if inPlace && stale.isEmpty { return nil }
        let (nftFamily, name) = Rules.nftTable(family)
        let t = "\(nftFamily) \(name)"
        var lines: [String] = []
        if !inPlace {
            lines.append("add table \(t) { comment \"rules for \(name)\" ; }")
            for p in parts where p.enabled {
                lines += ["add chain \(t) \(p.chain) \(p.spec)", "flush chain \(t) \(p.chain)"]
                lines += p.rules.map { "add rule \(t) \(p.chain) \($0)" }
            }
        }
        // Flushed first: older kernels refuse (EBUSY) to delete a chain that still has rules.
        for p in stale { lines += ["flush chain \(t) \(p.chain)", "delete chain \(t) \(p.chain)"] }
        return (lines + [""]).joined(separator: "\n")
    }
}
