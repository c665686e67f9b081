// The names and comments of the portmap plugin's netfilter objects. They must be byte for byte
// what containernetworking/plugins writes (plugins/meta/portmap: portmap_iptables.go,
// portmap_nftables.go), so either implementation can delete what the other added.

/// Object names shared with the reference portmap plugin.
public enum PortmapNames {
    // MARK: iptables, table nat of each family

    /// Shared: jumped to from PREROUTING and OUTPUT for local destinations; holds one entry rule
    /// per container, protocol and up to 15 ports, jumping to the container's chain.
    public static let dnatChain = "CNI-HOSTPORT-DNAT"
    /// Shared: sets the masquerade mark bit.
    public static let setMarkChain = "CNI-HOSTPORT-SETMARK"
    /// Shared: masquerades marked packets; jumped to from the top of POSTROUTING.
    public static let masqChain = "CNI-HOSTPORT-MASQ"

    public static let setMarkComment = "CNI portfwd masquerade mark"
    public static let masqComment = "CNI portfwd requiring masquerade"
    /// The reference's default `markMasqBit` (Kubernetes uses 14 and 15, Calico 20-31).
    public static let defaultMarkBit = 13

    /// The container's chain: "CNI-DN-" and the hex SHA-512 of name+containerID, cut to 28
    /// characters (`utils.MustFormatChainNameWithPrefix(name, id, "DN-")`).
    public static func containerChain(network: String, containerID: String) -> String {
        String(("CNI-DN-" + SHA512.hex(network + containerID)).prefix(28))
    }

    /// The chain of the legacy SNAT layout ("CNI-SN-..."), removed on teardown if present.
    public static func legacyContainerSNATChain(network: String, containerID: String) -> String {
        String(("CNI-SN-" + SHA512.hex(network + containerID)).prefix(28))
    }

    /// `dnat name: "<net>" id: "<cid>"` on every entry rule of a container. The reference formats
    /// it with %s (not %q) and cuts it at 255 characters; it cuts to 253 + "..." = 256, which
    /// iptables rejects, so this cuts to 252 + "..." (the two agree for every comment that works).
    public static func dnatComment(network: String, containerID: String) -> String {
        let full = "dnat name: \"\(network)\" id: \"\(containerID)\""
        return full.utf8.count <= 255 ? full : String(full.prefix(252)) + "..."
    }

    /// The mark of `bit` as `%#x/%#x`: 13 -> "0x2000/0x2000".
    public static func mark(bit: Int) -> String {
        let v = "0x" + String(UInt32(1) << UInt32(bit), radix: 16)
        return v + "/" + v
    }

    // MARK: nftables, tables `ip cni_hostport` and `ip6 cni_hostport`

    public static let nftTable = "cni_hostport"
    public static let nftTableComment = "CNI portmap plugin"
    /// Holds every DNAT rule (comment = container ID).
    public static let nftHostPorts = "hostports"
    /// Legacy home of the hostIP rules: kept, still searched on teardown, no longer filled.
    public static let nftHostIPHostPorts = "hostip_hostports"
    /// Rebuilt on every ADD: jumps to `hostip_hostports` and `hostports`.
    public static let nftHostPortsAll = "hostports_all"
    /// Base chains (nat): prerouting (dstnat), output (-100), masquerading (postrouting, srcnat).
    public static let nftPrerouting = "prerouting"
    public static let nftOutput = "output"
    public static let nftMasquerading = "masquerading"
    /// The chains whose rules carry a container ID comment.
    public static let nftContainerChains = [nftHostPorts, nftHostIPHostPorts, nftMasquerading]
}
