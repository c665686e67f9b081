// `ipam.resolvConf`: a resolv.conf read into the result's `dns` (host-local dns.go). Only
// nameserver, domain, search and options are read; `#` and `;` start a comment line.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CNI

public enum ResolvConf {
    /// Reads and parses the file; a file that cannot be read is code 5.
    public static func load(_ path: String) throws(CNIError) -> Result.DNS {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CNIError(.ioFailure, "failed to read resolvConf \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 { data += buf[0..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 {
                throw CNIError(.ioFailure, "failed to read resolvConf \(path): \(String(cString: strerror(errno)))")
            }
            break
        }
        return parse(String(decoding: data, as: UTF8.self))
    }

    public static func parse(_ text: String) -> Result.DNS {
        var dns = Result.DNS()
        for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\u{0B}" || $0 == "\u{0C}" })
                .map(String.init)
            guard let key = fields.first, !key.hasPrefix("#"), !key.hasPrefix(";"), fields.count >= 2 else { continue }
            switch key {
            case "nameserver": dns.nameservers.append(fields[1])
            case "domain": dns.domain = fields[1]
            case "search": dns.search += fields.dropFirst()
            case "options": dns.options += fields.dropFirst()
            default: break
            }
        }
        return dns
    }
}
