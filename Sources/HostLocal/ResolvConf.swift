// `ipam.resolvConf`: a resolv.conf read into the result's `dns` (host-local dns.go). Only
// nameserver, domain, search and options are read; `#` and `;` start a comment line.

import CNI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public enum ResolvConf {
    /// The most a resolvConf file may hold. The reference reads lines of up to 64 KiB; a real
    /// resolv.conf is a few hundred bytes, and the result can only carry a few names.
    public static let sizeLimit = 64 * 1024

    /// Reads and parses the file; a file that cannot be read, is not a regular file (a FIFO, a
    /// device: refused without reading) or holds more than `sizeLimit` bytes is code 5.
    public static func load(_ path: String) throws(CNIError) -> Result.DNS {
        do throws(BoundedFile.Failure) {
            let data = try BoundedFile.contents(path, limit: sizeLimit)
            return parse(String(decoding: data, as: UTF8.self))
        } catch {
            throw CNIError(.ioFailure, "failed to read resolvConf: \(error)")
        }
    }

    public static func parse(_ text: String) -> Result.DNS {
        var dns = Result.DNS()
        for line in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let fields = line.split(whereSeparator: {
                $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\u{0B}" || $0 == "\u{0C}"
            })
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
