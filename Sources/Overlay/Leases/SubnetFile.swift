// subnet.env, the file the CNI flannel plugin (ours and flannel-io's) reads:
//   FLANNEL_NETWORK=10.5.0.0/16
//   FLANNEL_SUBNET=10.5.34.1/24     (the lease's first usable address)
//   FLANNEL_IPV6_NETWORK=fd00:10:244::/56   (with EnableIPv6; an IPv6-only cluster has only these)
//   FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64
//   FLANNEL_MTU=1450
//   FLANNEL_IPMASQ=false
// Written atomically: a reader sees the old file or the new one, never a part.

import Addressing
import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

public enum SubnetFile {
    public static func render(network: IPNetwork, subnet: IPNetwork, mtu: Int, ipMasq: Bool) -> String {
        render(ipv4: (network, subnet), ipv6: nil, mtu: mtu, ipMasq: ipMasq)
    }

    /// The file for a lease under `config`: the keys of each enabled family, in flanneld's order
    /// (FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_NETWORK, FLANNEL_IPV6_SUBNET, FLANNEL_MTU,
    /// FLANNEL_IPMASQ).
    public static func render(config: NetworkConfig, lease: Lease, mtu: Int, ipMasq: Bool) -> String {
        func pair(_ family: IPFamily) -> (IPNetwork, IPNetwork)? {
            guard let range = config.range(family), let subnet = lease.subnet(family) else { return nil }
            return (range.network, subnet)
        }
        return render(ipv4: pair(.v4), ipv6: pair(.v6), mtu: mtu, ipMasq: ipMasq)
    }

    static func render(ipv4: (IPNetwork, IPNetwork)?, ipv6: (IPNetwork, IPNetwork)?, mtu: Int, ipMasq: Bool)
        -> String
    {
        func first(_ subnet: IPNetwork) -> IPNetwork {
            IPNetwork(address: subnet.network.address.advanced(by: 1)!, prefixLength: subnet.prefixLength)!
        }
        var text = ""
        if let (network, subnet) = ipv4 {
            text += "FLANNEL_NETWORK=\(network.network)\nFLANNEL_SUBNET=\(first(subnet))\n"
        }
        if let (network, subnet) = ipv6 {
            text += "FLANNEL_IPV6_NETWORK=\(network.network)\nFLANNEL_IPV6_SUBNET=\(first(subnet))\n"
        }
        return text + "FLANNEL_MTU=\(mtu)\nFLANNEL_IPMASQ=\(ipMasq)\n"
    }

    /// Writes `contents` to `path` through a temporary file, fsync and rename (mode 0644; the
    /// folder is created 0755 if needed); a no-op when the file already holds exactly this.
    public static func write(_ contents: String, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        if (try? String(contentsOf: url, encoding: .utf8)) == contents { return }
        let dir = url.deletingLastPathComponent().path
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o755])
        let tmp = dir + "/." + url.lastPathComponent + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let bytes = Array(contents.utf8)
        let ok = Glibc.write(fd, bytes, bytes.count) == bytes.count && fchmod(fd, 0o644) == 0 && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            let e = errno
            unlink(tmp)
            throw POSIXError(POSIXErrorCode(rawValue: e) ?? .EIO)
        }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// The subnet of an existing file (FLANNEL_SUBNET masked back to the network), the hint for
    /// re-acquiring the same subnet after a restart; nil when absent or unreadable.
    public static func previousSubnet(at path: String) -> IPNetwork? {
        value("FLANNEL_SUBNET", at: path)
    }

    /// The subnets of an existing file as a lease key (FLANNEL_SUBNET, with FLANNEL_IPV6_SUBNET;
    /// FLANNEL_IPV6_SUBNET alone in an IPV6-only cluster): the hint for the subnets to acquire
    /// again; nil when absent or unreadable.
    public static func previousKey(at path: String) -> SubnetKey? {
        let v4 = value("FLANNEL_SUBNET", at: path).flatMap { $0.family == .v4 ? $0 : nil }
        let v6 = value("FLANNEL_IPV6_SUBNET", at: path).flatMap { $0.family == .v6 ? $0 : nil }
        if let v4 { return SubnetKey(v4, ipv6Subnet: v6) }
        return v6.map { SubnetKey($0) }
    }

    private static func value(_ key: String, at path: String) -> IPNetwork? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + "=") {
            return IPNetwork(line.dropFirst(key.count + 1))?.network
        }
        return nil
    }
}
