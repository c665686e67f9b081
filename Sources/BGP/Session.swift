// One peer's BGP session as a pure state machine (RFC 4271 §8): events in (TCP up or lost, a
// decoded message or a decoding failure, a timer), actions out (connect, send, close, start or
// stop a timer, the session is established or down, an UPDATE arrived). The network part (a
// SwiftNIO channel and its timers) only carries out the actions and feeds back the events, so
// every transition is tested here on values, without sockets or clocks.
//
//   Idle -start-> Connect (or Active when passive) -TCP up, send OPEN-> OpenSent
//   OpenSent -valid OPEN, send KEEPALIVE-> OpenConfirm -KEEPALIVE-> Established
//   any error: NOTIFICATION (the RFC's code), close, Idle, and a back-off before the next start.
//
// Hold time: the smaller of the two OPENs' (0 means none); keepalives every third of it. While
// waiting for the peer's OPEN the hold timer runs at 240 s, as RFC 4271 suggests.

import Addressing

public struct BGPSessionConfiguration: Equatable, Sendable {
    public var localAS: UInt32
    /// The AS the peer must announce.
    public var peerAS: UInt32
    public var routerID: UInt32
    /// The hold time proposed in our OPEN (seconds; 0 or at least 3).
    public var holdTime: UInt16 = 90
    public var families: [BGPFamily] = [.ipv4Unicast]
    /// Graceful restart: our restart time, and whether this start follows a restart with the
    /// kernel routes kept (R and F set). Nil: not announced.
    public var gracefulRestart: (restartTime: UInt16, restarted: Bool)?
    /// Only wait for the peer to connect.
    public var passive = false

    public init(localAS: UInt32, peerAS: UInt32, routerID: UInt32) {
        self.localAS = localAS
        self.peerAS = peerAS
        self.routerID = routerID
    }

    public var isInternal: Bool { localAS == peerAS }

    public static func == (a: Self, b: Self) -> Bool {
        a.localAS == b.localAS && a.peerAS == b.peerAS && a.routerID == b.routerID && a.holdTime == b.holdTime
            && a.families == b.families && a.passive == b.passive
            && a.gracefulRestart?.restartTime == b.gracefulRestart?.restartTime
            && a.gracefulRestart?.restarted == b.gracefulRestart?.restarted
    }

    /// Our OPEN.
    public var open: BGPOpen {
        var caps: [BGPCapability] = families.map { .multiprotocol($0) }
        caps += [.routeRefresh, .fourOctetAS(localAS)]
        if let gr = gracefulRestart {
            caps.append(
                .gracefulRestart(
                    BGPGracefulRestart(
                        restarting: gr.restarted, restartTime: gr.restartTime,
                        families: families.map { (family: $0, forwardingKept: gr.restarted) })))
        }
        return BGPOpen(asNumber: localAS, holdTime: holdTime, identifier: routerID, capabilities: caps)
    }
}

/// What both OPENs agreed on.
public struct BGPNegotiated: Equatable, Sendable {
    public var peerAS: UInt32
    public var peerRouterID: UInt32
    /// Seconds; 0: no keepalives and no hold timer.
    public var holdTime: UInt16
    public var families: Set<BGPFamily>
    public var fourOctetAS: Bool
    public var routeRefresh: Bool
    /// The peer's graceful restart capability, if both announced one.
    public var peerGracefulRestart: BGPGracefulRestart?

    public var keepaliveInterval: Duration { .seconds(Int(holdTime) / 3) }
}

public enum BGPSessionState: String, Sendable {
    case idle, connect, active, openSent, openConfirm, established
}

public enum BGPTimer: Hashable, Sendable {
    case connectRetry, hold, keepalive, idleHold
}

public enum BGPSessionEvent: Equatable, Sendable {
    case start
    /// An administrative stop: NOTIFICATION Cease/Administrative Shutdown when connected.
    case stop
    case connected
    /// The TCP connection could not be made, or was lost.
    case connectionClosed
    case received(BGPMessage)
    /// The peer's bytes could not be decoded: the NOTIFICATION to send.
    case malformed(BGPNotification)
    case timerExpired(BGPTimer)
}

