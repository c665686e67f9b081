// UPDATE (RFC 4271 §4.3) with IPv4 routes in the NLRI fields and IPv6 ones in MP_REACH_NLRI /
// MP_UNREACH_NLRI (RFC 4760), read with RFC 7606's revised error handling:
//
// - what cannot be framed (withdrawn routes or attributes running past the message, an NLRI
//   field that does not parse, a malformed or repeated MP_REACH/MP_UNREACH, an unrecognised
//   well-known attribute) resets the session: the NOTIFICATION RFC 4271 §6.3 names is thrown;
// - a malformed ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES, ORIGINATOR_ID or
//   CLUSTER_LIST, or a missing well-known mandatory attribute, makes the UPDATE
//   "treat-as-withdraw": its prefixes are withdrawn, the session stays (`treatAsWithdraw` says why);
// - a malformed ATOMIC_AGGREGATE or AGGREGATOR is discarded, as is a repeated attribute;
// - an unrecognised optional attribute is kept if transitive (with Partial set), else dropped.
//
// Prefixes are a length in bits and the fewest octets that hold it; trailing bits are masked.

import Addressing

public struct BGPUpdate: Equatable, Sendable {
    /// IPv4 prefixes withdrawn in the Withdrawn Routes field.
    public var withdrawn: [IPNetwork]
    public var attributes: BGPPathAttributes
    /// IPv4 prefixes announced in the NLRI field.
    public var nlri: [IPNetwork]
    /// Why the UPDATE is treated as a withdrawal of all its prefixes (RFC 7606), nil when it is not.
    public var treatAsWithdraw: String?

    public init(
        withdrawn: [IPNetwork] = [], attributes: BGPPathAttributes = BGPPathAttributes(), nlri: [IPNetwork] = []
    ) {
        self.withdrawn = withdrawn
        self.attributes = attributes
        self.nlri = nlri
    }

    /// End-of-RIB for `family` (RFC 4724 §2): an empty UPDATE for IPv4, an empty MP_UNREACH else.
    public static func endOfRIB(_ family: BGPFamily) -> BGPUpdate {
        var u = BGPUpdate()
        if family != .ipv4Unicast { u.attributes.mpUnreach = BGPMPUnreach(family: family, withdrawn: []) }
        return u
    }

    /// The family this UPDATE ends the initial routes of, if it is an End-of-RIB marker.
    public var endOfRIB: BGPFamily? {
        guard withdrawn.isEmpty, nlri.isEmpty, treatAsWithdraw == nil else { return nil }
        var a = attributes
        if a == BGPPathAttributes() { return .ipv4Unicast }
        guard let un = a.mpUnreach, un.withdrawn.isEmpty else { return nil }
        a.mpUnreach = nil
        return a == BGPPathAttributes() ? un.family : nil
    }

    /// The prefixes announced (IPv4 NLRI and MP_REACH), none when treated as withdraw.
    public var announced: [IPNetwork] {
        treatAsWithdraw != nil ? [] : nlri + (attributes.mpReach?.nlri ?? [])
    }

    /// The prefixes withdrawn, including those of a treat-as-withdraw UPDATE's announcements.
    public var allWithdrawn: [IPNetwork] {
        var out = withdrawn + (attributes.mpUnreach?.withdrawn ?? [])
        if treatAsWithdraw != nil { out += nlri + (attributes.mpReach?.nlri ?? []) }
        return out
    }

