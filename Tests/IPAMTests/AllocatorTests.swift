// The allocator against an in-memory store: round robin, wrap-around, gateway skipping,
// exhaustion, requested addresses, duplicates, all-or-nothing across range sets, and GC.

import Addressing
import IPAM
import TestSupport
import Testing

@Suite struct AllocatorTests {
    func set(_ subnets: String...) throws -> IPRangeSet {
        try IPRangeSet(subnets.map { s throws(IPAMError) in try IPRange(subnet: cidr(s)) })
    }

    @Test func firstAllocationSkipsTheGatewayAtRangeStart() throws {
        let store = FakeStore()
        let a = try Allocator(rangeSet: set("10.0.0.0/29"), index: 0, store: store).allocate(id: "c1", ifname: "eth0")
        #expect(a.address == cidr("10.0.0.2/29"))
        #expect(a.gateway == ip("10.0.0.1"))
        #expect(store.attempts == [ip("10.0.0.2")])
        #expect(store.lastReserved[0] == ip("10.0.0.2"))
    }

    @Test func roundRobinDoesNotReuseAReleasedAddressAtOnce() throws {
        let store = FakeStore()
        let alloc = try Allocator(rangeSet: set("10.0.0.0/29"), index: 0, store: store)
        #expect(try alloc.allocate(id: "c1", ifname: "eth0").address.address == ip("10.0.0.2"))
        try store.release(id: "c1", ifname: "eth0")
        #expect(try alloc.allocate(id: "c2", ifname: "eth0").address.address == ip("10.0.0.3"))
    }

    @Test func wrapsFromRangeEndToStartSkippingTheGateway() throws {
        // /29: candidates .1-.6, gateway .1; the last reservation was .6.
        let store = FakeStore(
            [Reservation(ip: ip("10.0.0.3"), containerID: "other", ifname: "eth0")],
            lastReserved: [0: ip("10.0.0.6")])
        let alloc = try Allocator(rangeSet: set("10.0.0.0/29"), index: 0, store: store)
        #expect(try alloc.allocate(id: "c1", ifname: "eth0").address.address == ip("10.0.0.2"))
        #expect(try alloc.allocate(id: "c2", ifname: "eth0").address.address == ip("10.0.0.4"))
        #expect(store.attempts == [ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")])
    }

