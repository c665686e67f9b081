// subnet.env: what flanneld tells the CNI plugin about this node's share of the overlay. flanneld
// writes it atomically once it holds a lease (flannel pkg/subnet WriteSubnetFile):
//
//   FLANNEL_NETWORK=10.244.0.0/16         the whole overlay (comma-separated CIDRs are allowed)
//   FLANNEL_SUBNET=10.244.1.1/24          this node's subnet, written as first usable address/len
//   FLANNEL_IPV6_NETWORK=... / FLANNEL_IPV6_SUBNET=...   the same for IPv6, when enabled
//   FLANNEL_MTU=1450                      the overlay device's MTU
//   FLANNEL_IPMASQ=true                   whether flanneld masquerades itself (so the bridge must not)
//
// Parsed exactly as flannel-io/cni-plugin's loadFlannelSubnetEnv: lines split at the first "=",
// a trailing "\r" dropped (bufio.ScanLines), no trimming and no quotes, unknown keys ignored, a
// later line replaces an earlier one, subnets masked to their network, NETWORK lists de-duplicated,
// IPMASQ true only for exactly "true".

import Addressing
import CNI

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public struct SubnetEnv: Equatable, Sendable {
    public static let defaultPath = "/run/flannel/subnet.env"

    /// FLANNEL_NETWORK: masked, de-duplicated, in file order.
    public var networks: [IPNetwork] = []
    /// FLANNEL_SUBNET, masked ("10.244.1.1/24" -> "10.244.1.0/24").
    public var subnet: IPNetwork?
    public var ipv6Networks: [IPNetwork] = []
    public var ipv6Subnet: IPNetwork?
    public var mtu: UInt32
    public var ipMasq: Bool

    public init(
        networks: [IPNetwork] = [], subnet: IPNetwork? = nil, ipv6Networks: [IPNetwork] = [],
        ipv6Subnet: IPNetwork? = nil, mtu: UInt32, ipMasq: Bool
    ) {
        self.networks = networks; self.subnet = subnet; self.ipv6Networks = ipv6Networks
        self.ipv6Subnet = ipv6Subnet; self.mtu = mtu; self.ipMasq = ipMasq
    }

    /// The most a subnet.env may hold. flanneld writes about 150 bytes; the reference reads
    /// lines of up to 64 KiB (bufio.Scanner), so no file it accepts is refused here.
    public static let sizeLimit = 64 * 1024

    /// Reads and parses the file at `path`: a regular file of at most `sizeLimit` bytes (a FIFO,
    /// a device or a larger file is refused at once, never read until it ends).
    public static func load(_ path: String) throws(SubnetEnvError) -> SubnetEnv {
        let data: [UInt8]
        do throws(BoundedFile.Failure) {
            data = try BoundedFile.contents(path, limit: sizeLimit)
        } catch {
            switch error {
            case .system(let call, _, let e): throw .unreadable(call: call, path: path, errno: e)
            case .notRegularFile, .tooLarge: throw .unusable(path: path, why: error.description)
            }
        }
        return try parse(data, path: path)
    }

    /// Parses the file's bytes; `path` is only used in error messages.
    public static func parse(_ bytes: [UInt8], path: String) throws(SubnetEnvError) -> SubnetEnv {
        var networks: [IPNetwork]?, subnet: IPNetwork?, v6Networks: [IPNetwork]?, v6Subnet: IPNetwork?
        var mtu: UInt32?, ipMasq: Bool?
        for var line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            let text = String(decoding: line, as: UTF8.self)
            let key: String, value: String?
            if let eq = text.firstIndex(of: "=") {
                key = String(text[..<eq]); value = String(text[text.index(after: eq)...])
            } else {
                key = text; value = nil
            }
            func invalid(_ why: String) -> SubnetEnvError { .invalidValue(path: path, key: key, why: why) }
            func cidr(_ s: String) throws(SubnetEnvError) -> IPNetwork {
                // Go's net.ParseCIDR: the network with the host bits cleared.
                guard let n = IPNetwork(s) else { throw invalid("invalid CIDR address: \(s)") }
                return n.network
            }
            func cidrList(_ s: String) throws(SubnetEnvError) -> [IPNetwork] {
                var out: [IPNetwork] = []
                for part in s.split(separator: ",", omittingEmptySubsequences: false) {
                    let n = try cidr(String(part))
                    if !out.contains(n) { out.append(n) }
                }
                return out
            }
            switch key {
            case "FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
                "FLANNEL_MTU", "FLANNEL_IPMASQ":
                // The reference indexes parts[1] and panics here; a clear error is kinder.
                guard let value else { throw invalid("the line has no \"=\"") }
                switch key {
                case "FLANNEL_NETWORK": networks = try cidrList(value)
                case "FLANNEL_SUBNET": subnet = try cidr(value)
                case "FLANNEL_IPV6_NETWORK": v6Networks = try cidrList(value)
                case "FLANNEL_IPV6_SUBNET": v6Subnet = try cidr(value)
                case "FLANNEL_MTU":
                    // strconv.ParseUint(s, 10, 32): digits only, no sign, at most 2^32-1.
                    guard !value.isEmpty, value.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let m = UInt32(value) else {
                        throw invalid("\"\(value)\" is not an unsigned 32-bit integer")
                    }
                    mtu = m
                default: ipMasq = value == "true"
                }
            default:
                continue
            }
        }
        var missing: [String] = []
        if (networks ?? []).isEmpty && (v6Networks ?? []).isEmpty {
            missing += ["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]
        }
        if subnet == nil && v6Subnet == nil { missing += ["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"] }
        if mtu == nil { missing.append("FLANNEL_MTU") }
        if ipMasq == nil { missing.append("FLANNEL_IPMASQ") }
        guard missing.isEmpty, let mtu, let ipMasq else { throw .missingKeys(path: path, keys: missing) }
        return SubnetEnv(
            networks: networks ?? [], subnet: subnet, ipv6Networks: v6Networks ?? [],
            ipv6Subnet: v6Subnet, mtu: mtu, ipMasq: ipMasq)
    }
}