    init(decoding body: ByteReader, fourOctetAS: Bool) throws(BGPNotification) {
        var r = body
        let malformedList = BGPNotification(.updateMessage, 1)
        guard let withdrawnLength = try? r.u16(), var withdrawnField = try? r.sub(Int(withdrawnLength)) else {
            throw malformedList
        }
        guard let attributesLength = try? r.u16(), let attributeField = try? r.sub(Int(attributesLength)) else {
            throw malformedList
        }
        var nlriField = r
        do {
            withdrawn = try decodePrefixes(&withdrawnField, family: .v4)
            nlri = try decodePrefixes(&nlriField, family: .v4)
        } catch {
            throw BGPNotification(.updateMessage, 10)  // Invalid Network Field
        }
        var problems: [String] = []
        attributes = try BGPPathAttributes(decoding: attributeField, fourOctetAS: fourOctetAS, problems: &problems)
        if !nlri.isEmpty {
            for (present, name) in [
                (attributes.origin != nil, "ORIGIN"), (attributes.asPath != nil, "AS_PATH"),
                (attributes.nextHop != nil, "NEXT_HOP"),
            ] where !present {
                problems.append("missing \(name)")
            }
        }
        if attributes.mpReach.map({ !$0.nlri.isEmpty }) == true {
            for (present, name) in [(attributes.origin != nil, "ORIGIN"), (attributes.asPath != nil, "AS_PATH")]
            where !present {
                problems.append("missing \(name)")
            }
        }
        treatAsWithdraw = problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    func encode(into w: inout ByteWriter, fourOctetAS: Bool) {
        var withdrawnField = ByteWriter()
        for p in withdrawn { encodePrefix(p, into: &withdrawnField) }
        var attributeField = ByteWriter()
        attributes.encode(into: &attributeField, fourOctetAS: fourOctetAS)
        w.u16(UInt16(truncatingIfNeeded: withdrawnField.bytes.count))
        w.append(withdrawnField.bytes)
        w.u16(UInt16(truncatingIfNeeded: attributeField.bytes.count))
        w.append(attributeField.bytes)
        for p in nlri { encodePrefix(p, into: &w) }
    }
}

/// One AS_PATH segment: 1 AS_SET, 2 AS_SEQUENCE (3 and 4 are confederation segments).
public struct BGPASPathSegment: Equatable, Sendable {
    public var type: UInt8
    public var asNumbers: [UInt32]

    public init(type: UInt8, asNumbers: [UInt32]) {
        self.type = type
        self.asNumbers = asNumbers
    }

    public static func sequence(_ asNumbers: [UInt32]) -> Self { Self(type: 2, asNumbers: asNumbers) }
}

/// MP_REACH_NLRI: a family, its next hop (16 octets, or 32 with a link-local for IPv6) and prefixes.
public struct BGPMPReach: Equatable, Sendable {
    public var family: BGPFamily
    /// The next hops as sent: for IPv6 the global address, then a link-local one if present.
    public var nextHops: [IPAddress]
    public var nlri: [IPNetwork]

    public init(family: BGPFamily, nextHops: [IPAddress], nlri: [IPNetwork]) {
        self.family = family
        self.nextHops = nextHops
        self.nlri = nlri
    }
}

public struct BGPMPUnreach: Equatable, Sendable {
    public var family: BGPFamily
    public var withdrawn: [IPNetwork]

    public init(family: BGPFamily, withdrawn: [IPNetwork]) {
        self.family = family
        self.withdrawn = withdrawn
    }
}

public struct BGPAggregator: Equatable, Sendable {
    public var asNumber: UInt32
    public var address: IPAddress
}

/// An attribute this decoder does not model, kept as sent (flags, type, value).
public struct BGPRawAttribute: Equatable, Sendable {
    public var flags: UInt8
    public var type: UInt8
    public var value: [UInt8]
}

public struct BGPPathAttributes: Equatable, Sendable {
    /// 0 IGP, 1 EGP, 2 INCOMPLETE.
    public var origin: UInt8?
    public var asPath: [BGPASPathSegment]?
    public var nextHop: IPAddress?
    public var multiExitDisc: UInt32?
    public var localPref: UInt32?
    public var atomicAggregate = false
    public var aggregator: BGPAggregator?
    public var communities: [UInt32] = []
    public var originatorID: UInt32?
    public var clusterList: [UInt32] = []
    public var mpReach: BGPMPReach?
    public var mpUnreach: BGPMPUnreach?
    /// AS4_PATH from a two-octet speaker (RFC 6793): see `effectiveASPath`.
    public var as4Path: [BGPASPathSegment]?
    /// Unrecognised optional transitive attributes, passed on with Partial set.
    public var unrecognised: [BGPRawAttribute] = []

    public init() {}

    /// The AS numbers of the path in order (sets flattened), with AS4_PATH merged as RFC 6793
    /// §4.2.3 says: the leading ASes of AS_PATH, then AS4_PATH.
    public var effectiveASPath: [UInt32] {
        let path = (asPath ?? []).flatMap(\.asNumbers)
        guard let four = as4Path?.flatMap(\.asNumbers), four.count <= path.count else { return path }
        return Array(path.prefix(path.count - four.count)) + four
    }

    // MARK: Decoding

