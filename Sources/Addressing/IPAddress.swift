// IP addresses, prefixes and MAC addresses: the value types every podnet layer shares.
//
// Text forms follow Go's `net` package, which is what the reference plugins write into result JSON,
// reservation file names and netfilter rules: IPv4 dotted quad, IPv6 in RFC 5952 form,
// MAC as lower-case colon-separated hex.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public enum IPFamily: Sendable, Hashable {
    case v4, v6

    /// The kernel's address family constant.
    public var af: Int32 { self == .v4 ? AF_INET : AF_INET6 }
    public var bitWidth: Int { self == .v4 ? 32 : 128 }
}

/// An IPv4 or IPv6 address, stored as a 128-bit big-endian number (IPv4 in the low 32 bits).
public struct IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let family: IPFamily
    /// The address as an unsigned number; for IPv4 only the low 32 bits are used.
    public let value: UInt128

    public init(family: IPFamily, value: UInt128) {
        self.family = family
        self.value = family == .v4 ? value & 0xffff_ffff : value
    }

    public init(v4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.init(family: .v4, value: UInt128(a) << 24 | UInt128(b) << 16 | UInt128(c) << 8 | UInt128(d))
    }

    /// Parses "10.1.2.3" or "fd00::1". Returns nil for anything else (no prefix, no zone).
    public init?(_ text: some StringProtocol) {
        let s = String(text)
        if s.contains(":") {
            var raw = in6_addr()
            guard inet_pton(AF_INET6, s, &raw) == 1 else { return nil }
            self.init(bytes: withUnsafeBytes(of: raw) { Array($0) })
        } else {
            var raw = in_addr()
            // inet_pton accepts only the strict dotted quad, as Go's ParseIP does.
            guard inet_pton(AF_INET, s, &raw) == 1 else { return nil }
            self.init(bytes: withUnsafeBytes(of: raw) { Array($0) })
        }
    }

    /// Builds an address from 4 or 16 network-order bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        let v = bytes.reduce(UInt128(0)) { $0 << 8 | UInt128($1) }
        self.init(family: bytes.count == 4 ? .v4 : .v6, value: v)
    }

    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        let n = family == .v4 ? 4 : 16
        return (0..<n).map { UInt8(truncatingIfNeeded: value >> (8 * (n - 1 - $0))) }
    }

    public var description: String {
        if family == .v4 { return bytes.map(String.init).joined(separator: ".") }
        // RFC 5952, as Go prints it: lower-case hex groups, the longest run (of at least two) of
        // zero groups shortened to "::", the first such run on a tie; never a dotted tail.
        let groups = (0..<8).map { UInt16(truncatingIfNeeded: value >> (16 * (7 - $0))) }
        var best = (start: -1, count: 0), run = (start: -1, count: 0)
        for (i, g) in groups.enumerated() {
            if g == 0 {
                run = run.start < 0 ? (i, 1) : (run.start, run.count + 1)
                if run.count > best.count { best = run }
            } else {
                run = (-1, 0)
            }
        }
        let hex = groups.map { String($0, radix: 16) }
        guard best.count >= 2 else { return hex.joined(separator: ":") }
        return hex[..<best.start].joined(separator: ":") + "::"
            + hex[(best.start + best.count)...].joined(separator: ":")
    }

    public static func < (l: IPAddress, r: IPAddress) -> Bool {
        l.family == r.family ? l.value < r.value : l.family == .v4
    }

    /// The address `n` above this one, or nil when it would leave the family's space.
    public func advanced(by n: Int) -> IPAddress? {
        let max: UInt128 = family == .v4 ? 0xffff_ffff : .max
        if n >= 0 {
            let (r, o) = value.addingReportingOverflow(UInt128(n))
            return o || r > max ? nil : IPAddress(family: family, value: r)
        }
        let m = UInt128(n.magnitude)
        return m > value ? nil : IPAddress(family: family, value: value - m)
    }

    public var isUnspecified: Bool { value == 0 }
    public var isLoopback: Bool {
        family == .v4 ? value >> 24 == 127 : value == 1
    }
    /// Global unicast as Go's `IP.IsGlobalUnicast` defines it (not link-local, multicast, loopback).
    public var isGlobalUnicast: Bool {
        switch family {
        case .v4:
            return !isUnspecified && !isLoopback && value >> 28 != 0xe && value >> 16 != 0xa9fe
                && value != 0xffff_ffff
        case .v6:
            return !isUnspecified && !isLoopback && value >> 120 != 0xff && value >> 118 != 0x3fa
        }
    }
}

