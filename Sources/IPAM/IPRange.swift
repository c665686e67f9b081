// Address pools: a range is a slice [rangeStart, rangeEnd] of one subnet with its gateway; a range
// set is the pools one allocation may draw from (host-local's `ranges[i]`), all of one family.
//
// Canonicalization follows backend/allocator/range.go: the subnet must leave at least two addresses,
// must not be an IPv4-mapped IPv6 subnet (Go: "IPNet IP and Mask version mismatch"), must be given
// as its network address and must not start at the unspecified address (0.0.0.0/n, ::/n: Go's
// first address of such a subnet is a 1-byte IP, "?01", so its ADD always fails with "no IP
// addresses available"; 0.0.0.0/0 and ::/0 are the common case); gateway and rangeStart default to network+1; rangeEnd
// defaults to the last address, minus one for IPv4 (the broadcast). In IPv6 the all-ones address
// is allocatable. The gateway is skipped by the allocator, never excluded from the range.
//
// Named IPRange/IPRangeSet rather than Range/RangeSet so they do not shadow the standard library's
// `Range` and `RangeSet` in every module that imports IPAM.

import Addressing

public struct IPRange: Hashable, Sendable, CustomStringConvertible {
    public let subnet: IPNetwork
    /// The first allocatable address, inclusive.
    public let rangeStart: IPAddress
    /// The last allocatable address, inclusive.
    public let rangeEnd: IPAddress
    public let gateway: IPAddress

    /// Validates and fills in defaults. The checks run in the reference's order: size, IPv4-mapped,
    /// host bits, then (podnet's) the unspecified network, then gateway, start, end.
    public init(
        subnet: IPNetwork, rangeStart: IPAddress? = nil, rangeEnd: IPAddress? = nil,
        gateway: IPAddress? = nil
    ) throws(IPAMError) {
        // A /31 or /32 (/127, /128) leaves nothing once the network address is taken out.
        if subnet.prefixLength > subnet.family.bitWidth - 2 { throw .networkTooSmall(subnet) }
        // ::ffff:a.b.c.d, as written (Go canonicalizes it to 4 bytes, its 16-byte mask stays).
        if subnet.family == .v6 && subnet.address.value >> 32 == 0xffff { throw .ipv4MappedNetwork(subnet) }
        if subnet.hasHostBits {
            throw .hostBitsSet(prefixLength: subnet.prefixLength, network: subnet.network.address)
        }
        if subnet.address.isUnspecified { throw .unspecifiedNetwork(subnet) }
        let first = subnet.firstAddress.advanced(by: 1)!
        if let gateway, gateway.family != subnet.family {
            throw .gatewayFamilyMismatch(gateway: gateway, subnet: subnet)
        }
        let start = rangeStart ?? first
        if !subnet.contains(start) { throw .rangeStartOutside(start, subnet: subnet) }
        let end = rangeEnd ?? (subnet.family == .v4 ? subnet.lastAddress.advanced(by: -1)! : subnet.lastAddress)
        if !subnet.contains(end) { throw .rangeEndOutside(end, subnet: subnet) }
        if start > end { throw .rangeStartAfterEnd(start: start, end: end) }
        self.subnet = subnet
        self.rangeStart = start
        self.rangeEnd = end
        self.gateway = gateway ?? first
    }

    public var family: IPFamily { subnet.family }

    /// True when `ip` is in the subnet and between rangeStart and rangeEnd.
    public func contains(_ ip: IPAddress) -> Bool {
        ip.family == family && subnet.contains(ip) && ip >= rangeStart && ip <= rangeEnd
    }

    /// True when the two ranges share an address (ranges of different families never do).
    public func overlaps(_ other: IPRange) -> Bool {
        contains(other.rangeStart) || contains(other.rangeEnd)
            || other.contains(rangeStart) || other.contains(rangeEnd)
    }

    /// "10.88.0.1-10.88.255.254", as the reference prints a range in its errors.
    public var description: String { "\(rangeStart)-\(rangeEnd)" }
}

public struct IPRangeSet: Hashable, Sendable, CustomStringConvertible {
    public let ranges: [IPRange]

    /// Checks the set: not empty, one family, no two ranges overlapping.
    public init(_ ranges: [IPRange]) throws(IPAMError) {
        guard let f = ranges.first else { throw .emptyRangeSet }
        if ranges.contains(where: { $0.family != f.family }) { throw .mixedAddressFamilies }
        for i in ranges.indices {
            for j in ranges.indices where j > i && ranges[i].overlaps(ranges[j]) {
                throw .rangesOverlap(ranges[i], ranges[j])
            }
        }
        self.ranges = ranges
    }

    public var family: IPFamily { ranges[0].family }

    public func contains(_ ip: IPAddress) -> Bool { range(for: ip) != nil }

    /// The range holding `ip`, if any.
    public func range(for ip: IPAddress) -> IPRange? { ranges.first { $0.contains(ip) } }

    public func overlaps(_ other: IPRangeSet) -> Bool {
        ranges.contains { r in other.ranges.contains { r.overlaps($0) } }
    }

    /// Fails with "range set i overlaps with j" for the first pair of sets that share an address.
    public static func checkDisjoint(_ sets: [IPRangeSet]) throws(IPAMError) {
        for i in sets.indices {
            for j in sets.indices where j > i && sets[i].overlaps(sets[j]) {
                throw .rangeSetsOverlap(i, j)
            }
        }
    }

    public var description: String { ranges.map(\.description).joined(separator: ",") }
}