public enum BGPSessionAction: Equatable, Sendable {
    case connect
    case send(BGPMessage)
    case close
    case startTimer(BGPTimer, Duration)
    case stopTimer(BGPTimer)
    case established(BGPNegotiated)
    case update(BGPUpdate)
    /// The peer asks for our routes of a family again (ROUTE-REFRESH).
    case refresh(BGPFamily)
    /// The established session ended. `keepRoutes`: the peer announced graceful restart for an
    /// unexpected loss (TCP lost, hold timer), so its routes stay as stale for its restart time.
    case down(reason: String, keepRoutes: Bool)
}

public struct BGPSession: Sendable {
    public let configuration: BGPSessionConfiguration
    public private(set) var state: BGPSessionState = .idle
    public private(set) var negotiated: BGPNegotiated?
    /// Consecutive failed attempts, for the back-off before the next start.
    public private(set) var failures = 0

    public static let connectRetryTime: Duration = .seconds(120)
    public static let openHoldTime: Duration = .seconds(240)

    public init(configuration: BGPSessionConfiguration) {
        self.configuration = configuration
    }

    /// The wait before starting again after the `n`-th failure in a row: 1, 2, 4 … 120 s.
    public static func backoff(failures n: Int) -> Duration {
        .seconds(min(120, 1 << min(max(n - 1, 0), 7)))
    }

    public mutating func handle(_ event: BGPSessionEvent) -> [BGPSessionAction] {
        switch (state, event) {
        case (.idle, .start), (.idle, .timerExpired(.idleHold)):
            if configuration.passive {
                state = .active
                return []
            }
            state = .connect
            return [.connect, .startTimer(.connectRetry, Self.connectRetryTime)]
        case (.idle, _):
            return []
        case (_, .stop):
            let wasUp = state == .openSent || state == .openConfirm || state == .established
            var out = toIdle(
                notification: wasUp ? BGPNotification(.cease, 2) : nil, reason: "stopped", keepRoutes: false)
            out.removeAll { if case .startTimer(.idleHold, _) = $0 { true } else { false } }
            return out
        case (.connect, .connected), (.active, .connected):
            state = .openSent
            return [
                .stopTimer(.connectRetry), .send(.open(configuration.open)), .startTimer(.hold, Self.openHoldTime),
            ]
        case (.connect, .connectionClosed):
            // A refused or failed connection is tried again after the back-off (1, 2, 4 ... s, at
            // most ConnectRetryTime), not after a whole ConnectRetryTime: a node that starts
            // before its neighbour listens is connected within seconds. Meanwhile it listens.
            state = .active
            failures += 1
            return [.startTimer(.connectRetry, min(Self.backoff(failures: failures), Self.connectRetryTime))]
        case (.active, .connectionClosed):
            return []
        case (.connect, .timerExpired(.connectRetry)), (.active, .timerExpired(.connectRetry)):
            if configuration.passive { return [] }
            state = .connect
            return [.close, .connect, .startTimer(.connectRetry, Self.connectRetryTime)]
        case (.openSent, .received(.open(let open))):
            return receivedOpen(open)
        case (.openConfirm, .received(.keepalive)):
            // The back-off is reset only by a message received once established: a peer that
            // fails right after establishment (garbage, a refused UPDATE) is retried ever later.
            state = .established
            return [.established(negotiated!)] + restartHold()
        case (.established, .received(.keepalive)):
            failures = 0
            return restartHold()
        case (.established, .received(.update(let update))):
            if let problem = unnegotiatedFamily(update) {
                return toIdle(notification: BGPNotification(.updateMessage, 9), reason: problem, keepRoutes: false)
            }
            failures = 0
            return [.update(update)] + restartHold()
        case (.established, .received(.routeRefresh(let r))):
            guard negotiated?.routeRefresh == true else { return restartHold() }
            guard negotiated?.families.contains(r.family) == true else { return [] }
            return [.refresh(r.family)]
        case (_, .received(.notification(let n))):
            let keep = negotiated?.peerGracefulRestart?.notification == true && !(n.code == 6 && n.subcode == 9)
            return toIdle(notification: nil, reason: "the peer sent NOTIFICATION \(n)", keepRoutes: keep)
        case (_, .malformed(let n)):
            return toIdle(notification: n, reason: "sent NOTIFICATION \(n)", keepRoutes: false)
        case (.openSent, .received), (.openConfirm, .received), (.established, .received):
            // An unexpected message type for the state (RFC 6608 subcodes 1, 2, 3).
            let sub: UInt8 = state == .openSent ? 1 : state == .openConfirm ? 2 : 3
            return toIdle(
                notification: BGPNotification(.finiteStateMachine, sub), reason: "unexpected message in \(state)",
                keepRoutes: false)
        case (_, .timerExpired(.hold)):
            return toIdle(
                notification: BGPNotification(.holdTimerExpired, 0), reason: "hold timer expired",
                keepRoutes: negotiated?.peerGracefulRestart != nil)
        case (.openConfirm, .timerExpired(.keepalive)), (.established, .timerExpired(.keepalive)):
            guard let n = negotiated, n.holdTime > 0 else { return [] }
            return [.send(.keepalive), .startTimer(.keepalive, n.keepaliveInterval)]
        case (_, .connectionClosed):
            return toIdle(
                notification: nil, reason: "the connection was lost",
                keepRoutes: state == .established && negotiated?.peerGracefulRestart != nil)
        default:
            return []
        }
    }

