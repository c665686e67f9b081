// The subnets a listing holds, indexed so that "is this candidate free?" costs a binary search,
// not a pass over every lease: a node choosing a subnet in a cluster of n leases asks up to a
// hundred-odd free candidates and the n taken ones before them, which was n² overlap tests.
//
// Leases are normally disjoint subnets of one length, but a hand-written or hostile lease may be
// any prefix, so the index works on address ranges: sorted by first address, with the highest
// last address of every prefix of that order. A candidate [a, b] overlaps a taken range exactly
// when some range starting at or before b ends at or after a.

import Addressing

struct TakenSubnets {
    private var starts: [UInt128] = []
    /// `reach[i]`: the highest last address among the ranges `0...i` in `starts` order.
    private var reach: [UInt128] = []
    private let family: IPFamily

    init(_ subnets: [IPNetwork], family: IPFamily = .v4) {
        self.family = family
        let ranges = subnets.filter { $0.family == family }
            .map { (start: $0.firstAddress.value, end: $0.lastAddress.value) }
            .sorted { $0.start < $1.start }
        starts = ranges.map(\.start)
        var highest: UInt128 = 0
        reach = ranges.map { r in
            highest = max(highest, r.end)
            return highest
        }
    }

    /// Whether no taken subnet overlaps `subnet`.
    func isFree(_ subnet: IPNetwork) -> Bool {
        guard subnet.family == family else { return true }
        let first = subnet.firstAddress.value, last = subnet.lastAddress.value
        // The number of ranges that start at or before `last`.
        var low = 0, high = starts.count
        while low < high {
            let mid = (low + high) / 2
            if starts[mid] <= last { low = mid + 1 } else { high = mid }
        }
        return low == 0 || reach[low - 1] < first
    }
}
