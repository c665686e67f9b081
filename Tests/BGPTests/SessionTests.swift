// The session state machine on values: the way to Established and back, what each error sends,
// graceful restart's "keep the routes", and the collision rule.

import Addressing
import Testing

@testable import BGP

@Suite struct BGPSessionTests {
    static let config: BGPSessionConfiguration = {
        var c = BGPSessionConfiguration(localAS: 64512, peerAS: 64512, routerID: 0x0a00_0001)
        c.families = [.ipv4Unicast, .ipv6Unicast]
        return c
    }()

    static func peerOpen(
        as asNumber: UInt32 = 64512, id: UInt32 = 0x0a00_0002, hold: UInt16 = 240, gracefulRestart: Bool = false
    )
        -> BGPMessage
    {
        var caps: [BGPCapability] = [.multiprotocol(.ipv4Unicast), .routeRefresh, .fourOctetAS(asNumber)]
        if gracefulRestart {
            caps.append(.gracefulRestart(BGPGracefulRestart(restarting: false, restartTime: 120, families: [])))
        }
        return .open(BGPOpen(asNumber: asNumber, holdTime: hold, identifier: id, capabilities: caps))
    }

    /// A session taken to Established.
    static func established(_ c: BGPSessionConfiguration = config, peer: BGPMessage = peerOpen()) -> BGPSession {
        var s = BGPSession(configuration: c)
        _ = s.handle(.start)
        _ = s.handle(.connected)
        _ = s.handle(.received(peer))
        _ = s.handle(.received(.keepalive))
        return s
    }