    private mutating func receivedOpen(_ open: BGPOpen) -> [BGPSessionAction] {
        let c = configuration
        if open.asNumber != c.peerAS {
            return toIdle(
                notification: BGPNotification(.openMessage, 2),
                reason: "the peer announced AS \(open.asNumber), not \(c.peerAS)",
                keepRoutes: false)
        }
        // RFC 6286 §2.2: an internal peer with our identifier.
        if c.isInternal && open.identifier == c.routerID {
            return toIdle(
                notification: BGPNotification(.openMessage, 3), reason: "the peer uses our BGP identifier",
                keepRoutes: false)
        }
        let families = Set(c.families).intersection(open.families)
        let hold = min(c.holdTime, open.holdTime)
        negotiated = BGPNegotiated(
            peerAS: open.asNumber, peerRouterID: open.identifier, holdTime: hold, families: families,
            fourOctetAS: open.supportsFourOctetAS, routeRefresh: open.supportsRouteRefresh,
            peerGracefulRestart: c.gracefulRestart != nil ? open.gracefulRestart : nil)
        state = .openConfirm
        var out: [BGPSessionAction] = [.send(.keepalive)]
        if hold > 0 {
            out += [.startTimer(.hold, .seconds(Int(hold))), .startTimer(.keepalive, negotiated!.keepaliveInterval)]
        } else {
            out += [.stopTimer(.hold)]
        }
        return out
    }

    /// An UPDATE for a family the OPENs did not agree on.
    private func unnegotiatedFamily(_ u: BGPUpdate) -> String? {
        let families = negotiated?.families ?? []
        if !(u.nlri.isEmpty && u.withdrawn.isEmpty), !families.contains(.ipv4Unicast) {
            return "IPv4 routes, but IPv4 unicast was not negotiated"
        }
        for f in [u.attributes.mpReach?.family, u.attributes.mpUnreach?.family].compactMap({ $0 })
        where !families.contains(f) {
            return "routes of \(f), which was not negotiated"
        }
        return nil
    }

    private func restartHold() -> [BGPSessionAction] {
        guard let n = negotiated, n.holdTime > 0 else { return [] }
        return [.startTimer(.hold, .seconds(Int(n.holdTime)))]
    }

    /// Back to Idle: NOTIFICATION (if any), close, the timers stopped, `down` if the session was
    /// established, and the back-off before the next start.
    private mutating func toIdle(notification: BGPNotification?, reason: String, keepRoutes: Bool) -> [BGPSessionAction]
    {
        let wasEstablished = state == .established
        var out: [BGPSessionAction] = []
        if let notification { out.append(.send(.notification(notification))) }
        out += [.close, .stopTimer(.connectRetry), .stopTimer(.hold), .stopTimer(.keepalive)]
        if wasEstablished { out.append(.down(reason: reason, keepRoutes: keepRoutes)) }
        state = .idle
        negotiated = nil
        failures += 1
        out.append(.startTimer(.idleHold, Self.backoff(failures: failures)))
        return out
    }
}

/// RFC 4271 §6.8 collision resolution: of two connections with the same peer, the one opened by
/// the side with the higher BGP identifier survives (with equal identifiers, RFC 6286: the
/// larger AS). True when the peer's connection (the one it opened to us) is kept.
public func bgpKeepsPeersConnection(localID: UInt32, peerID: UInt32, localAS: UInt32, peerAS: UInt32) -> Bool {
    peerID != localID ? peerID > localID : peerAS > localAS
}
