// The names and comments that identify one attachment's masquerade rules. They must be byte for
// byte what containernetworking/plugins writes (pkg/utils/utils.go, pkg/ip/ipmasq_nftables_linux.go),
// so that the Go plugins can delete what podnet added and the other way round.

/// Object names shared with the reference plugins.
public enum MasqueradeNames {
    /// The iptables chain of an attachment: "CNI-" and the hex SHA-512 of name+containerID, cut to
    /// 28 characters (`utils.FormatChainName`). The interface name is not part of it.
    public static func iptablesChain(network: String, containerID: String) -> String {
        String(("CNI-" + SHA512.hex(network + containerID)).prefix(28))
    }

    /// The comment on every iptables rule of an attachment: `name: "<net>" id: "<cid>"`, quoted
    /// with Go's %q (`utils.FormatComment`).
    public static func iptablesComment(network: String, containerID: String) -> String {
        "name: \(goQuoted(network)) id: \(goQuoted(containerID))"
    }

    /// The nftables table, in family `inet`.
    public static let nftTable = "cni_plugins_masquerade"
    public static let nftTableComment = "Masquerading for plugins from github.com/containernetworking/plugins"
    /// The regular chain holding one rule per attachment address.
    public static let nftChain = "masq_checks"
    public static let nftChainComment =
        "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
    /// The base chain (nat, postrouting, srcnat) that skips multicast and jumps to `nftChain`.
    public static let nftBaseChain = "postrouting"
    /// knftables' CommentLengthMax.
    public static let nftCommentMax = 128

    /// The first 16 hex characters of the SHA-512 of the network name (`hashForNetwork`).
    public static func nftNetworkHash(_ network: String) -> String {
        String(SHA512.hex(network).prefix(16))
    }

    /// `<h16(net)>-<h16(ifname:containerID)>` (`hashForInstance`): every nft rule of an
    /// attachment has a comment starting with it.
    public static func nftInstanceHash(network: String, ifname: String, containerID: String) -> String {
        nftNetworkHash(network) + "-" + String(SHA512.hex(ifname + ":" + containerID).prefix(16))
    }

    /// `<instance hash>, net: <net>, if: <if>, id: <cid>` without double quotes, cut to 128 bytes
    /// (`commentForInstance`). Go cuts bytes; this backs off to a whole character so the comment
    /// stays valid UTF-8 (only differs for non-ASCII names, which CNI does not allow).
    public static func nftComment(network: String, ifname: String, containerID: String) -> String {
        func clean(_ s: String) -> String { s.filter { $0 != "\"" } }
        let full =
            "\(nftInstanceHash(network: network, ifname: ifname, containerID: containerID)), "
            + "net: \(clean(network)), if: \(clean(ifname)), id: \(clean(containerID))"
        guard full.utf8.count > nftCommentMax else { return full }
        var cut = "", bytes = 0
        for u in full.unicodeScalars {
            bytes += UTF8.width(u)
            if bytes > nftCommentMax { break }
            cut.unicodeScalars.append(u)
        }
        return cut
    }

    /// Go's `strconv.Quote` for the strings CNI allows (and a safe answer for the rest): double
    /// quotes around, `"` and `\` escaped, control characters as \n, \t, ... or \xNN.
    static func goQuoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\u{07}": out += "\\a"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{0B}": out += "\\v"
            case _ where u.value < 0x20 || u.value == 0x7f:
                let hex = String(u.value, radix: 16)
                out += "\\x" + (hex.count == 1 ? "0" : "") + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