/// An address with a prefix length: "10.88.0.5/16". The address may have host bits set, as in a
/// CNI result's `address` field; `network` gives the masked form.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    public init?(address: IPAddress, prefixLength: Int) {
        guard prefixLength >= 0, prefixLength <= address.family.bitWidth else { return nil }
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses "a.b.c.d/len" or "v6/len".
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = IPAddress(parts[0]), let n = Int(parts[1]),
            parts[1].allSatisfy(\.isNumber)
        else { return nil }
        self.init(address: a, prefixLength: n)
    }

    public var family: IPFamily { address.family }
    public var description: String { "\(address)/\(prefixLength)" }

    /// The netmask as a number of the family's width.
    public var mask: UInt128 {
        let w = family.bitWidth
        let ones: UInt128 = family == .v4 ? 0xffff_ffff : .max
        return prefixLength == 0 ? 0 : ones ^ (prefixLength == w ? 0 : ones >> prefixLength)
    }

    /// The masked network: "10.88.0.5/16" -> "10.88.0.0/16".
    public var network: IPNetwork {
        IPNetwork(address: IPAddress(family: family, value: address.value & mask), prefixLength: prefixLength)!
    }
    public var firstAddress: IPAddress { network.address }
    public var lastAddress: IPAddress {
        let ones: UInt128 = family == .v4 ? 0xffff_ffff : .max
        return IPAddress(family: family, value: (address.value & mask) | (ones & ~mask))
    }
    public var hasHostBits: Bool { address.value & ~mask != 0 }

    public func contains(_ ip: IPAddress) -> Bool {
        ip.family == family && ip.value & mask == address.value & mask
    }
    /// True when either network contains the other's first address.
    public func overlaps(_ other: IPNetwork) -> Bool {
        contains(other.firstAddress) || other.contains(firstAddress)
    }
    /// Number of host addresses in the prefix, saturating at Int.max.
    public var size: UInt128 {
        family.bitWidth - prefixLength >= 128 ? .max : UInt128(1) << (family.bitWidth - prefixLength)
    }
}

/// A 6-byte Ethernet address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Parses "aa:bb:cc:dd:ee:ff" (also with "-" separators, as Go's ParseMAC accepts): six
    /// pairs of hex digits, read as UTF-8 bytes (a lease listing parses thousands of them).
    public init?(_ text: some StringProtocol) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(6)
        var digits = 0, value: UInt8 = 0
        for c in text.utf8 {
            if digits == 2 {
                guard c == UInt8(ascii: ":") || c == UInt8(ascii: "-"), bytes.count < 5 else { return nil }
                bytes.append(value)
                digits = 0; value = 0
                continue
            }
            let nibble: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | nibble
            digits += 1
        }
        guard digits == 2, bytes.count == 5 else { return nil }
        bytes.append(value)
        self.bytes = bytes
    }

    public var description: String {
        bytes.map { b in (b < 16 ? "0" : "") + String(b, radix: 16) }.joined(separator: ":")
    }

    /// A random locally administered unicast address, as the kernel assigns to new veths.
    public static func randomLocal() -> MACAddress {
        var b = (0..<6).map { _ in UInt8.random(in: 0...255) }
        b[0] = (b[0] & 0xfe) | 0x02
        return MACAddress(bytes: b)!
    }
}
