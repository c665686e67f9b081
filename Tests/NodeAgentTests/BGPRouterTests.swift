// The bgp backend's routing decisions on values (`BGPRouter`): which sessions a node starts, what
// it announces, which learned routes reach the kernel, and what graceful restart keeps.

import Addressing
import Overlay
import Testing

@testable import BGP
@testable import NodeAgent

private func ip(_ s: String) -> IPAddress { IPAddress(s)! }
private func net(_ s: String) -> IPNetwork { IPNetwork(s)! }

/// A node at 192.168.50.11 in 10.244.0.0/16 (/24 subnets), AS 64512, owning 10.244.1.0/24; its
/// interface reaches 192.168.50.0/24 directly.
private func router(
    mesh: Bool = true, peers: [BGPConfig.Neighbour] = [], restarted: Bool = false
) -> BGPRouter {
    var config = BGPConfig()
    config.nodeToNodeMesh = mesh
    config.neighbours = peers
    var r = BGPRouter(
        config: config, publicIP: ip("192.168.50.11"), network: net("10.244.0.0/16"), subnetLength: 24,
        restarted: restarted, localAddresses: [ip("192.168.50.11")],
        usable: { net("192.168.50.0/24").contains($0) })
    _ = r.start()
    _ = r.handle(.network(.subnet(net("10.244.1.0/24"))))
    return r
}

private func negotiated(as asNumber: UInt32, id: UInt32, restartTime: UInt16? = 120) -> BGPNegotiated {
    BGPNegotiated(
        peerAS: asNumber, peerRouterID: id, holdTime: 90, families: [.ipv4Unicast], fourOctetAS: true,
        routeRefresh: true,
        peerGracefulRestart: restartTime.map {
            BGPGracefulRestart(restarting: false, restartTime: $0, families: [])
        })
}

private func announce(_ prefixes: [String], nextHop: String, path: [UInt32] = [], originator: UInt32? = nil)
    -> BGPUpdate
{
    var a = BGPPathAttributes()
    a.origin = 0
    a.nextHop = ip(nextHop)
    a.asPath = path.isEmpty ? [] : [.sequence(path)]
    a.originatorID = originator
    return BGPUpdate(attributes: a, nlri: prefixes.map(net))
}

/// The kernel routes among `effects`.
private func routes(_ effects: [BGPEffect]) -> [IPNetwork: IPAddress?] {
    var out: [IPNetwork: IPAddress?] = [:]
    for case .routes(let r) in effects { out.merge(r) { $1 } }
    return out
}

private let tor = BGPConfig.Neighbour(
    address: ip("192.168.50.1"), asNumber: 65001, nodePrefix: net("192.168.50.0/24"))

@Suite struct BGPRouterTests {
    @Test func theMeshPeersWithEveryLeasedNodeAndOnlyTheLowerIDConnects() {
        var r = router(peers: [
            tor, .init(address: ip("192.168.60.1"), asNumber: 65002, nodePrefix: net("192.168.60.0/24")),
        ])
        let effects = r.handle(.network(.nodes([ip("192.168.50.11"), ip("192.168.50.5"), ip("192.168.50.12")])))
        var added: [String: BGPSessionConfiguration] = [:]
        for case .addNeighbour(let c, let address, _) in effects { added["\(address)"] = c }
        // The ToR of another rack is not this node's neighbour; its own address is no neighbour.
        #expect(Set(r.neighbours.keys) == ["192.168.50.1", "192.168.50.5", "192.168.50.12"])
        #expect(added["192.168.50.5"]?.passive == true, "a lower router ID connects to us")
        #expect(added["192.168.50.12"]?.passive == false)
        #expect(added["192.168.50.12"]?.peerAS == 64512 && added["192.168.50.12"]?.gracefulRestart?.restartTime == 120)
        // The ToR was added at start; a node that loses its lease loses its session.
        let gone = r.handle(.network(.nodes([ip("192.168.50.12")])))
        #expect(gone == [.removeNeighbour("192.168.50.5")])
    }