    @Test func walkVisitsEveryRangeInOrderAndEndsWhereItBegan() throws {
        let rs = try IPRangeSet([
            IPRange(subnet: cidr("10.0.0.0/24"), rangeStart: ip("10.0.0.1"), rangeEnd: ip("10.0.0.3")),
            IPRange(
                subnet: cidr("10.0.1.0/24"), rangeStart: ip("10.0.1.5"), rangeEnd: ip("10.0.1.6"),
                gateway: ip("10.0.1.6")),
        ])
        #expect(RoundRobin(rs, after: nil).map(\.0) == [ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.1.5")])
        #expect(RoundRobin(rs, after: ip("10.0.0.3")).map(\.0) == [ip("10.0.1.5"), ip("10.0.0.2"), ip("10.0.0.3")])
        // A last address outside the set (the ranges changed) restarts at the first rangeStart.
        #expect(RoundRobin(rs, after: ip("192.168.0.1")).map(\.0).first == ip("10.0.0.2"))
        #expect(
            RoundRobin(rs, after: nil).map(\.1.subnet) == [
                cidr("10.0.0.0/24"), cidr("10.0.0.0/24"), cidr("10.0.1.0/24"),
            ])
    }

    @Test func gatewayInsideTheRangeIsSkipped() throws {
        let rs = try IPRangeSet([IPRange(subnet: cidr("10.0.0.0/29"), gateway: ip("10.0.0.3"))])
        #expect(
            RoundRobin(rs, after: nil).map(\.0) == ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"].map(ip))
    }

    @Test func exhaustionReportsTheRangeSet() throws {
        let store = FakeStore()
        let alloc = try Allocator(rangeSet: set("10.0.0.0/29"), index: 0, store: store)
        for i in 0..<5 { _ = try alloc.allocate(id: "c\(i)", ifname: "eth0") }
        #expect(store.reservedIPs == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"].map(ip))
        #expect(throws: IPAMError.exhausted(try set("10.0.0.0/29"))) { try alloc.allocate(id: "c9", ifname: "eth0") }
        #expect(
            IPAMError.exhausted(try set("10.0.0.0/29")).description
                == "no IP addresses available in range set: 10.0.0.1-10.0.0.6")
    }

    @Test func requestedAddresses() throws {
        let store = FakeStore()
        let rs = try set("10.0.0.0/24")
        let alloc = Allocator(rangeSet: rs, index: 0, store: store)
        #expect(
            try alloc.allocate(id: "c1", ifname: "eth0", requested: ip("10.0.0.77")).address == cidr("10.0.0.77/24"))
        #expect(store.lastReserved[0] == ip("10.0.0.77"))
        #expect(throws: IPAMError.requestedNotAvailable(ip("10.0.0.77"), rs)) {
            try alloc.allocate(id: "c2", ifname: "eth0", requested: ip("10.0.0.77"))
        }
        #expect(
            IPAMError.requestedNotAvailable(ip("10.0.0.77"), rs).description
                == "requested IP address 10.0.0.77 is not available in range set 10.0.0.1-10.0.0.254")
        #expect(throws: IPAMError.requestedIsGateway(ip("10.0.0.1"))) {
            try alloc.allocate(id: "c3", ifname: "eth0", requested: ip("10.0.0.1"))
        }
        #expect(IPAMError.requestedIsGateway(ip("10.0.0.1")).description == "requested ip 10.0.0.1 is subnet's gateway")
        #expect(throws: IPAMError.notInRangeSet(ip("10.0.0.255"), rs)) {
            try alloc.allocate(id: "c4", ifname: "eth0", requested: ip("10.0.0.255"))
        }
    }

    @Test func secondAllocationForTheSameAttachmentIsRefused() throws {
        let store = FakeStore()
        let alloc = try Allocator(rangeSet: set("10.0.0.0/24"), index: 0, store: store)
        let first = try alloc.allocate(id: "c1", ifname: "eth0")
        #expect(throws: IPAMError.duplicateAllocation(first.address.address, containerID: "c1")) {
            try alloc.allocate(id: "c1", ifname: "eth0")
        }
        #expect(
            IPAMError.duplicateAllocation(ip("10.0.0.2"), containerID: "c1").description
                == "10.0.0.2 has been allocated to c1, duplicate allocation is not allowed")
        // Another interface of the same container is another attachment.
        #expect(try alloc.allocate(id: "c1", ifname: "eth1").address.address == ip("10.0.0.3"))
    }

    @Test func oneAddressPerRangeSetWithRequestsRoutedToTheirSet() throws {
        let store = FakeStore()
        let sets = [try set("10.0.0.0/24"), try set("fd00::/64")]
        let got = try Allocator.allocate(
            rangeSets: sets, requested: [ip("fd00::99")], id: "c1", ifname: "eth0", store: store)
        #expect(got.map(\.address) == [cidr("10.0.0.2/24"), cidr("fd00::99/64")])
        #expect(got.map(\.gateway) == [ip("10.0.0.1"), ip("fd00::1")])
        #expect(got.map(\.rangeSetIndex) == [0, 1])
        #expect(store.lastReserved == [0: ip("10.0.0.2"), 1: ip("fd00::99")])
    }

    @Test func requestedAddressFittingNoSetReleasesEverything() throws {
        let store = FakeStore()
        let sets = [try set("10.0.0.0/24"), try set("fd00::/64")]
        #expect(throws: IPAMError.requestedNotAllocated([ip("192.168.0.5"), ip("10.0.0.9")])) {
            // Two requests for one set: the second one is left over too.
            try Allocator.allocate(
                rangeSets: sets, requested: [ip("10.0.0.8"), ip("192.168.0.5"), ip("10.0.0.9")],
                id: "c1", ifname: "eth0", store: store)
        }
        #expect(store.reservedIPs.isEmpty)
        #expect(
            IPAMError.requestedNotAllocated([ip("192.168.0.5"), ip("10.0.0.9")]).description
                == "failed to allocate all requested IPs: 192.168.0.5 10.0.0.9")
    }

    @Test func failureInALaterSetReleasesOnlyWhatThisCallReserved() throws {
        let v6 = try IPRangeSet([IPRange(subnet: cidr("fd00::/64"), rangeStart: ip("fd00::5"), rangeEnd: ip("fd00::5"))]
        )
        let earlier = Reservation(ip: ip("192.168.0.50"), containerID: "c1", ifname: nil)  // legacy, kept
        let store = FakeStore([Reservation(ip: ip("fd00::5"), containerID: "other", ifname: "eth0"), earlier])
        let sets = [try set("10.0.0.0/24"), v6]
        #expect(throws: IPAMError.rangeSetFailed(index: 1, .exhausted(v6))) {
            try Allocator.allocate(rangeSets: sets, requested: [], id: "c1", ifname: "eth0", store: store)
        }
        #expect(store.reservedIPs == [ip("192.168.0.50"), ip("fd00::5")])
        #expect(
            IPAMError.rangeSetFailed(index: 1, .exhausted(v6)).description
                == "failed to allocate for range 1: no IP addresses available in range set: fd00::5-fd00::5")
    }

    @Test func storeErrorsStopTheWalk() throws {
        let store = FakeStore()
        store.failingIPs = [ip("10.0.0.2")]
        let alloc = try Allocator(rangeSet: set("10.0.0.0/24"), index: 0, store: store)
        #expect(throws: IPAMError.system(call: "open", path: "10.0.0.2", errno: 5)) {
            try alloc.allocate(id: "c1", ifname: "eth0")
        }
        #expect(IPAMError.system(call: "open", path: "10.0.0.2", errno: 5).isSystemError)
    }

    @Test func garbageCollectionReleasesOnlyInvalidOwners() throws {
        let store = FakeStore([
            Reservation(ip: ip("10.0.0.2"), containerID: "live", ifname: "eth0"),
            Reservation(ip: ip("10.0.0.3"), containerID: "live", ifname: "eth1"),  // other ifname: stale
            Reservation(ip: ip("10.0.0.4"), containerID: "dead", ifname: "eth0"),
            Reservation(ip: ip("10.0.0.5"), containerID: "live", ifname: nil),  // legacy, container live
            Reservation(ip: ip("10.0.0.6"), containerID: "gone", ifname: nil),  // legacy, container gone
        ])
        let released = try store.releaseAll(notHeldBy: [Reservation.Owner(containerID: "live", ifname: "eth0")])
        #expect(released.map(\.ip).sorted() == ["10.0.0.3", "10.0.0.4", "10.0.0.6"].map(ip))
        #expect(store.reservedIPs == ["10.0.0.2", "10.0.0.5"].map(ip))
        // An empty valid list means nothing is valid.
        try store.releaseAll(notHeldBy: [])
        #expect(store.reservedIPs.isEmpty)
    }
}
