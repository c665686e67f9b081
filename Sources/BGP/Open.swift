// OPEN (RFC 4271 §4.2) and its capabilities (RFC 5492): version 4, the sender's AS (AS_TRANS,
// 23456, when it needs four octets, the real one in capability 65 per RFC 6793), the proposed
// hold time, the BGP identifier, and optional parameters of which only type 2, Capabilities, is
// in use. Capabilities may come all in one parameter or one per parameter; both are read. The
// RFC 9072 extended parameter length (length 255, first type 255, two-octet lengths) is read too.

import Addressing

public struct BGPOpen: Equatable, Sendable {
    /// The sender's AS number: from capability 65 when present, else the header's two octets.
    public var asNumber: UInt32
    /// Seconds; 0 (no keepalives) or at least 3.
    public var holdTime: UInt16
    /// The BGP identifier, an IPv4 address by convention; never zero.
    public var identifier: UInt32
    public var capabilities: [BGPCapability]

    public static let asTrans: UInt16 = 23456

    public init(asNumber: UInt32, holdTime: UInt16, identifier: UInt32, capabilities: [BGPCapability]) {
        self.asNumber = asNumber
        self.holdTime = holdTime
        self.identifier = identifier
        self.capabilities = capabilities
    }

    /// The families of the multiprotocol capabilities (none at all: IPv4 unicast, as every
    /// implementation falls back to).
    public var families: Set<BGPFamily> {
        let mp = capabilities.compactMap { if case .multiprotocol(let f) = $0 { f } else { nil } }
        return mp.isEmpty ? [.ipv4Unicast] : Set(mp)
    }

    public var supportsFourOctetAS: Bool {
        capabilities.contains { if case .fourOctetAS = $0 { true } else { false } }
    }

    public var supportsRouteRefresh: Bool { capabilities.contains(.routeRefresh) }

    /// The graceful restart capability, if sent.
    public var gracefulRestart: BGPGracefulRestart? {
        for c in capabilities { if case .gracefulRestart(let g) = c { return g } }
        return nil
    }

    init(decoding body: ByteReader) throws(BGPNotification) {
        var r = body
        do {
            let version = try r.u8()
            guard version == 4 else { throw BGPNotification(.openMessage, 1, data: [0, 4]) }
            let shortAS = try r.u16()
            holdTime = try r.u16()
            guard holdTime == 0 || holdTime >= 3 else { throw BGPNotification(.openMessage, 6) }
            identifier = try r.u32()
            guard identifier != 0 else { throw BGPNotification(.openMessage, 3) }
            var length = Int(try r.u8())
            var wide = false
            if length == 255, r.peek() == 255 {
                _ = try r.u8()  // RFC 9072: the non-extended type 255 announces two-octet lengths
                length = Int(try r.u16())
                wide = true
            }
            var parameters = try r.sub(length)
            guard r.isAtEnd else { throw BGPNotification(.messageHeader, 2) }
            var caps: [BGPCapability] = []
            while !parameters.isAtEnd {
                let type = try parameters.u8()
                let size = wide ? Int(try parameters.u16()) : Int(try parameters.u8())
                var value = try parameters.sub(size)
                guard type == 2 else { throw BGPNotification(.openMessage, 4) }  // Unsupported Optional Parameter
                while !value.isAtEnd {
                    let code = try value.u8()
                    let n = Int(try value.u8())
                    caps.append(try BGPCapability(code: code, value: try value.sub(n)))
                }
            }
            capabilities = caps
            asNumber = UInt32(truncatingIfNeeded: shortAS)
            for c in caps { if case .fourOctetAS(let n) = c { asNumber = n } }
        } catch let n as BGPNotification {
            throw n
        } catch {
            throw BGPNotification(.openMessage, 0)  // a parameter or capability runs past its end
        }
    }

    func encode(into w: inout ByteWriter) {
        w.u8(4)
        w.u16(asNumber > UInt32(UInt16.max) ? Self.asTrans : UInt16(truncatingIfNeeded: asNumber))
        w.u16(holdTime)
        w.u32(identifier)
        var caps = ByteWriter()
        for c in capabilities { c.encode(into: &caps) }
        if caps.bytes.isEmpty {
            w.u8(0)
        } else {
            w.u8(UInt8(truncatingIfNeeded: caps.bytes.count + 2))
            w.u8(2)
            w.u8(UInt8(truncatingIfNeeded: caps.bytes.count))
            w.append(caps.bytes)
        }
    }
}

