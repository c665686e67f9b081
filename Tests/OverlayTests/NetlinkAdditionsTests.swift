// The Netlink additions the overlay uses, against the kernel in throw-away namespaces: VXLAN
// devices read back, neighbours, FDB entries, route replace/onlink/per-device listing, ipip.

import Addressing
import NetNS
import Netlink
import TestSupport
import Testing

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct NetlinkAdditionsTests {
    func session(_ ns: TestNamespace) throws -> NetlinkSession {
        try NetworkNamespace(path: ns.path).run { try NetlinkSession() }
    }

    @Test func vxlanDeviceIsCreatedAndReadBack() throws {
        try withNode { ns in
            let nl = try session(ns)
            let ul0 = try #require(try nl.link(named: "ul0"))
            let wanted = VXLANAttributes(
                vni: 42, local: ip("192.168.77.1"), port: 4789, learning: false, underlyingInterface: ul0.index)
            try nl.addVXLAN(name: "flannel.42", wanted, mtu: 1400, mac: mac("02:42:00:00:00:01"))
            let link = try #require(try nl.link(named: "flannel.42"))
            #expect(link.kind == "vxlan")
            #expect(link.mtu == 1400)
            #expect(link.mac == mac("02:42:00:00:00:01"))
            #expect(link.vxlan == wanted)
            let details = try ns.sh("ip -d link show flannel.42")
            #expect(details.contains("vxlan id 42 local 192.168.77.1 dev ul0"))
            #expect(details.contains("dstport 4789 nolearning"))

            // Again: EEXIST, typed.
            #expect(throws: NetlinkError.self) { try nl.addVXLAN(name: "flannel.42", wanted) }
            do throws(NetlinkError) { try nl.addVXLAN(name: "flannel.42", wanted) } catch { #expect(error.isExists) }

            // The kernel default port and learning when not given.
            try nl.addVXLAN(name: "vx1", VXLANAttributes(vni: 1, learning: true))
            let other = try #require(try nl.link(named: "vx1")?.vxlan)
            #expect(other.port == 8472 && other.learning && other.local == nil && other.underlyingInterface == nil)
            #expect(try nl.link(named: "ul0")?.vxlan == nil)
        }
    }

    @Test func neighboursAreReplacedListedAndDeleted() throws {
        try withNode { ns in
            let nl = try session(ns)
            try nl.addVXLAN(name: "flannel.1", VXLANAttributes(vni: 1))
            let dev = try #require(try nl.link(named: "flannel.1")).index
            let n = Neighbour(address: ip("10.5.2.0"), mac: mac("02:00:00:00:00:02"), interface: dev)
            try nl.replaceNeighbour(n)
            try nl.replaceNeighbour(n)  // idempotent
            #expect(try ns.permanentNeighbours(dev: "flannel.1") == ["10.5.2.0 lladdr 02:00:00:00:00:02 PERMANENT"])
            var moved = n
            moved.mac = mac("02:00:00:00:00:03")
            try nl.replaceNeighbour(moved)
            #expect(try nl.neighbours(interface: dev, family: .v4) == [moved])
            // Filtered by device: ul0's entries are not listed.
            try ns.sh("ip neigh replace 192.168.77.9 lladdr 02:00:00:00:00:09 dev ul0 nud permanent")
            #expect(try nl.neighbours(interface: dev, family: .v4).count == 1)
            try nl.deleteNeighbour(n.address, interface: dev)
            #expect(try nl.neighbours(interface: dev, family: .v4).isEmpty)
            do throws(NetlinkError) {
                try nl.deleteNeighbour(n.address, interface: dev)
                Issue.record("deleting a missing neighbour must fail")
            } catch { #expect(error.isNotFound) }
        }
    }

    @Test func fdbEntriesAreReplacedAppendedListedAndDeleted() throws {
        try withNode { ns in
            let nl = try session(ns)
            try nl.addVXLAN(name: "flannel.1", VXLANAttributes(vni: 1))
            let dev = try #require(try nl.link(named: "flannel.1")).index
            let m = mac("02:00:00:00:00:02")
            try nl.replaceFDB(FDBEntry(mac: m, interface: dev, destination: ip("192.168.77.2")))
            try nl.replaceFDB(FDBEntry(mac: m, interface: dev, destination: ip("192.168.77.2")))
            #expect(try ns.fdbRemotes(dev: "flannel.1") == ["02:00:00:00:00:02 dst 192.168.77.2 self permanent"])
            // Replace moves the MAC's remote.
            try nl.replaceFDB(FDBEntry(mac: m, interface: dev, destination: ip("192.168.77.3")))
            #expect(try nl.fdbEntries(interface: dev).map(\.destination) == [ip("192.168.77.3")])
            try nl.deleteFDB(FDBEntry(mac: m, interface: dev, destination: ip("192.168.77.3")))
            #expect(try nl.fdbEntries(interface: dev).isEmpty)
            do throws(NetlinkError) {
                try nl.deleteFDB(FDBEntry(mac: m, interface: dev, destination: nil))
                Issue.record("deleting a missing FDB entry must fail")
            } catch { #expect(error.isNotFound) }

            // Append gives the all-zeros (flood) MAC several remotes; the dump lists each.
            let flood = mac("00:00:00:00:00:00")
            try nl.appendFDB(FDBEntry(mac: flood, interface: dev, destination: ip("192.168.77.3")))
            try nl.appendFDB(FDBEntry(mac: flood, interface: dev, destination: ip("192.168.77.4")))
            let both = try nl.fdbEntries(interface: dev)
            #expect(Set(both.compactMap(\.destination)) == [ip("192.168.77.3"), ip("192.168.77.4")])
            #expect(both.count == 2 && both.allSatisfy { $0.isSelf && $0.isPermanent && $0.mac == flood })
            try nl.deleteFDB(FDBEntry(mac: flood, interface: dev, destination: ip("192.168.77.3")))
            #expect(try nl.fdbEntries(interface: dev).compactMap(\.destination) == [ip("192.168.77.4")])
            // Other devices' entries are not listed.
            #expect(
                try nl.fdbEntries(interface: try #require(try nl.link(named: "ul0")).index).allSatisfy {
                    $0.interface != dev
                })
        }
    }

    @Test func routesAreReplacedOnlinkAndListedPerDevice() throws {
        try withNode { ns in
            let nl = try session(ns)
            try nl.addVXLAN(name: "flannel.1", VXLANAttributes(vni: 1))
            let dev = try #require(try nl.link(named: "flannel.1")).index
            try nl.setLink(dev, LinkChange(up: true))
            let ul0 = try #require(try nl.link(named: "ul0")).index
            let onlink = Route(destination: net("10.5.2.0/24"), gateway: ip("10.5.2.0"), interface: dev, onlink: true)
            try nl.replaceRoute(onlink)
            try nl.replaceRoute(onlink)
            #expect(try ns.lines("ip route show 10.5.2.0/24") == ["10.5.2.0/24 via 10.5.2.0 dev flannel.1 onlink"])
            let read = try nl.routes(family: .v4, interface: dev)
            #expect(read.count == 1)
            #expect(
                read.first.map { $0.onlink && $0.gateway == ip("10.5.2.0") && $0.proto == 3 && $0.priority == 0 }
                    == true)
            // Replace moves it to another device and gateway.
            try nl.replaceRoute(Route(destination: net("10.5.2.0/24"), gateway: ip("192.168.77.2"), interface: ul0))
            #expect(try ns.lines("ip route show 10.5.2.0/24") == ["10.5.2.0/24 via 192.168.77.2 dev ul0"])
            #expect(try nl.routes(family: .v4, interface: dev).isEmpty)
            #expect(try nl.routes(family: .v4, interface: ul0).map(\.destination).contains(net("10.5.2.0/24")))
            // A route added by `ip route` (proto boot) can be deleted.
            try ns.sh("ip route add 10.5.3.0/24 via 192.168.77.3 dev ul0 metric 7")
            try nl.deleteRoute(
                Route(destination: net("10.5.3.0/24"), gateway: ip("192.168.77.3"), interface: ul0, priority: 7))
            try nl.deleteRoute(Route(destination: net("10.5.2.0/24"), gateway: ip("192.168.77.2"), interface: ul0))
            #expect(try ns.lines("ip route show root 10.5.0.0/16").isEmpty)
        }
    }

    @Test(.enabled(if: !kernelHasIPIP, "the kernel has ipip: the failure path cannot be shown here"))
    func ipipCreationFailsWithNotSupported() throws {
        try withNode { ns in
            let nl = try session(ns)
            do throws(NetlinkError) {
                try nl.addIPIP(name: "flannel.ipip", IPIPAttributes(local: ip("192.168.77.1")), mtu: 1480)
                Issue.record("created an ipip device on a kernel without ipip")
            } catch {
                guard case .libnl(let code, let op, _) = error else { Issue.record("unexpected \(error)"); return }
                #expect(code == .notSupported)
                #expect(op.contains("RTM_NEWLINK ipip flannel.ipip"))
            }
        }
    }
}
