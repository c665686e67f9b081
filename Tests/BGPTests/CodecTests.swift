// The BGP codec on bytes: the reference's worked messages (accepted by BIRD, FRR and GoBGP)
// encode to exactly those bytes and decode back; every malformed case gives the NOTIFICATION
// RFC 4271 §6 names, or RFC 7606's treat-as-withdraw or attribute discard.

import Addressing
import Foundation
import Testing

@testable import BGP

/// "ffff…ff 0033 01 | 04 fc00" -> bytes; "…" is the 16-octet marker.
func hex(_ text: String) -> [UInt8] {
    let clean = text.replacingOccurrences(of: "ffff…ff", with: String(repeating: "ff", count: 16))
        .filter { $0.isHexDigit }
    var out: [UInt8] = []
    var it = clean.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

func decode(_ bytes: [UInt8], fourOctetAS: Bool = true) throws(BGPNotification) -> BGPMessage {
    try BGPMessage.decode(bytes, fourOctetAS: fourOctetAS)
}

func expectNotification(
    _ bytes: [UInt8], _ code: UInt8, _ subcode: UInt8, data: [UInt8]? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    do {
        let m = try decode(bytes)
        Issue.record("decoded \(m), expected NOTIFICATION \(code)/\(subcode)", sourceLocation: sourceLocation)
    } catch {
        #expect(error.code == code && error.subcode == subcode, "\(error)", sourceLocation: sourceLocation)
        if let data { #expect(error.data == data, "\(error.data)", sourceLocation: sourceLocation) }
    }
}

/// A message with a valid header around `body`.
func message(type: UInt8, _ body: [UInt8]) -> [UInt8] {
    [UInt8](repeating: 0xff, count: 16) + bigEndian(UInt16(19 + body.count)) + [type] + body
}

@Suite struct BGPCodecTests {
    let v4 = BGPFamily.ipv4Unicast, v6 = BGPFamily.ipv6Unicast

    @Test func theReferenceOpenEncodesToItsBytesAndBack() throws {
        var c = BGPSessionConfiguration(localAS: 64512, peerAS: 64512, routerID: 0x0a00_0001)
        c.families = [v4, v6]
        let bytes = hex(
            "ffff…ff 0033 01 04 fc00 005a 0a000001 16 02 14 01 04 0001 00 01 01 04 0002 00 01 02 00 41 04 0000fc00")
        #expect(BGPMessage.open(c.open).encoded() == bytes)
        #expect(try decode(bytes) == .open(c.open))
        guard case .open(let o) = try decode(bytes) else { return }
        #expect(o.families == [v4, v6] && o.supportsFourOctetAS && o.supportsRouteRefresh && o.holdTime == 90)
    }

    @Test func aFourOctetASGoesInCapability65WithASTransInTheHeader() throws {
        let gr = BGPGracefulRestart(
            restarting: false, restartTime: 120,
            families: [(family: v4, forwardingKept: true), (family: v6, forwardingKept: true)])
        let open = BGPOpen(
            asNumber: 4_200_000_001, holdTime: 90, identifier: 0x0a00_0003,
            capabilities: [
                .multiprotocol(v4), .multiprotocol(v6), .routeRefresh, .fourOctetAS(4_200_000_001),
                .gracefulRestart(gr),
            ])
        let bytes = BGPMessage.open(open).encoded()
        #expect(
            bytes[19...]
                == hex(
                    "04 5ba0 005a 0a000003 22 02 20 01 04 0001 00 01 01 04 0002 00 01 02 00 41 04 fa56ea01 40 0a 0078 0001 01 80 0002 01 80"
                )[...])
        guard case .open(let back) = try decode(bytes) else { return }
        #expect(back.asNumber == 4_200_000_001 && back.gracefulRestart == gr)
    }

    @Test func capabilitiesInSeparateParametersAndUnknownOnesAreRead() throws {
        // One parameter per capability (as some speakers send), and FRR's hostname capability 73.
        let body = hex("04 fde8 00b4 0a000002 14 02 06 01 04 0001 00 01 02 06 41 04 0000fde8 02 02 49 00")
        guard case .open(let o) = try decode(message(type: 1, body)) else { return }
        #expect(o.asNumber == 65000 && o.holdTime == 180 && o.families == [v4])
        #expect(o.capabilities.contains(.other(code: 73, value: [])))
    }

    @Test func theReferenceUpdatesEncodeToTheirBytesAndBack() throws {
        var a = BGPPathAttributes()
        a.origin = 0
        a.asPath = []
        a.nextHop = IPAddress("10.0.0.1")
        a.localPref = 100
        let ipv4 = BGPUpdate(attributes: a, nlri: [IPNetwork("10.244.1.0/24")!])
        let ipv4Bytes = hex(
            "ffff…ff 0030 02 0000 0015 40 01 01 00 40 02 00 40 03 04 0a000001 40 05 04 00000064 18 0af401")
        #expect(BGPMessage.update(ipv4).encoded() == ipv4Bytes)
        #expect(try decode(ipv4Bytes) == .update(ipv4))

        var b = BGPPathAttributes()
        b.origin = 0
        b.asPath = []
        b.localPref = 100
        b.mpReach = BGPMPReach(family: v6, nextHops: [IPAddress("fd00::1")!], nlri: [IPNetwork("fd00:244:1::/64")!])
        let ipv6 = BGPUpdate(attributes: b)
        let ipv6Bytes = hex(
            "ffff…ff 0046 02 0000 002f 80 0e 1e 0002 01 10 fd000000000000000000000000000001 00 40 fd00024400010000 40 01 01 00 40 02 00 40 05 04 00000064"
        )
        #expect(BGPMessage.update(ipv6).encoded() == ipv6Bytes)
        #expect(try decode(ipv6Bytes) == .update(ipv6))
        #expect(ipv6.announced == [IPNetwork("fd00:244:1::/64")!])
    }

    @Test func anEBGPPathWithAFourOctetASAndItsTwoOctetForm() throws {
        var a = BGPPathAttributes()
        a.asPath = [.sequence([4_200_000_001])]
        var w = ByteWriter()
        a.encode(into: &w, fourOctetAS: true)
        #expect(w.bytes == hex("40 02 06 02 01 fa56ea01"))
        // To a two-octet speaker: AS_TRANS in AS_PATH, the real AS in AS4_PATH, merged back on receipt.
        var old = ByteWriter()
        a.encode(into: &old, fourOctetAS: false)
        #expect(old.bytes == hex("40 02 04 02 01 5ba0 c0 11 06 02 01 fa56ea01"))
        var problems: [String] = []
        let back = try BGPPathAttributes(decoding: ByteReader(old.bytes), fourOctetAS: false, problems: &problems)
        #expect(problems.isEmpty && back.effectiveASPath == [4_200_000_001])
    }

    /// What BIRD 2.0.12 (Debian's bird2, the reference's §5.2 setup: iBGP route reflector with a
    /// static 10.99.0.0/24 and fd00:99::/64) sent a node after its OPEN and KEEPALIVE, captured on
    /// this machine: its OPEN, KEEPALIVE, an IPv4 UPDATE, End-of-RIB, an IPv6 UPDATE with
    /// MP_REACH (Extended Length set on a short value) and the IPv6 End-of-RIB.
    @Test func aCapturedBIRDSessionDecodes() throws {
        let capture = hex(
            [
                "ffffffffffffffffffffffffffffffff003b0104fc0000f00a0000021e021c0104000100010104000200010200400200",
                "7841040000fc0046004700ffffffffffffffffffffffffffffffff001304ffffffffffffffffffffffffffffffff0030",
                "0200000015400101004002004003040a00000240050400000064180a6300ffffffffffffffffffffffffffffffff0017",
                "0200000000ffffffffffffffffffffffffffffffff00470200000030900e001e00020110fd0000000000000000000000",
                "000000020040fd000099000000004001010040020040050400000064ffffffffffffffffffffffffffffffff001d0200",
                "000006800f03000201",
            ].joined())
        var messages: [BGPMessage] = []
        var at = 0
        while at < capture.count {
            let length = try #require(try BGPMessage.frameLength(capture[at...]))
            messages.append(try BGPMessage.decode(Array(capture[at..<at + length])))
            at += length
        }
        #expect(messages.count == 6)
        guard case .open(let open) = messages[0], case .update(let up4) = messages[2],
            case .update(let eor4) = messages[3], case .update(let up6) = messages[4],
            case .update(let eor6) = messages[5]
        else {
            Issue.record("\(messages)")
            return
        }
        #expect(open.asNumber == 64512 && open.holdTime == 240 && open.identifier == 0x0a00_0002)
        #expect(open.families == [v4, v6] && open.supportsFourOctetAS && open.supportsRouteRefresh)
        #expect(open.gracefulRestart == BGPGracefulRestart(restarting: false, restartTime: 120, families: []))
        #expect(
            open.capabilities.contains(.enhancedRouteRefresh) && open.capabilities.contains(.other(code: 71, value: []))
        )
        #expect(messages[1] == .keepalive)
        #expect(up4.announced == [IPNetwork("10.99.0.0/24")!] && up4.attributes.nextHop == IPAddress("10.0.0.2"))
        #expect(up4.attributes.localPref == 100 && up4.attributes.asPath == [] && up4.attributes.origin == 0)
        #expect(eor4.endOfRIB == v4 && eor6.endOfRIB == v6)
        #expect(
            up6.announced == [IPNetwork("fd00:99::/64")!] && up6.attributes.mpReach?.nextHops == [IPAddress("fd00::2")!]
        )
        // Re-encoded, the UPDATEs are BIRD's bytes again (our encoder drops only the needless
        // Extended Length flag of the IPv6 one).
        #expect(BGPMessage.update(up4).encoded() == Array(capture[0x4e..<0x4e + 0x30]))
    }

    @Test func notificationKeepaliveAndRouteRefreshRoundTrip() throws {
        let cease = BGPMessage.notification(BGPNotification(.cease, 2))
        #expect(cease.encoded() == hex("ffff…ff 0015 03 06 02"))
        for m in [cease, .keepalive, .routeRefresh(BGPRouteRefresh(family: v6))] {
            #expect(try decode(m.encoded()) == m)
        }
        let shutdown = BGPNotification(.cease, 2, data: [5] + Array("maint".utf8))
        #expect(shutdown.description == "Cease/Administrative Shutdown (6/2): \"maint\"")
    }

    @Test func endOfRIBForBothFamilies() throws {
        #expect(BGPMessage.update(.endOfRIB(v4)).encoded() == hex("ffff…ff 0017 02 0000 0000"))
        #expect(BGPMessage.update(.endOfRIB(v6)).encoded() == hex("ffff…ff 001d 02 0000 0006 800f03 0002 01"))
        for f in [v4, v6] {
            guard case .update(let u) = try decode(BGPMessage.update(.endOfRIB(f)).encoded()) else { return }
            #expect(u.endOfRIB == f)
        }
        var a = BGPPathAttributes()
        a.mpUnreach = BGPMPUnreach(family: v6, withdrawn: [IPNetwork("fd00:244:1::/64")!])
        #expect(BGPUpdate(attributes: a).endOfRIB == nil)
    }

    @Test func malformedHeadersAndMessages() {
        var bad = BGPMessage.keepalive.encoded()
        bad[3] = 0xfe
        expectNotification(bad, 1, 1)  // Connection Not Synchronized
        expectNotification(message(type: 4, [0]), 1, 2, data: [0, 20])  // KEEPALIVE of 20 octets
        expectNotification([UInt8](repeating: 0xff, count: 16) + [0x10, 0x01, 4], 1, 2, data: [0x10, 0x01])
        expectNotification(message(type: 9, []), 1, 3, data: [9])  // Bad Message Type
        expectNotification(message(type: 2, [0, 0]), 1, 2)  // UPDATE under 23 octets
        #expect(throws: BGPNotification(.messageHeader, 2, data: [0, 18])) {
            try BGPMessage.frameLength([UInt8](repeating: 0xff, count: 16) + [0, 18, 4])
        }
        #expect(try! BGPMessage.frameLength([UInt8](repeating: 0xff, count: 10)) == nil)
    }

    @Test func malformedOpens() {
        let good = "fc00 005a 0a000001 00"
        expectNotification(message(type: 1, hex("03 " + good)), 2, 1, data: [0, 4])  // version 3
        expectNotification(message(type: 1, hex("04 fc00 0002 0a000001 00")), 2, 6)  // hold time 2
        expectNotification(message(type: 1, hex("04 fc00 005a 00000000 00")), 2, 3)  // identifier 0
        expectNotification(message(type: 1, hex("04 fc00 005a 0a000001 03 01 01 00")), 2, 4)  // parameter type 1
        expectNotification(message(type: 1, hex("04 fc00 005a 0a000001 04 02 02 41 04")), 2, 0)  // capability overruns
    }

    @Test func updatesThatResetTheSession() {
        let origin = "40 01 01 00 40 02 00 40 03 04 0a000001"
        // Withdrawn Routes Length past the message.
        expectNotification(message(type: 2, hex("0010 0000")), 3, 1)
        // An unrecognised well-known attribute (flags 0x40, type 99): 3/2 with the attribute as data.
        expectNotification(message(type: 2, hex("0000 0005 40 63 02 abcd")), 3, 2, data: hex("40 63 02 abcd"))
        // NLRI: a /33, and a /24 with one octet.
        expectNotification(message(type: 2, hex("0000 000e " + origin + " 21 0af40100 00")), 3, 10)
        expectNotification(message(type: 2, hex("0000 000e " + origin + " 18 0a")), 3, 10)
        // MP_REACH: an IPv6 /129, and a next hop of 5 octets.
        expectNotification(
            message(type: 2, hex("0000 0019 80 0e 16 0002 01 10 fd000000000000000000000000000001 00 81")), 3, 9)
        expectNotification(message(type: 2, hex("0000 000d 80 0e 0a 0002 01 05 fd00000000 00")), 3, 9)
        // Two MP_UNREACH.
        expectNotification(message(type: 2, hex("0000 000c 80 0f 03 0002 01 80 0f 03 0002 01")), 3, 1)
    }

    @Test func updatesTreatedAsWithdrawKeepTheSession() throws {
        let prefix = IPNetwork("10.244.1.0/24")!
        // No NEXT_HOP with IPv4 NLRI.
        guard case .update(let noHop) = try decode(message(type: 2, hex("0000 0007 40 01 01 00 40 02 00 18 0af401")))
        else { return }
        #expect(
            noHop.treatAsWithdraw == "missing NEXT_HOP" && noHop.announced.isEmpty && noHop.allWithdrawn == [prefix])
        // ORIGIN 5; an attribute that overruns the attribute list.
        guard
            case .update(let badOrigin) = try decode(
                message(type: 2, hex("0000 000e 40 01 01 05 40 02 00 40 03 04 0a000001 18 0af401")))
        else { return }
        #expect(badOrigin.treatAsWithdraw?.hasPrefix("malformed ORIGIN") == true && badOrigin.announced.isEmpty)
        guard case .update(let overrun) = try decode(message(type: 2, hex("0000 0004 40 02 09 02 18 0af401")))
        else { return }
        #expect(overrun.treatAsWithdraw != nil)
    }

    @Test func attributesDiscardedKeptOrDroppedAsTheRFCsSay() throws {
        let base = "40 01 01 00 50 02 0000 40 03 04 0a000001"  // FRR's AS_PATH with Extended Length
        // A bad AGGREGATOR (5 octets), a repeated ORIGIN, an unknown optional transitive (type 99)
        // and an unknown optional non-transitive (type 98).
        let extra = "c0 07 05 0000fde800 40 01 01 02 c0 63 01 07 80 62 01 08"
        let attrs = hex(base + " " + extra)
        let body = hex("0000") + bigEndian(UInt16(truncatingIfNeeded: attrs.count)) + attrs + hex("18 0af401")
        guard case .update(let u) = try decode(message(type: 2, body)) else { return }
        #expect(u.treatAsWithdraw == nil && u.announced == [IPNetwork("10.244.1.0/24")!])
        #expect(u.attributes.aggregator == nil && u.attributes.origin == 0 && u.attributes.asPath == [])
        #expect(u.attributes.unrecognised == [BGPRawAttribute(flags: 0xe0, type: 99, value: [7])])
    }

    @Test func prefixesMaskTheirTrailingBitsAndLongAttributesUseExtendedLength() throws {
        var r = ByteReader(hex("18 0af401 00 20 0af40107"))
        #expect(
            try decodePrefixes(&r, family: .v4).map(\.description) == ["10.244.1.0/24", "0.0.0.0/0", "10.244.1.7/32"])
        var sloppy = ByteReader(hex("17 0af401"))  // a /23 with its last bit set
        #expect(try decodePrefixes(&sloppy, family: .v4) == [IPNetwork("10.244.0.0/23")!])
        var a = BGPPathAttributes()
        a.communities = Array(0..<100)
        var w = ByteWriter()
        a.encode(into: &w, fourOctetAS: true)
        #expect(Array(w.bytes.prefix(4)) == [0xd0, 8, 0x01, 0x90])  // 400 octets: a two-octet length
    }
}