    private static let flagOptional: UInt8 = 0x80, flagTransitive: UInt8 = 0x40, flagPartial: UInt8 = 0x20,
        flagExtended: UInt8 = 0x10

    init(decoding field: ByteReader, fourOctetAS: Bool, problems: inout [String]) throws(BGPNotification) {
        self.init()
        var r = field
        var seen: Set<UInt8> = []
        while !r.isAtEnd {
            guard let flags = try? r.u8(), let type = try? r.u8() else {
                problems.append("an attribute header runs past the attributes")
                return
            }
            let extended = flags & Self.flagExtended != 0
            guard let length = extended ? (try? r.u16()).map(Int.init) : (try? r.u8()).map(Int.init),
                let value = try? r.sub(length)
            else {
                // RFC 7606 §4: an attribute that overruns the attributes: treat-as-withdraw.
                problems.append("attribute \(type) runs past the attributes")
                return
            }
            if type == 14 || type == 15 {
                guard seen.insert(type).inserted else {
                    throw BGPNotification(.updateMessage, 1)  // a second MP_REACH/MP_UNREACH
                }
            } else if !seen.insert(type).inserted {
                continue  // RFC 7606 §3 (g): a repeated attribute is discarded
            }
            try decodeAttribute(flags: flags, type: type, value: value, fourOctetAS: fourOctetAS, problems: &problems)
        }
    }

    private mutating func decodeAttribute(
        flags: UInt8, type: UInt8, value: ByteReader, fourOctetAS: Bool, problems: inout [String]
    ) throws(BGPNotification) {
        let optional = flags & Self.flagOptional != 0, transitive = flags & Self.flagTransitive != 0
        let wellKnown: Set<UInt8> = [1, 2, 3, 5, 6]
        let optionalKnown: [UInt8: Bool] = [
            4: false, 7: true, 8: true, 9: false, 10: false, 14: false, 15: false, 17: true,
        ]
        // The flags must match the type: well-known attributes are transitive and not optional.
        let flagsRight: Bool
        if wellKnown.contains(type) {
            flagsRight = !optional && transitive
        } else if let t = optionalKnown[type] {
            flagsRight = optional && transitive == t
        } else {
            flagsRight = true
        }
        var v = value
        func u32(_ name: String) -> UInt32? {
            guard v.remaining == 4, let n = try? v.u32() else {
                problems.append("malformed \(name)")
                return nil
            }
            return n
        }
        func u32s(_ name: String) -> [UInt32] {
            guard v.remaining % 4 == 0 else {
                problems.append("malformed \(name)")
                return []
            }
            var out: [UInt32] = []
            while let n = try? v.u32() { out.append(n) }
            return out
        }
        switch type {
        case 1:
            guard flagsRight, v.remaining == 1, let o = try? v.u8(), o <= 2 else {
                problems.append("malformed ORIGIN")
                return
            }
            origin = o
        case 2, 17:
            guard flagsRight, let path = decodeASPath(&v, wide: type == 17 || fourOctetAS) else {
                problems.append(type == 2 ? "malformed AS_PATH" : "malformed AS4_PATH")
                return
            }
            if type == 2 {
                asPath = path
            } else if !fourOctetAS {
                as4Path = path  // RFC 6793 §4.1: from a four-octet peer it is discarded
            }
        case 3:
            guard flagsRight, let n = u32("NEXT_HOP") else {
                if !flagsRight { problems.append("malformed NEXT_HOP") }
                return
            }
            nextHop = IPAddress(family: .v4, value: UInt128(n))
        case 4:
            guard flagsRight else { return problems.append("malformed MULTI_EXIT_DISC") }
            multiExitDisc = u32("MULTI_EXIT_DISC")
        case 5:
            guard flagsRight else { return problems.append("malformed LOCAL_PREF") }
            localPref = u32("LOCAL_PREF")
        case 6:
            atomicAggregate = flagsRight && v.remaining == 0  // else discarded
        case 7:
            let asLength = fourOctetAS ? 4 : 2
            guard flagsRight, v.remaining == asLength + 4 else { return }  // discarded
            let asNumber = asLength == 4 ? (try? v.u32()) ?? 0 : UInt32((try? v.u16()) ?? 0)
            aggregator = BGPAggregator(
                asNumber: asNumber, address: IPAddress(family: .v4, value: UInt128((try? v.u32()) ?? 0)))
        case 8:
            guard flagsRight else { return problems.append("malformed COMMUNITIES") }
            communities = u32s("COMMUNITIES")
        case 9:
            guard flagsRight else { return problems.append("malformed ORIGINATOR_ID") }
            originatorID = u32("ORIGINATOR_ID")
        case 10:
            guard flagsRight else { return problems.append("malformed CLUSTER_LIST") }
            clusterList = u32s("CLUSTER_LIST")
        case 14:
            guard flagsRight, let reach = decodeMPReach(&v) else {
                throw BGPNotification(.updateMessage, 9)  // Optional Attribute Error: session reset
            }
            mpReach = reach
        case 15:
            guard flagsRight, let afi = try? v.u16(), let safi = try? v.u8() else {
                throw BGPNotification(.updateMessage, 9)
            }
            let family = BGPFamily(afi: afi, safi: safi)
            guard let ip = family.ipFamily, let prefixes = try? decodePrefixes(&v, family: ip) else {
                throw BGPNotification(.updateMessage, 9)
            }
            mpUnreach = BGPMPUnreach(family: family, withdrawn: prefixes)
        default:
            if !optional {
                // An unrecognised well-known attribute: the data is the attribute itself.
                var w = ByteWriter()
                encodeAttribute(flags: flags, type: type, value.remainingBytes, into: &w)
                throw BGPNotification(.updateMessage, 2, data: w.bytes)
            }
            if transitive {
                unrecognised.append(BGPRawAttribute(flags: flags | Self.flagPartial, type: type, value: v.rest()))
            }
        }
    }

