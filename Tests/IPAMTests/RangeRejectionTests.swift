// The ranges Go's host-local cannot allocate from, refused by IPRange itself in Go's order of
// checks (issue 8 item 14).

import Addressing
import IPAM
import Testing

@Suite struct RangeRejectionTests {
    @Test func rangeChecksInGosOrder() throws {
        #expect(throws: IPAMError.unspecifiedNetwork(cidr("0.0.0.0/0"))) { try IPRange(subnet: cidr("0.0.0.0/0")) }
        #expect(throws: IPAMError.unspecifiedNetwork(cidr("::/0"))) {
            try IPRange(
                subnet: cidr("::/0"), rangeStart: ip("fd00::5"), rangeEnd: ip("fd00::9"), gateway: ip("fd00::1"))
        }
        #expect(throws: IPAMError.ipv4MappedNetwork(cidr("::ffff:10.1.0.0/120"))) {
            try IPRange(subnet: cidr("::ffff:10.1.0.0/120"))
        }
        // Too small comes first, as in Go; host bits come before the unspecified check.
        #expect(throws: IPAMError.networkTooSmall(cidr("::ffff:10.1.0.0/127"))) {
            try IPRange(subnet: cidr("::ffff:10.1.0.0/127"))
        }
        #expect(throws: IPAMError.hostBitsSet(prefixLength: 0, network: ip("0.0.0.0"))) {
            try IPRange(subnet: cidr("0.0.0.1/0"))
        }
        // Neighbours stay valid: 128.0.0.0/1, and ::ffff:0:0 as part of a wider v6 subnet.
        #expect(try IPRange(subnet: cidr("128.0.0.0/1")).rangeStart == ip("128.0.0.1"))
        #expect(try IPRange(subnet: cidr("::fffe:0:0/96")).rangeStart == ip("::fffe:0:1"))
    }
}
