// subnet.env, the file the CNI flannel plugin (ours and flannel-io's) reads:
//   FLANNEL_NETWORK=10.5.0.0/16
//   FLANNEL_SUBNET=10.5.34.1/24     (the lease's first usable address)
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
        let first = IPNetwork(address: subnet.network.address.advanced(by: 1)!, prefixLength: subnet.prefixLength)!
        return
            "FLANNEL_NETWORK=\(network.network)\nFLANNEL_SUBNET=\(first)\nFLANNEL_MTU=\(mtu)\nFLANNEL_IPMASQ=\(ipMasq)\n"
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
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("FLANNEL_SUBNET=") {
            return IPNetwork(line.dropFirst("FLANNEL_SUBNET=".count))?.network
        }
        return nil
    }
}