/// Why subnet.env could not be used. The descriptions are the reference's (Go's error strings).
public enum SubnetEnvError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file could not be opened or read; `errno == ENOENT` means flanneld has not written it yet.
    case unreadable(call: String, path: String, errno: Int32)
    /// Not a regular file, or larger than `SubnetEnv.sizeLimit`; `why` says which.
    case unusable(path: String, why: String)
    case missingKeys(path: String, keys: [String])
    case invalidValue(path: String, key: String, why: String)

    public var description: String {
        switch self {
        case .unreadable(let call, let path, let e):
            // Go prints syscall errors in lower case: "open /run/flannel/subnet.env: no such file or directory".
            let text = String(cString: strerror(e))
            return "\(call) \(path): \(text.prefix(1).lowercased() + text.dropFirst())"
        case .unusable(_, let why):
            return why
        case .missingKeys(let path, let keys):
            return "\(path) is missing \(keys.joined(separator: ", "))"
        case .invalidValue(let path, let key, let why):
            return "invalid \(key) in \(path): \(why)"
        }
    }

    /// True when the file does not exist (yet).
    public var isMissingFile: Bool {
        if case .unreadable(_, _, let e) = self { return e == ENOENT }
        return false
    }

    /// The reference's message for a failed ADD, with its hint for the operator.
    public var message: String {
        "failed to load flannel 'subnet.env' file: \(description). Check the flannel pod log for this node."
    }

    /// As a CNI error with `code`. ADD uses 11 (try again later) for a missing file, since
    /// flanneld writes it once it holds its lease; STATUS uses 50 (not available).
    public func cniError(_ code: CNIError.Code) -> CNIError {
        CNIError(code, message)
    }
}