    @Test func anEstablishedSessionGetsTheSubnetThenEndOfRIB() {
        var r = router(peers: [tor])
        let ebgp = r.handle(.session(neighbour: "192.168.50.1", .established(negotiated(as: 65001, id: 1))))
        guard case .send(let updates, "192.168.50.1")? = ebgp.first else {
            Issue.record("\(ebgp)")
            return
        }
        #expect(updates.count == 2 && updates[1].endOfRIB == .ipv4Unicast)
        #expect(updates[0].nlri == [net("10.244.1.0/24")])
        #expect(updates[0].attributes.nextHop == ip("192.168.50.11"))
        #expect(updates[0].attributes.effectiveASPath == [64512] && updates[0].attributes.localPref == nil)
        // A new lease: the old subnet is withdrawn and the new one announced.
        let moved = r.handle(.network(.subnet(net("10.244.9.0/24"))))
        guard case .send(let again, _)? = moved.first else {
            Issue.record("\(moved)")
            return
        }
        #expect(again.first?.withdrawn == [net("10.244.1.0/24")] && again.last?.nlri == [net("10.244.9.0/24")])
    }

    @Test func aLostLeaseWithdrawsTheSubnetAndTheSameLeaseAgainAnnouncesIt() {
        var r = router(peers: [tor])
        _ = r.handle(.session(neighbour: "192.168.50.1", .established(negotiated(as: 65001, id: 1))))
        #expect(
            r.handle(.network(.withdrawn)) == [
                .send([BGPUpdate(withdrawn: [net("10.244.1.0/24")])], to: "192.168.50.1")
            ])
        let again = r.handle(.network(.subnet(net("10.244.1.0/24"))))
        guard case .send(let updates, _)? = again.first else {
            Issue.record("\(again)")
            return
        }
        #expect(updates.count == 1 && updates[0].nlri == [net("10.244.1.0/24")] && updates[0].withdrawn.isEmpty)
    }

    @Test func onlyPodSubnetsOfOtherNodesThroughUsableNextHopsReachTheKernel() {
        var r = router(peers: [tor])
        _ = r.handle(.session(neighbour: "192.168.50.1", .established(negotiated(as: 65001, id: 1))))
        let hostile = [
            "10.244.2.0/24",  // accepted
            "10.244.1.0/24",  // this node's own
            "0.0.0.0/0", "10.0.0.0/8", "172.16.0.0/24",  // default, outside the network
            "10.244.3.0/25", "10.244.0.0/16",  // not /24
        ]
        let effects = r.handle(
            .session(neighbour: "192.168.50.1", .update(announce(hostile, nextHop: "192.168.50.1", path: [65001]))))
        #expect(routes(effects) == [net("10.244.2.0/24"): ip("192.168.50.1")])
        #expect(r.neighbours["192.168.50.1"]?.refused == 6)
        // Through this node, looped through our AS, or originated here: refused.
        for update in [
            announce(["10.244.4.0/24"], nextHop: "192.168.50.11", path: [65001]),
            announce(["10.244.5.0/24"], nextHop: "192.168.50.1", path: [65001, 64512]),
            announce(["10.244.6.0/24"], nextHop: "10.244.6.1", path: [65001]),
        ] {
            #expect(routes(r.handle(.session(neighbour: "192.168.50.1", .update(update)))).isEmpty)
        }
        #expect(r.rib.count(from: "192.168.50.1") == 1)
        // A withdrawal takes the route away.
        let withdrawn = r.handle(
            .session(neighbour: "192.168.50.1", .update(BGPUpdate(withdrawn: [net("10.244.2.0/24")]))))
        #expect(routes(withdrawn) == [net("10.244.2.0/24"): IPAddress?.none])
    }

    @Test func theBestRouteHasAUsableNextHopThenTheShortestPath() {
        var r = router(peers: [tor])
        _ = r.handle(.network(.nodes([ip("192.168.60.12")])))  // a mesh node in another rack
        _ = r.handle(.session(neighbour: "192.168.60.12", .established(negotiated(as: 64512, id: 12))))
        _ = r.handle(.session(neighbour: "192.168.50.1", .established(negotiated(as: 65001, id: 1))))
        // The mesh offers the other rack's subnet through a next hop this node cannot reach;
        // the ToR's longer path is the one the kernel can use.
        let fromMesh = r.handle(
            .session(neighbour: "192.168.60.12", .update(announce(["10.244.7.0/24"], nextHop: "192.168.60.12"))))
        #expect(routes(fromMesh) == [net("10.244.7.0/24"): ip("192.168.60.12")])
        let fromToR = r.handle(
            .session(
                neighbour: "192.168.50.1",
                .update(announce(["10.244.7.0/24"], nextHop: "192.168.50.1", path: [65001, 65002, 65002]))))
        #expect(routes(fromToR) == [net("10.244.7.0/24"): ip("192.168.50.1")])
    }

    @Test func aLostSessionWithGracefulRestartKeepsItsRoutesUntilItsRestartTime() {
        var r = router(peers: [tor])
        _ = r.handle(.session(neighbour: "192.168.50.1", .established(negotiated(as: 65001, id: 1, restartTime: 30))))
        _ = r.handle(
            .session(
                neighbour: "192.168.50.1",
                .update(announce(["10.244.2.0/24", "10.244.3.0/24"], nextHop: "192.168.50.1", path: [65001]))))
        let down = r.handle(.session(neighbour: "192.168.50.1", .down(reason: "hold timer expired", keepRoutes: true)))
        #expect(down == [.timer(.seconds(30), .staleExpired(neighbour: "192.168.50.1", generation: 1))])
        // Back within the restart time: what it sends again stays, the rest goes at End-of-RIB.
        _ = r.handle(.session(neighbour: "192.168.50.1", .established(negotiated(as: 65001, id: 1, restartTime: 30))))
        _ = r.handle(
            .session(
                neighbour: "192.168.50.1", .update(announce(["10.244.2.0/24"], nextHop: "192.168.50.1", path: [65001])))
        )
        let eor = r.handle(.session(neighbour: "192.168.50.1", .update(.endOfRIB(.ipv4Unicast))))
        #expect(routes(eor) == [net("10.244.3.0/24"): IPAddress?.none])
        // The expiry of a timer armed before it came back changes nothing.
        #expect(r.handle(.staleExpired(neighbour: "192.168.50.1", generation: 1)).isEmpty)

        // Down again and not back in time: everything goes at expiry.
        _ = r.handle(.session(neighbour: "192.168.50.1", .down(reason: "connection lost", keepRoutes: true)))
        let expired = r.handle(.staleExpired(neighbour: "192.168.50.1", generation: 2))
        #expect(routes(expired) == [net("10.244.2.0/24"): IPAddress?.none])
    }

    @Test func aSessionEndedByANotificationLosesItsRoutesAtOnce() {
        var r = router(peers: [tor])
        _ = r.handle(.session(neighbour: "192.168.50.1", .established(negotiated(as: 65001, id: 1))))
        _ = r.handle(
            .session(
                neighbour: "192.168.50.1", .update(announce(["10.244.2.0/24"], nextHop: "192.168.50.1", path: [65001])))
        )
        let down = r.handle(.session(neighbour: "192.168.50.1", .down(reason: "Cease", keepRoutes: false)))
        #expect(routes(down) == [net("10.244.2.0/24"): IPAddress?.none])
    }

    @Test func aRestartedNodeSweepsOnlyOnceEveryNeighbourSentEndOfRIB() {
        var r = router(peers: [tor], restarted: true)
        #expect(r.deferring)
        _ = r.handle(.network(.nodes([ip("192.168.50.12")])))
        _ = r.handle(.session(neighbour: "192.168.50.1", .established(negotiated(as: 65001, id: 1))))
        #expect(!r.handle(.session(neighbour: "192.168.50.1", .update(.endOfRIB(.ipv4Unicast)))).contains(.endDeferral))
        _ = r.handle(.session(neighbour: "192.168.50.12", .established(negotiated(as: 64512, id: 12))))
        #expect(r.handle(.session(neighbour: "192.168.50.12", .update(.endOfRIB(.ipv4Unicast)))).contains(.endDeferral))
        #expect(!r.deferring)
        // Without End-of-RIB from everyone, the restart time ends it.
        var late = router(peers: [tor], restarted: true)
        #expect(late.start().contains(.timer(.seconds(120), .deferralExpired)))
        #expect(late.handle(.deferralExpired) == [.endDeferral])
    }
}
