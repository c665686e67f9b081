// BGP-4 messages on the wire (RFC 4271 §4), decoded from and encoded to bytes. Pure: no I/O,
// no NIO; the session layer frames the TCP stream with `BGPMessage.frameLength` and hands each
// whole message here.
//
// Every message starts with a 19-octet header: a marker of sixteen 0xff octets, the length of the
// whole message (19...4096, or 65535 once RFC 8654 extended messages are negotiated) and the
// type. A message that cannot be decoded is a `BGPNotification`: the error code, subcode and data
// the RFC tells the receiver to send before it closes the connection.

import Addressing

/// One BGP message.
public enum BGPMessage: Equatable, Sendable {
    case open(BGPOpen)
    case update(BGPUpdate)
    case notification(BGPNotification)
    case keepalive
    case routeRefresh(BGPRouteRefresh)

    public static let headerLength = 19
    /// The largest message without RFC 8654's extended messages.
    public static let maximumLength = 4096

    /// The type octet of the header.
    public var type: UInt8 {
        switch self {
        case .open: 1
        case .update: 2
        case .notification: 3
        case .keepalive: 4
        case .routeRefresh: 5
        }
    }

    /// The length of the message at the start of `bytes`, once its header has arrived (nil
    /// before); a header that is not BGP's is the NOTIFICATION to send.
    public static func frameLength(
        _ bytes: some Collection<UInt8>, maximum: Int = maximumLength
    ) throws(BGPNotification) -> Int? {
        guard bytes.count >= headerLength else { return nil }
        var r = ByteReader(Array(bytes.prefix(headerLength)))
        guard (try? r.bytes(16))?.allSatisfy({ $0 == 0xff }) == true else {
            throw BGPNotification(.messageHeader, 1)  // Connection Not Synchronized
        }
        let length = Int((try? r.u16()) ?? 0)
        guard length >= headerLength, length <= maximum else {
            throw BGPNotification(.messageHeader, 2, data: bigEndian(UInt16(truncatingIfNeeded: length)))
        }
        return length
    }

    /// Decodes one whole message (header included). `fourOctetAS` says how the UPDATE's AS_PATH is
    /// encoded: true once both OPENs carried capability 65.
    public static func decode(
        _ bytes: [UInt8], fourOctetAS: Bool = true, maximum: Int = maximumLength
    ) throws(BGPNotification) -> BGPMessage {
        guard let length = try frameLength(bytes, maximum: maximum), length == bytes.count else {
            throw BGPNotification(.messageHeader, 2, data: bigEndian(UInt16(truncatingIfNeeded: bytes.count)))
        }
        let type = bytes[18]
        let body = ByteReader(Array(bytes[headerLength...]))
        func badLength() -> BGPNotification {
            BGPNotification(.messageHeader, 2, data: bigEndian(UInt16(truncatingIfNeeded: length)))
        }
        switch type {
        case 1:
            guard length >= 29 else { throw badLength() }
            return .open(try BGPOpen(decoding: body))
        case 2:
            guard length >= 23 else { throw badLength() }
            return .update(try BGPUpdate(decoding: body, fourOctetAS: fourOctetAS))
        case 3:
            guard length >= 21 else { throw badLength() }
            return .notification(BGPNotification(decoding: body))
        case 4:
            guard length == headerLength else { throw badLength() }
            return .keepalive
        case 5:
            guard length == 23 else { throw badLength() }
            return .routeRefresh(BGPRouteRefresh(decoding: body))
        default:
            throw BGPNotification(.messageHeader, 3, data: [type])  // Bad Message Type
        }
    }

    /// The message's bytes, header included.
    public func encoded(fourOctetAS: Bool = true) -> [UInt8] {
        var w = ByteWriter()
        switch self {
        case .open(let o): o.encode(into: &w)
        case .update(let u): u.encode(into: &w, fourOctetAS: fourOctetAS)
        case .notification(let n): n.encode(into: &w)
        case .keepalive: break
        case .routeRefresh(let r): r.encode(into: &w)
        }
        let length = Self.headerLength + w.bytes.count
        return [UInt8](repeating: 0xff, count: 16) + bigEndian(UInt16(truncatingIfNeeded: length)) + [type] + w.bytes
    }
}