    private func decodeASPath(_ v: inout ByteReader, wide: Bool) -> [BGPASPathSegment]? {
        var segments: [BGPASPathSegment] = []
        while !v.isAtEnd {
            guard let type = try? v.u8(), (1...4).contains(type), let count = try? v.u8(), count > 0 else { return nil }
            var numbers: [UInt32] = []
            for _ in 0..<count {
                guard let n = wide ? try? v.u32() : (try? v.u16()).map(UInt32.init) else { return nil }
                numbers.append(n)
            }
            segments.append(BGPASPathSegment(type: type, asNumbers: numbers))
        }
        return segments
    }

    private func decodeMPReach(_ v: inout ByteReader) -> BGPMPReach? {
        guard let afi = try? v.u16(), let safi = try? v.u8(), let hopLength = try? v.u8(),
            let hops = try? v.bytes(Int(hopLength)), (try? v.u8()) != nil
        else { return nil }
        let family = BGPFamily(afi: afi, safi: safi)
        guard let ip = family.ipFamily else { return nil }
        let width = ip == .v4 ? 4 : 16
        // IPv4: 4 octets; IPv6: 16, or 32 with a link-local address (RFC 2545 §3).
        guard hops.count == width || (ip == .v6 && hops.count == 32) else { return nil }
        let nextHops = stride(from: 0, to: hops.count, by: width).compactMap {
            IPAddress(bytes: Array(hops[$0..<$0 + width]))
        }
        guard let prefixes = try? decodePrefixes(&v, family: ip) else { return nil }
        return BGPMPReach(family: family, nextHops: nextHops, nlri: prefixes)
    }

    // MARK: Encoding