    @Test func activeOpenToEstablished() {
        var s = BGPSession(configuration: Self.config)
        #expect(s.handle(.start) == [.connect, .startTimer(.connectRetry, .seconds(120))])
        #expect(s.state == .connect)
        #expect(
            s.handle(.connected) == [
                .stopTimer(.connectRetry), .send(.open(Self.config.open)), .startTimer(.hold, .seconds(240)),
            ])
        // Hold time: the smaller of 90 (ours) and 240 (BIRD's); keepalives every 30 s.
        #expect(
            s.handle(.received(Self.peerOpen())) == [
                .send(.keepalive), .startTimer(.hold, .seconds(90)), .startTimer(.keepalive, .seconds(30)),
            ])
        #expect(s.state == .openConfirm)
        let actions = s.handle(.received(.keepalive))
        guard case .established(let n)? = actions.first else {
            Issue.record("\(actions)")
            return
        }
        #expect(n.families == [.ipv4Unicast] && n.holdTime == 90 && n.fourOctetAS && n.routeRefresh)
        #expect(s.state == .established)
        #expect(s.handle(.timerExpired(.keepalive)) == [.send(.keepalive), .startTimer(.keepalive, .seconds(30))])
    }

    @Test func aPassiveSessionWaitsForThePeer() {
        var c = Self.config
        c.passive = true
        var s = BGPSession(configuration: c)
        #expect(s.handle(.start) == [])
        #expect(s.state == .active)
        #expect(s.handle(.timerExpired(.connectRetry)) == [])
        #expect(s.handle(.connected).contains(.send(.open(c.open))))
    }

    @Test func aRefusedConnectionIsRetriedAfterTheBackoff() {
        var s = BGPSession(configuration: Self.config)
        _ = s.handle(.start)
        for wait in [1, 2, 4] {
            #expect(s.handle(.connectionClosed) == [.startTimer(.connectRetry, .seconds(wait))])
            #expect(s.state == .active)
            #expect(s.handle(.timerExpired(.connectRetry)).contains(.connect))
        }
    }

    @Test func openErrorsSendTheirNotification() {
        for (peer, sub) in [(Self.peerOpen(as: 65000), UInt8(2)), (Self.peerOpen(id: 0x0a00_0001), 3)] {
            var s = BGPSession(configuration: Self.config)
            _ = s.handle(.start)
            _ = s.handle(.connected)
            let out = s.handle(.received(peer))
            #expect(out.first == .send(.notification(BGPNotification(.openMessage, sub))) && out.contains(.close))
            #expect(s.state == .idle && out.contains(.startTimer(.idleHold, .seconds(1))))
        }
    }

    @Test func unexpectedMessagesAreFiniteStateMachineErrors() {
        var s = BGPSession(configuration: Self.config)
        _ = s.handle(.start)
        _ = s.handle(.connected)
        _ = s.handle(.received(Self.peerOpen()))
        #expect(
            s.handle(.received(.update(BGPUpdate()))).first
                == .send(.notification(BGPNotification(.finiteStateMachine, 2))))
        var e = Self.established()
        #expect(
            e.handle(.received(Self.peerOpen())).first == .send(.notification(BGPNotification(.finiteStateMachine, 3))))
    }

    @Test func updatesArriveAndRestartTheHoldTimer() {
        var s = Self.established()
        var a = BGPPathAttributes()
        a.origin = 0
        a.asPath = []
        a.nextHop = IPAddress("10.0.0.2")
        let u = BGPUpdate(attributes: a, nlri: [IPNetwork("10.244.2.0/24")!])
        #expect(s.handle(.received(.update(u))) == [.update(u), .startTimer(.hold, .seconds(90))])
        // IPv6 was not agreed (the peer announced IPv4 only): an error, not routes.
        var v6 = BGPPathAttributes()
        v6.mpReach = BGPMPReach(family: .ipv6Unicast, nextHops: [IPAddress("fd00::2")!], nlri: [])
        let out = s.handle(.received(.update(BGPUpdate(attributes: v6))))
        #expect(out.first == .send(.notification(BGPNotification(.updateMessage, 9))))
    }

    @Test func holdTimerExpiryAndLostConnectionsTakeTheSessionDown() {
        var s = Self.established()
        let out = s.handle(.timerExpired(.hold))
        #expect(out.first == .send(.notification(BGPNotification(.holdTimerExpired, 0))))
        #expect(out.contains(.down(reason: "hold timer expired", keepRoutes: false)))
        // With graceful restart on both sides, a lost connection keeps the peer's routes (stale).
        var c = Self.config
        c.gracefulRestart = (restartTime: 120, restarted: false)
        var g = Self.established(c, peer: Self.peerOpen(gracefulRestart: true))
        #expect(g.handle(.connectionClosed).contains(.down(reason: "the connection was lost", keepRoutes: true)))
        // A Cease from the peer without the N bit does not.
        var h = Self.established(c, peer: Self.peerOpen(gracefulRestart: true))
        let cease = h.handle(.received(.notification(BGPNotification(.cease, 2))))
        #expect(cease.contains { if case .down(_, false) = $0 { true } else { false } })
    }

    @Test func malformedBytesAndStopsSendTheirNotification() {
        var s = Self.established()
        let n = BGPNotification(.updateMessage, 10)
        #expect(s.handle(.malformed(n)).first == .send(.notification(n)))
        var t = Self.established()
        let out = t.handle(.stop)
        #expect(out.first == .send(.notification(BGPNotification(.cease, 2))))
        #expect(!out.contains { if case .startTimer(.idleHold, _) = $0 { true } else { false } })
    }

    /// A peer that fails right after establishment is retried ever later: only a message received
    /// in Established (a KEEPALIVE or an UPDATE) resets the back-off.
    @Test func aPeerFailingRightAfterEstablishmentBacksOffFurther() {
        var s = BGPSession(configuration: Self.config)
        for round in 1...3 {
            _ = s.handle(.start)
            _ = s.handle(.connected)
            _ = s.handle(.received(Self.peerOpen()))
            _ = s.handle(.received(.keepalive))
            #expect(s.state == .established)
            let down = s.handle(.malformed(BGPNotification(.messageHeader, 1)))
            #expect(down.contains(.startTimer(.idleHold, BGPSession.backoff(failures: round))), "\(down)")
        }
        _ = s.handle(.start)
        _ = s.handle(.connected)
        _ = s.handle(.received(Self.peerOpen()))
        _ = s.handle(.received(.keepalive))
        _ = s.handle(.received(.keepalive))
        #expect(s.failures == 0)
    }

    @Test func backoffDoublesUpToTwoMinutes() {
        #expect(
            (1...9).map { BGPSession.backoff(failures: $0) } == [1, 2, 4, 8, 16, 32, 64, 120, 120].map { .seconds($0) })
    }

    @Test func theConnectionOfTheHigherIdentifierSurvivesACollision() {
        #expect(bgpKeepsPeersConnection(localID: 1, peerID: 2, localAS: 1, peerAS: 1))
        #expect(!bgpKeepsPeersConnection(localID: 3, peerID: 2, localAS: 1, peerAS: 1))
        #expect(bgpKeepsPeersConnection(localID: 2, peerID: 2, localAS: 64512, peerAS: 65000))
    }
}