/// The graceful restart capability (RFC 4724 §3, RFC 8538): restart flags, restart time, and
/// per family whether forwarding state was kept.
public struct BGPGracefulRestart: Equatable, Sendable {
    /// R: the sender has restarted.
    public var restarting: Bool
    /// N: graceful restart also after a NOTIFICATION (RFC 8538).
    public var notification: Bool
    /// Seconds the peer keeps our routes after the session is lost (12 bits, at most 4095).
    public var restartTime: UInt16
    /// The families, each with F: forwarding state kept over the restart.
    public var families: [(family: BGPFamily, forwardingKept: Bool)]

    public init(
        restarting: Bool, notification: Bool = false, restartTime: UInt16,
        families: [(family: BGPFamily, forwardingKept: Bool)]
    ) {
        self.restarting = restarting
        self.notification = notification
        self.restartTime = min(restartTime, 4095)
        self.families = families
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.restarting == b.restarting && a.notification == b.notification && a.restartTime == b.restartTime
            && a.families.map(\.family) == b.families.map(\.family)
            && a.families.map(\.forwardingKept) == b.families.map(\.forwardingKept)
    }
}

public enum BGPCapability: Equatable, Sendable {
    /// 1: a family this speaker exchanges (RFC 4760).
    case multiprotocol(BGPFamily)
    /// 2: ROUTE-REFRESH (RFC 2918).
    case routeRefresh
    /// 6: messages up to 65535 octets (RFC 8654).
    case extendedMessage
    /// 64: graceful restart (RFC 4724).
    case gracefulRestart(BGPGracefulRestart)
    /// 65: four-octet AS numbers, with the sender's AS (RFC 6793).
    case fourOctetAS(UInt32)
    /// 70: enhanced route refresh (RFC 7313).
    case enhancedRouteRefresh
    /// Any other code, kept as sent.
    case other(code: UInt8, value: [UInt8])

    init(code: UInt8, value: ByteReader) throws(BGPNotification) {
        var v = value
        do {
            switch code {
            case 1:
                guard v.remaining == 4 else { throw BGPNotification(.openMessage, 0) }
                let afi = try v.u16()
                _ = try v.u8()
                self = .multiprotocol(BGPFamily(afi: afi, safi: try v.u8()))
            case 2: self = .routeRefresh
            case 6: self = .extendedMessage
            case 64:
                guard v.remaining >= 2, (v.remaining - 2) % 4 == 0 else { throw BGPNotification(.openMessage, 0) }
                let head = try v.u16()
                var families: [(BGPFamily, Bool)] = []
                while !v.isAtEnd {
                    let afi = try v.u16()
                    let safi = try v.u8()
                    families.append((BGPFamily(afi: afi, safi: safi), try v.u8() & 0x80 != 0))
                }
                self = .gracefulRestart(
                    BGPGracefulRestart(
                        restarting: head & 0x8000 != 0, notification: head & 0x4000 != 0, restartTime: head & 0x0fff,
                        families: families.map { (family: $0.0, forwardingKept: $0.1) }))
            case 65:
                guard v.remaining == 4 else { throw BGPNotification(.openMessage, 0) }
                self = .fourOctetAS(try v.u32())
            case 70: self = .enhancedRouteRefresh
            default: self = .other(code: code, value: v.rest())
            }
        } catch let n as BGPNotification {
            throw n
        } catch {
            throw BGPNotification(.openMessage, 0)
        }
    }

    func encode(into w: inout ByteWriter) {
        var v = ByteWriter()
        let code: UInt8
        switch self {
        case .multiprotocol(let f):
            code = 1
            v.u16(f.afi); v.u8(0); v.u8(f.safi)
        case .routeRefresh: code = 2
        case .extendedMessage: code = 6
        case .gracefulRestart(let g):
            code = 64
            v.u16((g.restarting ? 0x8000 : 0) | (g.notification ? 0x4000 : 0) | (g.restartTime & 0x0fff))
            for f in g.families {
                v.u16(f.family.afi); v.u8(f.family.safi); v.u8(f.forwardingKept ? 0x80 : 0)
            }
        case .fourOctetAS(let n):
            code = 65
            v.u32(n)
        case .enhancedRouteRefresh: code = 70
        case .other(let c, let value):
            code = c
            v.append(value)
        }
        w.u8(code)
        w.u8(UInt8(truncatingIfNeeded: v.bytes.count))
        w.append(v.bytes)
    }
}
