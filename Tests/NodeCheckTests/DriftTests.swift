// The comparison against the fake kernel: a converged node is all ok; each kind of drift done by
// hand is exactly one problem naming the entry, and exactly what the daemon's reconcile then
// repairs; the inspection itself changes nothing.

import Addressing
import Netlink
import NodeCheck
import Overlay
import TestSupport
import Testing

@Suite struct DriftTests {
    @Test func aConvergedNodeIsAllOK() throws {
        let node = try TestNode()
        node.dp.clearCalls()
        let inspection = try node.inspect()
        #expect(node.dp.changes.isEmpty)
        #expect(inspection.isConsistent)
        #expect(inspection.device == "flannel.1" && inspection.deviceFound)
        #expect(inspection.deviceMAC == mac("02:00:00:00:01:01"))
        #expect(inspection.mtu == 1450)
        #expect(inspection.peers.map(\.peer.subnet) == [net("10.244.2.0/24"), net("10.244.3.0/24")])
        #expect(
            inspection.peers.allSatisfy {
                $0.route == .ok && $0.neighbour == .ok && $0.fdb == .ok && $0.viaDevice && $0.skipped == nil
            })
        #expect(inspection.stale.isEmpty)

        let report = try node.report()
        #expect(report.problems == [])
        #expect(report.consistent)
        #expect(report.peers.map(\.verdict) == [.ok, .ok])
        #expect(report.peers.map(\.subnet) == ["10.244.2.0/24", "10.244.3.0/24"])
        #expect(renderProblems(report) == "")
        #expect(try node.reconcile().changes == 0)
    }

    @Test func theInspectionOnlyReads() throws {
        let node = try TestNode()
        node.dp.modify { k in k.routes.removeAll { $0.destination == net("10.244.2.0/24") } }
        node.dp.clearCalls()
        _ = try node.inspect()
        #expect(node.dp.changes.isEmpty)
        #expect(node.dp.calls.contains(.routes(interface: nil)))
    }

    @Test func aDeletedRouteIsOneProblem() throws {
        let node = try TestNode()
        node.dp.modify { k in k.routes.removeAll { $0.destination == net("10.244.2.0/24") } }
        let inspection = try node.inspect()
        #expect(inspection.peers[0].route == .missing(wanted: "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"))
        #expect(inspection.peers[0].neighbour == .ok && inspection.peers[0].fdb == .ok)
        let report = try node.report()
        #expect(
            report.problems == [
                Problem(
                    .routeMissing, subnet: "10.244.2.0/24",
                    "10.244.2.0/24: route missing (want: 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink)")
            ])
        #expect(report.peers.map(\.verdict) == [.missing, .ok])
        #expect(report.peers[0].detail == "route missing")
        #expect(!report.consistent)
        try expectRepairs(node, changes: 1)
    }

    @Test func aDeletedNeighbourIsOneProblem() throws {
        let node = try TestNode()
        node.dp.modify { k in k.neighbours.removeAll { $0.address == ip("10.244.3.0") } }
        let report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                "10.244.3.0/24: neighbour missing (want: 10.244.3.0 dev flannel.1 lladdr 02:00:00:00:03:01 PERMANENT)"
            ])
        #expect(report.problems.map(\.code) == [.neighbourMissing])
        #expect(report.peers.map(\.verdict) == [.ok, .missing])
        try expectRepairs(node, changes: 1)
    }

    @Test func aDeletedFDBEntryIsOneProblem() throws {
        let node = try TestNode()
        node.dp.modify { k in k.fdb.removeAll { $0.mac == mac("02:00:00:00:02:01") } }
        let report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                "10.244.2.0/24: fdb entry missing (want: 02:00:00:00:02:01 dev flannel.1 dst 192.168.50.12 self permanent)"
            ])
        #expect(report.problems.map(\.code) == [.fdbMissing])
        #expect(report.peers.map(\.verdict) == [.missing, .ok])
        try expectRepairs(node, changes: 1)
    }

    @Test func aNeighbourWithAnotherMACIsOneProblem() throws {
        let node = try TestNode()
        node.dp.modify { k in
            if let i = k.neighbours.firstIndex(where: { $0.address == ip("10.244.3.0") }) {
                k.neighbours[i].mac = mac("02:00:00:00:09:09")
            }
        }
        let inspection = try node.inspect()
        #expect(
            inspection.peers[1].neighbour
                == .wrong(
                    found: "10.244.3.0 dev flannel.1 lladdr 02:00:00:00:09:09 PERMANENT",
                    wanted: "10.244.3.0 dev flannel.1 lladdr 02:00:00:00:03:01 PERMANENT"))
        #expect(inspection.peers[1].kernelMAC == mac("02:00:00:00:09:09"))
        #expect(inspection.stale.isEmpty)
        let report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                "10.244.3.0/24: neighbour 10.244.3.0 has lladdr 02:00:00:00:09:09, lease says 02:00:00:00:03:01"
            ])
        #expect(report.problems.map(\.code) == [.neighbourWrong])
        #expect(report.peers[1].verdict == .wrongMAC)
        #expect(report.peers[1].detail == "kernel has 02:00:00:00:09:09")
        try expectRepairs(node, changes: 1)
    }

    @Test func aChangedVtepMACIsWrongMACNotStale() throws {
        var node = try TestNode()
        // The peer's device got a new MAC and its lease says so; this node still has the old one.
        node.leases[2].attributes.vtepMAC = mac("02:00:00:00:03:02")
        let inspection = try node.inspect()
        #expect(inspection.stale.isEmpty)
        #expect(inspection.peers[1].neighbourMAC == mac("02:00:00:00:03:01"))
        #expect(inspection.peers[1].fdbMAC == mac("02:00:00:00:03:01"))
        let report = try node.report()
        #expect(report.peers[1].verdict == .wrongMAC)
        #expect(
            report.problems.map(\.message) == [
                "10.244.3.0/24: neighbour 10.244.3.0 has lladdr 02:00:00:00:03:01, lease says 02:00:00:00:03:02",
                "10.244.3.0/24: fdb entry to 192.168.50.13 has MAC 02:00:00:00:03:01, lease says 02:00:00:00:03:02",
            ])
        // The neighbour replaced, the new FDB entry set, the old one removed.
        try expectRepairs(node, changes: 3)
    }

    @Test func aStaleRouteIsOneProblem() throws {
        let node = try TestNode()
        let dev = node.device
        node.dp.modify { k in
            k.routes.append(
                Route(
                    destination: net("10.244.9.0/24"), gateway: ip("10.244.9.0"), interface: dev, onlink: true,
                    proto: RouteProtocol.podnet))
        }
        let inspection = try node.inspect()
        #expect(
            inspection.stale == [
                StaleEntry(
                    kind: .route, entry: "10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink",
                    subnet: net("10.244.9.0/24"), remote: ip("10.244.9.0"))
            ])
        let report = try node.report()
        #expect(
            report.problems == [
                Problem(
                    .staleRoute, subnet: "10.244.9.0/24",
                    "stale route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink (no lease)")
            ])
        #expect(report.peers.map(\.verdict) == [.ok, .ok, .stale])
        #expect(report.peers[2].subnet == "10.244.9.0/24")
        #expect(
            report.peers[2].entries == [
                EntryRow(
                    kind: .route, state: .stale, found: "10.244.9.0/24 via 10.244.9.0 dev flannel.1 onlink", wanted: nil
                )
            ])
        try expectRepairs(node, changes: 1)
    }

    @Test func aDeletedLeaseLeavesOneStaleRowOfThreeEntries() throws {
        var node = try TestNode()
        node.leases.removeAll { $0.subnet == net("10.244.3.0/24") }
        let report = try node.report()
        #expect(report.peers.map(\.verdict) == [.ok, .stale])
        #expect(report.peers[1].subnet == "10.244.3.0/24")
        #expect(report.peers[1].publicIP == "192.168.50.13")
        #expect(report.peers[1].vtepMAC == "02:00:00:00:03:01")
        #expect(report.problems.map(\.code) == [.staleRoute, .staleNeighbour, .staleFDB])
        #expect(report.problems.allSatisfy { $0.message.hasSuffix("(no lease)") })
        try expectRepairs(node, changes: 3)
    }

    @Test func aRouteOfAnotherGatewayIsWrong() throws {
        let node = try TestNode()
        let eth0 = node.eth0.index
        node.dp.modify { k in
            if let i = k.routes.firstIndex(where: { $0.destination == net("10.244.2.0/24") }) {
                k.routes[i] = Route(
                    destination: net("10.244.2.0/24"), gateway: ip("192.168.50.99"), interface: eth0,
                    proto: RouteProtocol.boot)
            }
        }
        let report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                "10.244.2.0/24: route is 10.244.2.0/24 via 192.168.50.99 dev eth0 proto boot "
                    + "(want: 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink)"
            ])
        #expect(report.peers[0].verdict == .wrong)
        try expectRepairs(node, changes: 1)
    }

    @Test func aMissingDeviceIsOneProblemAndEveryPeerMissing() throws {
        let node = try TestNode()
        let dev = node.device
        try node.dp.deleteLink(dev)
        let inspection = try node.inspect()
        #expect(!inspection.deviceFound)
        #expect(inspection.device == "flannel.1")
        #expect(
            inspection.peers.map(\.route) == [
                .missing(wanted: "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"),
                .missing(wanted: "10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink"),
            ])
        #expect(inspection.peers.allSatisfy { $0.neighbour != .ok && $0.fdb != .ok })
        let report = try node.report()
        #expect(
            report.problems.map(\.message) == ["device flannel.1 missing: every peer's entries on it are missing"])
        #expect(report.peers.map(\.verdict) == [.missing, .missing])
        #expect(report.peers.map(\.detail) == ["device flannel.1 missing", "device flannel.1 missing"])
        #expect(report.device == DeviceStatus(name: "flannel.1", found: false, mac: nil, problems: []))
        let repairs = try node.reconcile()
        #expect(repairs.programmed == EntryCounts(routes: 2, neighbours: 2, fdbEntries: 2))
        #expect(try node.report().consistent)
    }

    @Test func aDeviceThatIsDownIsAProblemAndItsRoutesAreGone() throws {
        let node = try TestNode()
        // As in the kernel, the routes through a device go with it when it goes down.
        try node.dp.setLink(node.device, LinkChange(up: false))
        let report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                "flannel.1 is down",
                "10.244.2.0/24: route missing (want: 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink)",
                "10.244.3.0/24: route missing (want: 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink)",
            ])
        #expect(report.problems.map(\.code) == [.device, .routeMissing, .routeMissing])
        #expect(report.peers.map(\.verdict) == [.missing, .missing])
        try expectRepairs(node, changes: 2)
    }

    @Test func whatReconcileFixesOnTheDeviceIsOneProblemEach() throws {
        let node = try TestNode()
        let dev = node.device
        node.dp.modify { k in
            if let i = k.links.firstIndex(where: { $0.index == dev }) { k.links[i].mtu = 1400 }
            k.addresses[dev] = [net("10.244.7.0/32")]
        }
        var report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                "flannel.1 has MTU 1400, want 1450", "flannel.1 lacks its address 10.244.1.0/32",
                "flannel.1 has a stale address 10.244.7.0/32",
            ])
        #expect(report.device?.problems.count == 3)
        #expect(report.peers.map(\.verdict) == [.ok, .ok])
        _ = try node.reconcile()
        #expect(try node.report().problems == [])

        node.dp.modify { k in
            if let i = k.links.firstIndex(where: { $0.index == dev }) { k.links[i].vxlan?.port = 4789 }
        }
        report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                "flannel.1 has other settings than podnetd gives it: podnetd recreates it"
            ])
    }

    @Test func hostGWComparesOneRoutePerPeer() throws {
        // A peer across a router cannot be a host-gw next hop: skipped, not a problem.
        let node = try TestNode(backend: "host-gw", extra: [lease("10.244.4.0/24", "172.16.0.4", backend: "host-gw")])
        var inspection = try node.inspect()
        #expect(inspection.device == nil && inspection.deviceFound)
        #expect(inspection.mtu == 1500)
        #expect(inspection.isConsistent)
        #expect(inspection.peers.map(\.route) == [.ok, .ok, .ok])
        #expect(inspection.peers.map { $0.neighbour == nil && $0.fdb == nil && !$0.viaDevice } == [true, true, true])
        #expect(inspection.peers[2].skipped?.contains("not on a subnet eth0 reaches directly") == true)
        var report = try node.report()
        #expect(report.problems == [])
        #expect(report.device == nil)
        #expect(report.peers.map(\.verdict) == [.ok, .ok, .skipped])

        node.dp.modify { k in k.routes.removeAll { $0.destination == net("10.244.3.0/24") } }
        inspection = try node.inspect()
        #expect(inspection.peers[1].route == .missing(wanted: "10.244.3.0/24 via 192.168.50.13 dev eth0"))
        report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                "10.244.3.0/24: route missing (want: 10.244.3.0/24 via 192.168.50.13 dev eth0)"
            ])
        #expect(report.peers.map(\.verdict) == [.ok, .missing, .skipped])
        try expectRepairs(node, changes: 1)
    }

    @Test func ipipHasARoutePerPeerOnItsDevice() throws {
        let node = try TestNode(backend: "ipip")
        let inspection = try node.inspect()
        #expect(inspection.device == "flannel.ipip" && inspection.deviceFound && inspection.isConsistent)
        #expect(inspection.mtu == 1480)
        node.dp.modify { k in k.routes.removeAll { $0.destination == net("10.244.2.0/24") } }
        #expect(
            try node.report().problems.map(\.message) == [
                "10.244.2.0/24: route missing (want: 10.244.2.0/24 via 192.168.50.12 dev flannel.ipip onlink)"
            ])
    }

    @Test func aRejectedLeaseIsARowNotAProblem() throws {
        let node = try TestNode(extra: [
            lease("10.244.5.0/24", "127.0.0.1", mac: "02:00:00:00:05:01"),
            lease("10.244.6.0/24", "192.168.50.16", backend: "host-gw"),
        ])
        let report = try node.report()
        #expect(report.problems == [])
        #expect(report.consistent)
        #expect(report.peers.map(\.verdict) == [.ok, .ok, .rejected, .rejected])
        #expect(report.peers[2].detail == "its PublicIP 127.0.0.1 is a loopback address")
        #expect(report.peers[3].detail == #"its BackendType is "host-gw", not "vxlan""#)
        #expect(report.peers[2].entries.isEmpty)
    }

    @Test func aRouteLeftForARejectedLeaseIsStale() throws {
        let node = try TestNode(extra: [lease("10.244.6.0/24", "192.168.50.16", backend: "host-gw")])
        let eth0 = node.eth0.index
        node.dp.modify { k in
            k.routes.append(
                Route(
                    destination: net("10.244.6.0/24"), gateway: ip("192.168.50.16"), interface: eth0,
                    proto: RouteProtocol.podnet))
        }
        let report = try node.report()
        #expect(
            report.problems.map(\.message) == [
                #"stale route 10.244.6.0/24 via 192.168.50.16 dev eth0 (lease rejected: its BackendType is "host-gw", not "vxlan")"#
            ])
        #expect(report.peers[2].verdict == .stale)
        try expectRepairs(node, changes: 1)
    }

    @Test func theNodeItselfSubnetEnvAndDaemon() throws {
        let node = try TestNode()
        var report = try node.report(subnetEnv: .some(nil))
        #expect(report.problems.map(\.message) == ["subnet.env missing at /run/flannel/subnet.env"])
        #expect(report.problems.map(\.code) == [.subnetEnvMissing])
        #expect(!report.subnetEnv.present)

        var env = node.subnetEnv
        env["FLANNEL_SUBNET"] = "10.244.7.1/24"
        env["FLANNEL_MTU"] = nil
        report = try node.report(subnetEnv: env)
        #expect(
            report.problems.map(\.message) == [
                "subnet.env at /run/flannel/subnet.env has FLANNEL_SUBNET=10.244.7.1/24, want 10.244.1.1/24",
                "subnet.env at /run/flannel/subnet.env has no FLANNEL_MTU (want: 1450)",
            ])

        report = try node.report(
            daemon: DaemonStatus(
                endpoint: "http://127.0.0.1:8471", healthy: true, ready: false, detail: "etcd unreachable"))
        #expect(report.problems.map(\.message) == ["podnetd at http://127.0.0.1:8471 is not ready: etcd unreachable"])
        report = try node.report(daemon: DaemonStatus(endpoint: "http://127.0.0.1:8471", healthy: true, ready: true))
        #expect(report.problems == [])

        let noLease = NodeReport(
            config: node.config, own: nil, leases: node.leases.filter { $0.subnet != node.own.subnet },
            nodeAddresses: node.nodeAddresses, inspection: nil, subnetEnv: nil, now: now)
        #expect(
            noLease.problems.map(\.message) == [
                "no lease for this node", "subnet.env missing at /run/flannel/subnet.env",
            ])
        #expect(!noLease.inspected && noLease.lease == nil)
        #expect(noLease.peers.map(\.verdict) == [.unchecked, .unchecked])
    }

    @Test func aLeaseThatDoesNotCarryTheDevicesMACIsAProblem() throws {
        var node = try TestNode()
        node = TestNode(copy: node, ownMAC: mac("02:00:00:00:01:99"))
        #expect(
            try node.report().problems.map(\.message) == [
                "this node's lease has VtepMAC 02:00:00:00:01:99, flannel.1 has 02:00:00:00:01:01: peers send to the wrong MAC"
            ])
    }

    @Test func ownLeaseAndPeersAsTheDaemonTakesThem() throws {
        let node = try TestNode(extra: [lease("10.244.5.0/24", "127.0.0.1", mac: "02:00:00:00:05:01")])
        #expect(ownLease(in: node.leases, publicIP: nodeIP) == node.own)
        #expect(node.peers.map(\.subnet) == [net("10.244.2.0/24"), net("10.244.3.0/24")])
    }

    /// The daemon's reconcile makes exactly `changes` kernel changes, after which the node is
    /// consistent again.
    private func expectRepairs(_ node: TestNode, changes: Int, sourceLocation: SourceLocation = #_sourceLocation) throws
    {
        let repairs = try node.reconcile()
        #expect(repairs.changes == changes, sourceLocation: sourceLocation)
        #expect(repairs.failures == [], sourceLocation: sourceLocation)
        let after = try node.report()
        #expect(after.problems == [], sourceLocation: sourceLocation)
        #expect(try node.inspect().isConsistent, sourceLocation: sourceLocation)
    }
}

extension TestNode {
    /// `node` with its own lease publishing `ownMAC` as VtepMAC.
    init(copy node: TestNode, ownMAC: MACAddress) {
        self = node
        var own = node.own
        own.attributes.vtepMAC = ownMAC
        self.own = own
        leases[0] = own
    }
}
