// Errors of range validation, allocation and the reservation store. Each case prints the message
// the Go host-local prints for the same condition, so logs and runtime events read the same.

import Addressing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public indirect enum IPAMError: Error, Equatable, Sendable, CustomStringConvertible {
    // Range and range-set validation (backend/allocator/range.go, range_set.go).
    case networkTooSmall(IPNetwork)
    case hostBitsSet(prefixLength: Int, network: IPAddress)
    case ipv4MappedNetwork(IPNetwork)
    case unspecifiedNetwork(IPNetwork)
    case gatewayFamilyMismatch(gateway: IPAddress, subnet: IPNetwork)
    case rangeStartOutside(IPAddress, subnet: IPNetwork)
    case rangeEndOutside(IPAddress, subnet: IPNetwork)
    case rangeStartAfterEnd(start: IPAddress, end: IPAddress)
    case emptyRangeSet
    case mixedAddressFamilies
    case rangesOverlap(IPRange, IPRange)
    case rangeSetsOverlap(Int, Int)

    // Allocation (backend/allocator/allocator.go, main.go cmdAdd).
    case notInRangeSet(IPAddress, IPRangeSet)
    case requestedIsGateway(IPAddress)
    case requestedNotAvailable(IPAddress, IPRangeSet)
    case duplicateAllocation(IPAddress, containerID: String)
    case exhausted(IPRangeSet)
    case rangeSetFailed(index: Int, IPAMError)
    case requestedNotAllocated([IPAddress])

    // The store.
    case invalidNetworkName(String)
    /// A system call failed: `call` is the C function, `path` the file it worked on.
    case system(call: String, path: String, errno: Int32)
    /// Several independent failures (GC continues past each one and reports them all).
    case several([IPAMError])

    public var description: String {
        switch self {
        case .networkTooSmall(let n): "Network \(n) too small to allocate from"
        case .hostBitsSet(let len, let net):
            "Network has host bits set. For a subnet mask of length \(len) the network address is \(net)"
        case .ipv4MappedNetwork(let n): "IPNet IP and Mask version mismatch: \(n) is an IPv4-mapped IPv6 network"
        case .unspecifiedNetwork(let n):
            "Network \(n) starts at the unspecified address \(n.address): no address can be allocated from it"
        case .gatewayFamilyMismatch(let gw, let subnet):
            "gateway \(gw) is not in the address family of network \(subnet)"
        case .rangeStartOutside(let ip, let subnet): "RangeStart \(ip) not in network \(subnet)"
        case .rangeEndOutside(let ip, let subnet): "RangeEnd \(ip) not in network \(subnet)"
        case .rangeStartAfterEnd(let s, let e): "RangeStart \(s) is after RangeEnd \(e)"
        case .emptyRangeSet: "empty range set"
        case .mixedAddressFamilies: "mixed address families"
        case .rangesOverlap(let a, let b): "subnets \(a) and \(b) overlap"
        case .rangeSetsOverlap(let i, let j): "range set \(i) overlaps with \(j)"
        case .notInRangeSet(let ip, let set): "\(ip) not in range set \(set)"
        case .requestedIsGateway(let ip): "requested ip \(ip) is subnet's gateway"
        case .requestedNotAvailable(let ip, let set): "requested IP address \(ip) is not available in range set \(set)"
        case .duplicateAllocation(let ip, let id):
            "\(ip) has been allocated to \(id), duplicate allocation is not allowed"
        case .exhausted(let set): "no IP addresses available in range set: \(set)"
        case .rangeSetFailed(let i, let e): "failed to allocate for range \(i): \(e)"
        case .requestedNotAllocated(let ips):
            "failed to allocate all requested IPs: \(ips.map(\.description).joined(separator: " "))"
        case .invalidNetworkName(let n): "invalid network name \"\(n)\""
        case .system(let call, let path, let errno): "\(call) \(path): \(String(cString: strerror(errno)))"
        case .several(let es): es.map(\.description).joined(separator: "; ")
        }
    }

    /// True when the failure is the system's (I/O), not the configuration's or the pool's.
    public var isSystemError: Bool {
        switch self {
        case .system: true
        case .rangeSetFailed(_, let e): e.isSystemError
        case .several(let es): es.contains { $0.isSystemError }
        default: false
        }
    }
}