    /// The attributes in the order RFC 7606 §5.1 asks: MP_REACH/MP_UNREACH first, then by type.
    func encode(into w: inout ByteWriter, fourOctetAS: Bool) {
        if let reach = mpReach {
            var v = ByteWriter()
            v.u16(reach.family.afi); v.u8(reach.family.safi)
            let hops = reach.nextHops.flatMap(\.bytes)
            v.u8(UInt8(truncatingIfNeeded: hops.count)); v.append(hops); v.u8(0)
            for p in reach.nlri { encodePrefix(p, into: &v) }
            encodeAttribute(flags: Self.flagOptional, type: 14, v.bytes, into: &w)
        }
        if let un = mpUnreach {
            var v = ByteWriter()
            v.u16(un.family.afi); v.u8(un.family.safi)
            for p in un.withdrawn { encodePrefix(p, into: &v) }
            encodeAttribute(flags: Self.flagOptional, type: 15, v.bytes, into: &w)
        }
        let wellKnown = Self.flagTransitive
        if let origin { encodeAttribute(flags: wellKnown, type: 1, [origin], into: &w) }
        if let asPath {
            // To a two-octet speaker: AS_TRANS for what does not fit, the real path in AS4_PATH.
            encodeAttribute(flags: wellKnown, type: 2, Self.encodeASPath(asPath, wide: fourOctetAS), into: &w)
            if !fourOctetAS, asPath.contains(where: { $0.asNumbers.contains { $0 > UInt32(UInt16.max) } }) {
                encodeAttribute(
                    flags: Self.flagOptional | Self.flagTransitive, type: 17, Self.encodeASPath(asPath, wide: true),
                    into: &w)
            }
        }
        if let nextHop, nextHop.family == .v4 { encodeAttribute(flags: wellKnown, type: 3, nextHop.bytes, into: &w) }
        if let multiExitDisc { encodeAttribute(flags: Self.flagOptional, type: 4, bigEndian(multiExitDisc), into: &w) }
        if let localPref { encodeAttribute(flags: wellKnown, type: 5, bigEndian(localPref), into: &w) }
        if atomicAggregate { encodeAttribute(flags: wellKnown, type: 6, [], into: &w) }
        if let aggregator {
            let asBytes =
                fourOctetAS
                ? bigEndian(aggregator.asNumber)
                : bigEndian(
                    aggregator.asNumber > UInt32(UInt16.max)
                        ? BGPOpen.asTrans : UInt16(truncatingIfNeeded: aggregator.asNumber))
            encodeAttribute(
                flags: Self.flagOptional | Self.flagTransitive, type: 7, asBytes + aggregator.address.bytes, into: &w)
        }
        if !communities.isEmpty {
            encodeAttribute(
                flags: Self.flagOptional | Self.flagTransitive, type: 8, communities.flatMap(bigEndian), into: &w)
        }
        if let originatorID { encodeAttribute(flags: Self.flagOptional, type: 9, bigEndian(originatorID), into: &w) }
        if !clusterList.isEmpty {
            encodeAttribute(flags: Self.flagOptional, type: 10, clusterList.flatMap(bigEndian), into: &w)
        }
        for a in unrecognised { encodeAttribute(flags: a.flags, type: a.type, a.value, into: &w) }
    }

    static func encodeASPath(_ segments: [BGPASPathSegment], wide: Bool) -> [UInt8] {
        var v = ByteWriter()
        for s in segments {
            // A segment holds at most 255 ASes: longer ones are split.
            for start in stride(from: 0, to: s.asNumbers.count, by: 255) {
                let chunk = s.asNumbers[start..<min(start + 255, s.asNumbers.count)]
                v.u8(s.type)
                v.u8(UInt8(truncatingIfNeeded: chunk.count))
                for n in chunk {
                    if wide {
                        v.u32(n)
                    } else {
                        v.u16(n > UInt32(UInt16.max) ? BGPOpen.asTrans : UInt16(truncatingIfNeeded: n))
                    }
                }
            }
        }
        return v.bytes
    }
}

/// Flags, type, a length of one octet (two with Extended Length, set for values over 255), value.
func encodeAttribute(flags: UInt8, type: UInt8, _ value: [UInt8], into w: inout ByteWriter) {
    let extended = value.count > 255 || flags & 0x10 != 0
    w.u8(extended ? flags | 0x10 : flags & ~0x10)
    w.u8(type)
    if extended { w.u16(UInt16(truncatingIfNeeded: value.count)) } else { w.u8(UInt8(truncatingIfNeeded: value.count)) }
    w.append(value)
}

/// Prefixes until the end of `r`; a length over the family's width or a prefix past the end throws.
func decodePrefixes(_ r: inout ByteReader, family: IPFamily) throws -> [IPNetwork] {
    struct Invalid: Error {}
    var out: [IPNetwork] = []
    while !r.isAtEnd {
        let length = Int(try r.u8())
        guard length <= family.bitWidth else { throw Invalid() }
        let octets = try r.bytes((length + 7) / 8)
        let full = octets + [UInt8](repeating: 0, count: family.bitWidth / 8 - octets.count)
        guard let address = IPAddress(bytes: full), let network = IPNetwork(address: address, prefixLength: length)
        else { throw Invalid() }
        out.append(network.network)  // trailing bits are masked
    }
    return out
}

func encodePrefix(_ p: IPNetwork, into w: inout ByteWriter) {
    w.u8(UInt8(truncatingIfNeeded: p.prefixLength))
    w.append(Array(p.network.address.bytes.prefix((p.prefixLength + 7) / 8)))
}
