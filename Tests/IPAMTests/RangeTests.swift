// Range and range-set canonicalization: defaults and every error, with the reference's messages.

import Addressing
import IPAM
import Testing

@Suite struct RangeTests {
    @Test func ipv4DefaultsLeaveOutNetworkAndBroadcast() throws {
        let r = try IPRange(subnet: cidr("10.88.0.0/16"))
        #expect(r.rangeStart == ip("10.88.0.1"))
        #expect(r.rangeEnd == ip("10.88.255.254"))
        #expect(r.gateway == ip("10.88.0.1"))
        #expect(r.description == "10.88.0.1-10.88.255.254")
    }

    @Test func ipv6DefaultsIncludeTheAllOnesAddress() throws {
        let r = try IPRange(subnet: cidr("fd00:1::/120"))
        #expect(r.rangeStart == ip("fd00:1::1"))
        #expect(r.rangeEnd == ip("fd00:1::ff"))
        #expect(r.gateway == ip("fd00:1::1"))
    }

    @Test func explicitValuesAreKept() throws {
        let r = try IPRange(
            subnet: cidr("192.168.1.0/24"), rangeStart: ip("192.168.1.100"),
            rangeEnd: ip("192.168.1.200"), gateway: ip("192.168.1.254"))
        #expect(r.rangeStart == ip("192.168.1.100"))
        #expect(r.rangeEnd == ip("192.168.1.200"))
        #expect(r.gateway == ip("192.168.1.254"))
        #expect(r.contains(ip("192.168.1.100")) && r.contains(ip("192.168.1.200")))
        #expect(!r.contains(ip("192.168.1.99")) && !r.contains(ip("192.168.1.201")))
        #expect(!r.contains(ip("::ffff:c0a8:164")))
    }

    @Test func smallestUsableNetworksAreAccepted() throws {
        let v4 = try IPRange(subnet: cidr("10.0.0.0/30"))
        #expect(v4.rangeStart == ip("10.0.0.1") && v4.rangeEnd == ip("10.0.0.2"))
        let v6 = try IPRange(subnet: cidr("fd00::/126"))
        #expect(v6.rangeStart == ip("fd00::1") && v6.rangeEnd == ip("fd00::3"))
    }

    @Test(arguments: ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "fd00::/128"])
    func tooSmallNetworksAreRejected(_ subnet: String) {
        #expect(throws: IPAMError.networkTooSmall(cidr(subnet))) { try IPRange(subnet: cidr(subnet)) }
        #expect(IPAMError.networkTooSmall(cidr(subnet)).description == "Network \(subnet) too small to allocate from")
    }

    @Test func hostBitsAreRejected() {
        #expect(throws: IPAMError.hostBitsSet(prefixLength: 24, network: ip("10.0.0.0"))) {
            try IPRange(subnet: cidr("10.0.0.5/24"))
        }
        #expect(
            IPAMError.hostBitsSet(prefixLength: 24, network: ip("10.0.0.0")).description
                == "Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0")
        #expect(throws: IPAMError.hostBitsSet(prefixLength: 64, network: ip("fd00::"))) {
            try IPRange(subnet: cidr("fd00::1/64"))
        }
    }

    @Test func startAndEndMustBeInsideTheSubnet() {
        let subnet = cidr("10.0.0.0/24")
        #expect(throws: IPAMError.rangeStartOutside(ip("10.0.1.1"), subnet: subnet)) {
            try IPRange(subnet: subnet, rangeStart: ip("10.0.1.1"))
        }
        #expect(throws: IPAMError.rangeEndOutside(ip("10.0.1.1"), subnet: subnet)) {
            try IPRange(subnet: subnet, rangeEnd: ip("10.0.1.1"))
        }
        #expect(throws: IPAMError.rangeStartOutside(ip("fd00::1"), subnet: subnet)) {
            try IPRange(subnet: subnet, rangeStart: ip("fd00::1"))
        }
        #expect(throws: IPAMError.rangeStartAfterEnd(start: ip("10.0.0.20"), end: ip("10.0.0.10"))) {
            try IPRange(subnet: subnet, rangeStart: ip("10.0.0.20"), rangeEnd: ip("10.0.0.10"))
        }
        #expect(
            IPAMError.rangeStartOutside(ip("10.0.1.1"), subnet: subnet).description
                == "RangeStart 10.0.1.1 not in network 10.0.0.0/24")
        #expect(
            IPAMError.rangeEndOutside(ip("10.0.1.1"), subnet: subnet).description
                == "RangeEnd 10.0.1.1 not in network 10.0.0.0/24")
    }

    @Test func gatewayOutsideTheSubnetIsAllowedButNotAnotherFamily() throws {
        // The reference accepts any gateway of the family (some setups route via an outside one).
        let r = try IPRange(subnet: cidr("10.0.0.0/24"), gateway: ip("10.0.5.1"))
        #expect(r.gateway == ip("10.0.5.1"))
        #expect(throws: IPAMError.gatewayFamilyMismatch(gateway: ip("fd00::1"), subnet: cidr("10.0.0.0/24"))) {
            try IPRange(subnet: cidr("10.0.0.0/24"), gateway: ip("fd00::1"))
        }
    }

    @Test func rangeSetErrors() throws {
        #expect(throws: IPAMError.emptyRangeSet) { try IPRangeSet([]) }
        #expect(IPAMError.emptyRangeSet.description == "empty range set")
        let v4 = try IPRange(subnet: cidr("10.0.0.0/24"))
        let v6 = try IPRange(subnet: cidr("fd00::/64"))
        #expect(throws: IPAMError.mixedAddressFamilies) { try IPRangeSet([v4, v6]) }
        #expect(IPAMError.mixedAddressFamilies.description == "mixed address families")
        let inner = try IPRange(subnet: cidr("10.0.0.0/25"))
        #expect(throws: IPAMError.rangesOverlap(v4, inner)) { try IPRangeSet([v4, inner]) }
        #expect(
            IPAMError.rangesOverlap(v4, inner).description
                == "subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap")
    }

    @Test func rangesOfOneSubnetMayShareItIfTheirSlicesAreDisjoint() throws {
        let low = try IPRange(subnet: cidr("10.0.0.0/24"), rangeStart: ip("10.0.0.10"), rangeEnd: ip("10.0.0.19"))
        let high = try IPRange(subnet: cidr("10.0.0.0/24"), rangeStart: ip("10.0.0.20"), rangeEnd: ip("10.0.0.29"))
        let set = try IPRangeSet([low, high])
        #expect(set.description == "10.0.0.10-10.0.0.19,10.0.0.20-10.0.0.29")
        #expect(set.range(for: ip("10.0.0.25")) == high)
        #expect(!set.contains(ip("10.0.0.30")))
    }

    @Test func overlapBetweenRangeSets() throws {
        let a = try IPRangeSet([IPRange(subnet: cidr("10.0.0.0/24"))])
        let b = try IPRangeSet([IPRange(subnet: cidr("fd00::/64"))])
        let c = try IPRangeSet([IPRange(subnet: cidr("10.1.0.0/24")), IPRange(subnet: cidr("10.0.0.128/25"))])
        #expect(!a.overlaps(b))
        #expect(a.overlaps(c) && c.overlaps(a))
        try IPRangeSet.checkDisjoint([a, b])
        #expect(throws: IPAMError.rangeSetsOverlap(0, 2)) { try IPRangeSet.checkDisjoint([a, b, c]) }
        #expect(IPAMError.rangeSetsOverlap(0, 2).description == "range set 0 overlaps with 2")
    }
}