/// A NOTIFICATION (RFC 4271 §4.5): also what a decoder throws, the message to send back before
/// closing the connection.
public struct BGPNotification: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: UInt8, Sendable {
        case messageHeader = 1, openMessage, updateMessage, holdTimerExpired, finiteStateMachine, cease,
            routeRefresh
    }

    public var code: UInt8
    public var subcode: UInt8
    public var data: [UInt8]

    public init(_ code: Code, _ subcode: UInt8, data: [UInt8] = []) {
        self.init(code: code.rawValue, subcode: subcode, data: data)
    }

    public init(code: UInt8, subcode: UInt8, data: [UInt8] = []) {
        self.code = code
        self.subcode = subcode
        self.data = data
    }

    init(decoding body: ByteReader) {
        var r = body
        code = (try? r.u8()) ?? 0
        subcode = (try? r.u8()) ?? 0
        data = r.rest()
    }

    func encode(into w: inout ByteWriter) {
        w.u8(code)
        w.u8(subcode)
        w.append(data)
    }

    /// "Cease/Administrative Shutdown (6/2)", with an RFC 8203 shutdown communication if any.
    public var description: String {
        let names: [UInt8: (String, [UInt8: String])] = [
            1: (
                "Message Header Error",
                [1: "Connection Not Synchronized", 2: "Bad Message Length", 3: "Bad Message Type"]
            ),
            2: (
                "OPEN Message Error",
                [
                    1: "Unsupported Version Number", 2: "Bad Peer AS", 3: "Bad BGP Identifier",
                    4: "Unsupported Optional Parameter", 6: "Unacceptable Hold Time", 7: "Unsupported Capability",
                ]
            ),
            3: (
                "UPDATE Message Error",
                [
                    1: "Malformed Attribute List", 2: "Unrecognized Well-known Attribute",
                    3: "Missing Well-known Attribute", 4: "Attribute Flags Error", 5: "Attribute Length Error",
                    6: "Invalid ORIGIN Attribute", 8: "Invalid NEXT_HOP Attribute", 9: "Optional Attribute Error",
                    10: "Invalid Network Field", 11: "Malformed AS_PATH",
                ]
            ),
            4: ("Hold Timer Expired", [:]),
            5: ("Finite State Machine Error", [:]),
            6: (
                "Cease",
                [
                    1: "Maximum Number of Prefixes Reached", 2: "Administrative Shutdown", 3: "Peer De-configured",
                    4: "Administrative Reset", 5: "Connection Rejected", 6: "Other Configuration Change",
                    7: "Connection Collision Resolution", 8: "Out of Resources", 9: "Hard Reset",
                ]
            ),
            7: ("ROUTE-REFRESH Message Error", [:]),
        ]
        let (name, subcodes) = names[code] ?? ("error code \(code)", [:])
        var text = name + (subcodes[subcode].map { "/" + $0 } ?? "") + " (\(code)/\(subcode))"
        // RFC 8203: Cease/Shutdown and Cease/Reset may carry a length-prefixed UTF-8 message.
        if code == 6, subcode == 2 || subcode == 4, let n = data.first, n > 0, data.count == 1 + Int(n) {
            text += ": \"" + String(decoding: data.dropFirst(), as: UTF8.self) + "\""
        }
        return text
    }
}

/// ROUTE-REFRESH (RFC 2918, RFC 7313): asks the peer to send its routes of one family again.
public struct BGPRouteRefresh: Equatable, Sendable {
    public var family: BGPFamily
    /// 0 a request, 1 beginning and 2 end of a refresh (RFC 7313).
    public var subtype: UInt8

    public init(family: BGPFamily, subtype: UInt8 = 0) {
        self.family = family
        self.subtype = subtype
    }

    init(decoding body: ByteReader) {
        var r = body
        let afi = (try? r.u16()) ?? 0
        subtype = (try? r.u8()) ?? 0
        family = BGPFamily(afi: afi, safi: (try? r.u8()) ?? 0)
    }

    func encode(into w: inout ByteWriter) {
        w.u16(family.afi)
        w.u8(subtype)
        w.u8(family.safi)
    }
}

/// An address family and subsequent address family (RFC 4760): IPv4 or IPv6 unicast here.
public struct BGPFamily: Hashable, Sendable, CustomStringConvertible {
    public var afi: UInt16
    public var safi: UInt8

    public init(afi: UInt16, safi: UInt8) {
        self.afi = afi
        self.safi = safi
    }

    public static let ipv4Unicast = BGPFamily(afi: 1, safi: 1)
    public static let ipv6Unicast = BGPFamily(afi: 2, safi: 1)

    /// The IP family of a unicast family, nil for any other.
    public var ipFamily: IPFamily? {
        switch self {
        case .ipv4Unicast: .v4
        case .ipv6Unicast: .v6
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .ipv4Unicast: "IPv4 unicast"
        case .ipv6Unicast: "IPv6 unicast"
        default: "AFI \(afi) SAFI \(safi)"
        }
    }
}

func bigEndian(_ v: UInt16) -> [UInt8] { [UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)] }
func bigEndian(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }

/// Reads big-endian fields from a message body; running past the end throws `.truncated`.
struct ByteReader {
    struct Truncated: Error {}

    private let bytes: [UInt8]
    private(set) var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }
    /// The bytes not yet read, not consumed.
    var remainingBytes: [UInt8] { Array(bytes[offset...]) }
    var isAtEnd: Bool { offset == bytes.count }

    /// The next byte, not consumed.
    func peek() -> UInt8? { remaining >= 1 ? bytes[offset] : nil }

    mutating func u8() throws(Truncated) -> UInt8 {
        guard remaining >= 1 else { throw Truncated() }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() throws(Truncated) -> UInt16 {
        let b = try bytes(2)
        return UInt16(b[0]) << 8 | UInt16(b[1])
    }

    mutating func u32() throws(Truncated) -> UInt32 {
        try bytes(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    mutating func bytes(_ n: Int) throws(Truncated) -> [UInt8] {
        guard n >= 0, remaining >= n else { throw Truncated() }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }

    /// The next `n` bytes as a reader of their own.
    mutating func sub(_ n: Int) throws(Truncated) -> ByteReader { ByteReader(try bytes(n)) }

    mutating func rest() -> [UInt8] {
        defer { offset = bytes.count }
        return Array(bytes[offset...])
    }
}

struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes += bigEndian(v) }
    mutating func u32(_ v: UInt32) { bytes += bigEndian(v) }
    mutating func append(_ b: [UInt8]) { bytes += b }
}
