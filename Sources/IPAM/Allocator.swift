// Round-robin allocation from one range set (backend/allocator/allocator.go), and host-local's ADD
// over all range sets (main.go cmdAdd): one address per range set, all or nothing.
//
// Round robin: the search starts just after the address last reserved in this range set, so a
// crash-looping container does not get the same address back until the whole set has been used.
// The walk goes up to rangeEnd, continues at the next range's rangeStart, wraps from the last
// range to the first, skips each range's gateway and stops when it comes back to where it began.

import Addressing

/// One allocated address: `address` carries the subnet's prefix length ("10.88.0.5/16").
public struct Allocation: Hashable, Sendable {
    public var address: IPNetwork
    public var gateway: IPAddress
    public var rangeSetIndex: Int
    public init(address: IPNetwork, gateway: IPAddress, rangeSetIndex: Int) {
        self.address = address
        self.gateway = gateway
        self.rangeSetIndex = rangeSetIndex
    }
}

/// Allocates from range set number `index`. The caller holds the store's lock.
public struct Allocator {
    public let rangeSet: IPRangeSet
    public let index: Int
    public let store: any Store

    public init(rangeSet: IPRangeSet, index: Int, store: any Store) {
        self.rangeSet = rangeSet
        self.index = index
        self.store = store
    }

    /// Reserves `requested` if given (it must not be a gateway and must be free), otherwise the
    /// next free address in round-robin order. Without a requested address, an attachment that
    /// already holds an address in this range set gets an error rather than a second one.
    public func allocate(id: String, ifname: String, requested: IPAddress? = nil) throws(IPAMError) -> Allocation {
        if let ip = requested {
            guard let r = rangeSet.range(for: ip) else { throw .notInRangeSet(ip, rangeSet) }
            if ip == r.gateway { throw .requestedIsGateway(ip) }
            guard try store.reserve(ip, id: id, ifname: ifname, rangeSetIndex: index) else {
                throw .requestedNotAvailable(ip, rangeSet)
            }
            return allocation(ip, in: r)
        }
        if let held = store.getByID(id: id, ifname: ifname).first(where: rangeSet.contains) {
            throw .duplicateAllocation(held, containerID: id)
        }
        var walk = RoundRobin(rangeSet, after: store.lastReservedIP(rangeSetIndex: index))
        while let (ip, r) = walk.next() {
            if try store.reserve(ip, id: id, ifname: ifname, rangeSetIndex: index) {
                return allocation(ip, in: r)
            }
        }
        throw .exhausted(rangeSet)
    }

    private func allocation(_ ip: IPAddress, in r: IPRange) -> Allocation {
        Allocation(
            address: IPNetwork(address: ip, prefixLength: r.subnet.prefixLength)!, gateway: r.gateway,
            rangeSetIndex: index)
    }

    /// host-local's ADD: one address from each range set, in order. Each requested address goes to
    /// the first range set containing it. If a range set fails, the addresses already reserved by
    /// this call are released ("failed to allocate for range i: ..."); so they are if a requested
    /// address fits no range set ("failed to allocate all requested IPs: ..."). Reservations the
    /// attachment held before the call are left alone. The caller holds the store's lock.
    public static func allocate(
        rangeSets: [IPRangeSet], requested: [IPAddress], id: String, ifname: String,
        store: any Store
    ) throws(IPAMError) -> [Allocation] {
        var pending: [IPAddress] = []
        for ip in requested where !pending.contains(ip) { pending.append(ip) }
        var done: [Allocation] = []
        func rollback() {
            for a in done { try? store.release(a.address.address) }
        }
        for (i, set) in rangeSets.enumerated() {
            let wanted = pending.firstIndex(where: set.contains).map { pending.remove(at: $0) }
            do throws(IPAMError) {
                done.append(
                    try Allocator(rangeSet: set, index: i, store: store)
                        .allocate(id: id, ifname: ifname, requested: wanted))
            } catch {
                rollback()
                throw .rangeSetFailed(index: i, error)
            }
        }
        if !pending.isEmpty {
            rollback()
            throw .requestedNotAllocated(pending)
        }
        return done
    }
}

/// The candidate addresses of a range set in round-robin order (the reference's RangeIter).
public struct RoundRobin: Sequence, IteratorProtocol {
    private let ranges: [IPRange]
    private var rangeIndex = 0
    private var current: IPAddress?
    private var start: IPAddress?
    private var finished = false

    /// Starts just after `last` when the set contains it, else at the first range's rangeStart.
    public init(_ set: IPRangeSet, after last: IPAddress?) {
        ranges = set.ranges
        if let last, let i = ranges.firstIndex(where: { $0.contains(last) }) {
            rangeIndex = i
            current = last
        }
    }

    /// The next candidate and its range; nil once every address has been offered.
    public mutating func next() -> (IPAddress, IPRange)? {
        while !finished {
            var r = ranges[rangeIndex]
            guard let cur = current else {
                // First call without a last-reserved address: rangeStart itself is a candidate.
                current = r.rangeStart
                start = r.rangeStart
                if r.rangeStart == r.gateway { continue }
                return (r.rangeStart, r)
            }
            let next: IPAddress
            if cur == r.rangeEnd {
                rangeIndex = (rangeIndex + 1) % ranges.count
                r = ranges[rangeIndex]
                next = r.rangeStart
            } else {
                next = cur.advanced(by: 1)!
            }
            current = next
            if let start {
                if next == start { finished = true; return nil }
            } else {
                start = next
            }
            if next == r.gateway { continue }
            return (next, r)
        }
        return nil
    }
}
