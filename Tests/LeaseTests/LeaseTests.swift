// The lease layer against an in-memory registry: flanneld's config rules, the lease value, and
// acquisition (reuse by public IP, the subnet file's subnet, random free subnets, races), and
// the backend registry.

import Addressing
import Foundation
import Logging
import TestSupport
import Testing

@testable import Overlay

let logger = Logger(label: "test")
func attrs(_ ip: String) -> LeaseAttributes {
    LeaseAttributes(publicIP: IPAddress(ip)!, backendType: "vxlan", vni: 1, vtepMAC: MACAddress("0a:00:00:00:00:01"))
}
func config(_ json: String) throws -> NetworkConfig { try NetworkConfig(json: Data(json.utf8)) }

/// Each config of `cases` is refused with an error containing its message.
func expectRefused(_ cases: [(String, String)], sourceLocation: SourceLocation = #_sourceLocation) {
    for (json, message) in cases {
        do {
            _ = try config(json)
            Issue.record("\(json) was accepted", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)".contains(message), "\(json): \(error)", sourceLocation: sourceLocation)
        }
    }
}

@Suite struct NetworkConfigTests {
    @Test func defaultsAsFlanneld() throws {
        let c = try config(#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#)
        #expect(c.subnetLength == 24)
        #expect(c.subnetMin.description == "10.5.1.0")
        #expect(c.subnetMax.description == "10.5.255.0")
        #expect(Array(c.subnets).count == 255)
        #expect(c.backendType == "vxlan")
        // Field names match case-insensitively, as Go's encoding/json does.
        let lower = try config(#"{"network":"10.6.0.0/24","backend":{"type":"HOST-GW"}}"#)
        #expect(lower.subnetLength == 26)
        #expect(lower.backendType == "host-gw")
    }

    @Test func invalidConfigsSayWhy() {
        let cases: [(String, String)] = [
            (#"{"Backend":{"Type":"vxlan"}}"#, "please define a correct Network parameter"),
            (#"{"Network":"10.5.0.0/30","Backend":{"Type":"vxlan"}}"#, "Minimum useful network prefix is /28"),
            (#"{"Network":"10.5.0.0/16","SubnetLen":17,"Backend":{"Type":"vxlan"}}"#, "at least four subnets"),
            (#"{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0","Backend":{"Type":"vxlan"}}"#, "not in the range"),
            (#"{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.7","Backend":{"Type":"vxlan"}}"#, "SubnetLen boundary"),
            (#"{"Network":"10.5.0.0/16"}"#, "backend type \"udp\" is not supported"),
            ("[1]", "not a JSON object"),
        ]
        expectRefused(cases)
    }
}

@Suite struct LeaseValueTests {
    @Test func keysAndValuesAsFlanneld() throws {
        let n = IPNetwork("10.5.34.0/24")!
        #expect(SubnetKey.name(n) == "10.5.34.0-24")
        #expect(SubnetKey.parse("/coreos.com/network/subnets/10.5.34.0-24") == SubnetKey(n))
        #expect(SubnetKey.parse("/coreos.com/network/subnets/garbage") == nil)
        let flanneld =
            #"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        let a = try #require(LeaseAttributes(json: Data(flanneld.utf8)))
        #expect(
            a
                == LeaseAttributes(
                    publicIP: IPAddress("192.168.64.3")!, backendType: "vxlan", vni: 1,
                    vtepMAC: MACAddress("c6:d2:32:6f:8f:44")))
        let round = try #require(JSONSerialization.jsonObject(with: a.json()) as? [String: Any])
        #expect(round["PublicIPv6"] is NSNull)
        #expect((round["BackendData"] as? [String: Any])?["VtepMAC"] as? String == "c6:d2:32:6f:8f:44")
        let hostgw = #"{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"host-gw"}"#
        #expect(LeaseAttributes(json: Data(hostgw.utf8))?.backendType == "host-gw")
        // The exact bytes podnetd writes: flanneld's fields, keys sorted.
        #expect(
            String(decoding: a.json(), as: UTF8.self)
                == #"{"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendType":"vxlan","PublicIP":"192.168.64.3","PublicIPv6":null}"#
        )
        // Go reads field names case-insensitively and a whole number written as 1.0 into an int.
        let spelled =
            #"{"publicip":"192.168.64.3","backendtype":"VXLAN","backenddata":{"vni":1.0,"vtepmac":"c6:d2:32:6f:8f:44"}}"#
        #expect(LeaseAttributes(json: Data(spelled.utf8)) == a)
        for bad in [#"{"PublicIP":"fd00::1"}"#, #"{"PublicIP":7}"#, "[]", "{", ""] {
            #expect(LeaseAttributes(json: Data(bad.utf8)) == nil, "\(bad)")
        }
    }

    @Test func subnetFileAsFlanneldWritesIt() throws {
        let text = SubnetFile.render(
            network: IPNetwork("10.5.0.0/16")!, subnet: IPNetwork("10.5.34.0/24")!, mtu: 1450, ipMasq: false)
        #expect(
            text == "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.34.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        )
        let path = NSTemporaryDirectory() + "podnet-subnet-\(UInt32.random(in: 0...UInt32.max))/subnet.env"
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        try SubnetFile.write(text, to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == text)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o644)
        #expect(SubnetFile.previousSubnet(at: path) == IPNetwork("10.5.34.0/24"))
    }
}

@Suite struct SubnetManagerTests {
    let conf = try! config(#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#)

    @Test func newNodeGetsAFreeSubnetInRange() async throws {
        let r = InMemoryLeaseRegistry(config: nil)
        r.put(Lease(subnet: IPNetwork("10.5.1.0/24")!, attributes: attrs("192.0.2.9"), etcdLease: 1))
        let l = try await SubnetManager(registry: r, logger: logger).acquire(
            config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(conf.accepts(l.subnet))
        #expect(l.subnet != IPNetwork("10.5.1.0/24"))
        #expect(l.etcdLease != nil)
    }

    @Test func nodeKeepsItsLeaseByPublicIP() async throws {
        let r = InMemoryLeaseRegistry(config: nil)
        r.put(Lease(subnet: IPNetwork("10.5.77.0/24")!, attributes: attrs("192.0.2.1"), etcdLease: 1))
        let l = try await SubnetManager(registry: r, logger: logger).acquire(
            config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(l.subnet == IPNetwork("10.5.77.0/24"))
        #expect(l.etcdLease != 1)  // re-put with a fresh etcd lease
    }

    @Test func reservationStaysWithoutTTL() async throws {
        let r = InMemoryLeaseRegistry(config: nil)
        r.put(Lease(subnet: IPNetwork("10.5.9.0/24")!, attributes: attrs("192.0.2.1"), etcdLease: nil))
        let m = SubnetManager(registry: r, logger: logger)
        let l = try await m.acquire(config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(l.subnet == IPNetwork("10.5.9.0/24"))
        #expect(l.isReservation)
        #expect(try await m.renew(l).isReservation)
    }

    @Test func incompatibleOwnLeaseIsReplaced() async throws {
        let r = InMemoryLeaseRegistry(config: nil)
        r.put(Lease(subnet: IPNetwork("10.9.1.0/24")!, attributes: attrs("192.0.2.1"), etcdLease: 1))
        let l = try await SubnetManager(registry: r, logger: logger).acquire(
            config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(conf.accepts(l.subnet))
        #expect(try await r.leases().leases.count == 1)
    }

    @Test func subnetFileHintIsUsedWhenFree() async throws {
        let r = InMemoryLeaseRegistry(config: nil)
        let m = SubnetManager(registry: r, logger: logger)
        let hint = IPNetwork("10.5.42.0/24")!
        #expect(
            try await m.acquire(config: conf, attributes: attrs("192.0.2.1"), previous: SubnetKey(hint)).subnet == hint)
        // Taken by someone else: another subnet instead.
        let other = try await m.acquire(config: conf, attributes: attrs("192.0.2.2"), previous: SubnetKey(hint))
        #expect(other.subnet != hint)
    }

    @Test func lostRaceIsRetried() async throws {
        let r = InMemoryLeaseRegistry(config: nil)
        // Every first attempt loses: another node takes the chosen subnet just before the create.
        let raced = Counter()
        r.setBeforeCreate { subnet in
            raced.increment() == 0 ? Lease(subnet: subnet, attributes: attrs("192.0.2.99"), etcdLease: 7) : nil
        }
        let l = try await SubnetManager(registry: r, logger: logger).acquire(
            config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(raced.value == 2)
        let all = try await r.leases().leases
        #expect(all.count == 2)
        #expect(Set(all.map(\.subnet)).count == 2)
        #expect(l.attributes.publicIP == IPAddress("192.0.2.1"))
    }

    @Test func concurrentNodesGetDistinctSubnets() async throws {
        // A /26 in /28s: 10.7.0.16, .32 and .48 (flanneld skips only the first).
        let small = try config(#"{"Network":"10.7.0.0/26","Backend":{"Type":"vxlan"}}"#)
        #expect(Array(small.subnets).map(\.description) == ["10.7.0.16/28", "10.7.0.32/28", "10.7.0.48/28"])
        let r = InMemoryLeaseRegistry(config: nil)
        let m = SubnetManager(registry: r, logger: logger)
        async let a = m.acquire(config: small, attributes: attrs("192.0.2.1"), previous: nil)
        async let b = m.acquire(config: small, attributes: attrs("192.0.2.2"), previous: nil)
        async let c = m.acquire(config: small, attributes: attrs("192.0.2.3"), previous: nil)
        let got = try await [a, b, c].map(\.subnet)
        #expect(Set(got).count == 3)
        // A fourth node finds the network full: an error, nothing written.
        await #expect(throws: LeaseError.outOfSubnets(IPNetwork("10.7.0.0/26")!)) {
            try await m.acquire(config: small, attributes: attrs("192.0.2.4"), previous: nil)
        }
        #expect(try await r.leases().leases.count == 3)
    }
}

@Suite struct TakenSubnetsTests {
    /// The index answers as a pass over every taken subnet does, for leases of any length
    /// (a hand-written /16 or /26 among the /24s) and candidates on every side of them.
    @Test func agreesWithTheOverlapOfEveryLease() throws {
        let taken = ["10.5.3.0/24", "10.5.4.0/24", "10.5.16.0/20", "10.5.100.64/26", "10.6.0.0/16", "10.5.9.0/24"]
            .map { IPNetwork($0)! }
        let index = TakenSubnets(taken)
        var candidates = (0..<256).map { IPNetwork("10.5.\($0).0/24")! }
        candidates += ["10.6.200.0/24", "10.7.0.0/24", "10.4.255.0/24", "10.5.100.0/24", "10.5.0.0/16"]
            .map { IPNetwork($0)! }
        for c in candidates {
            #expect(index.isFree(c) == !taken.contains { $0.overlaps(c) }, "\(c)")
        }
        #expect(TakenSubnets([]).isFree(IPNetwork("10.5.0.0/24")!))
    }

    @Test func aNearlyFullNetworkYieldsOneOfTheSubnetsLeft() async throws {
        // The first 1000 subnets of a /14 taken: the node gets one of those left.
        let wide = try config(#"{"Network":"10.96.0.0/14","Backend":{"Type":"vxlan"}}"#)
        let r = InMemoryLeaseRegistry(config: nil)
        let all = Array(wide.subnets)
        for (i, s) in all.prefix(1000).enumerated() {
            r.put(Lease(subnet: s, attributes: attrs("192.0.\(2 + i / 250).\(i % 250 + 1)"), etcdLease: 1))
        }
        let l = try await SubnetManager(registry: r, logger: logger).acquire(
            config: wide, attributes: attrs("198.51.100.1"), previous: nil)
        #expect(all.dropFirst(1000).contains(l.subnet))
    }
}

final class Counter: @unchecked Sendable {
    private var n = 0
    private let lock = NSLock()
    func increment() -> Int {
        lock.withLock {
            defer { n += 1 }; return n
        }
    }
    var value: Int { lock.withLock { n } }
}

/// The backend options and the checks against hostile values (issue 8, items 4 to 6).
@Suite struct ConfigHardeningTests {
    func backend(_ options: String) throws -> NetworkConfig {
        try config(#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"\#(options)}}"#)
    }

    func expectError(_ json: String, _ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try config(json)
            Issue.record("\(json) was accepted", sourceLocation: sourceLocation)
        } catch {
            for f in fragments { #expect("\(error)".contains(f), "\(json): \(error)", sourceLocation: sourceLocation) }
        }
    }

    @Test func backendOptionsMatchKeysAsGoDoes() throws {
        for key in ["VNI", "vni", "Vni"] { #expect(try backend(#","\#(key)":7"#).vxlan.vni == 7, "\(key)") }
        let all = try backend(#","port":4789,"mtu":9000,"gbp":true,"LEARNING":true,"directrouting":true"#).vxlan
        #expect(all == VXLANConfig(vni: 1, port: 4789, mtu: 9000, gbp: true, learning: true, directRouting: true))
        // An exact key wins over one that only folds alike, whatever the order.
        #expect(try backend(#","vni":2,"VNI":3"#).vxlan.vni == 3)
        #expect(try backend(#","VNI":3,"vni":2"#).vxlan.vni == 3)
        // 0 means the default for Port and MTU, as in flanneld; null means absent.
        #expect(try backend(#","Port":0,"MTU":0,"VNI":null"#).vxlan == VXLANConfig())
        #expect(
            try config(#"{"Network":"10.5.0.0/16","backend":{"type":"ipip","directRouting":true}}"#).ipip.directRouting)
    }

    @Test func outOfRangeBackendNumbersAreConfigErrorsNamingKeyAndRange() {
        let cases: [(String, [String])] = [
            (#","MTU":5000000000"#, ["Backend.MTU", "118...65535"]),
            (#","MTU":-9223372036854775808"#, ["Backend.MTU", "118...65535"]),
            (#","MTU":100"#, ["Backend.MTU", "118...65535"]),
            (#","Port":70000"#, ["Backend.Port", "1...65535"]),
            (#","Port":-1"#, ["Backend.Port"]),
            (#","VNI":0"#, ["Backend.VNI", "1...16777215"]),
            (#","VNI":4294967296"#, ["Backend.VNI", "1...16777215"]),
            (#","VNI":1e30"#, ["Backend.VNI", "whole number"]),
            (#","VNI":1.5"#, ["Backend.VNI", "whole number"]),
            (#","VNI":"1""#, ["Backend.VNI", "whole number"]),
            (#","GBP":"yes""#, ["Backend.GBP", "true or false"]),
            (#","DirectRouting":1"#, ["Backend.DirectRouting", "true or false"]),
        ]
        for (options, fragments) in cases {
            expectError(#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"\#(options)}}"#, fragments)
        }
        expectError(
            #"{"Network":"10.5.0.0/16","Backend":{"Type":"ipip","DirectRouting":"no"}}"#, ["Backend.DirectRouting"])
        expectError(#"{"Network":"10.5.0.0/16","Backend":5}"#, ["Backend must be an object"])
        expectError(#"{"Network":"10.5.0.0/16","Backend":{"Type":7}}"#, ["Backend.Type must be a string"])
        expectError(#"{"Network":"10.5.0.0/16","SubnetLen":"26","Backend":{"Type":"vxlan"}}"#, ["SubnetLen"])
        expectError(
            #"{"Network":"10.5.0.0/16","EnableNFTables":"true","Backend":{"Type":"vxlan"}}"#, ["EnableNFTables"])
    }

    @Test func networksOverReservedRangesAreRefused() {
        for n in ["0.0.0.0/0", "0.0.0.0/1", "127.0.0.0/16", "169.254.0.0/16", "224.0.0.0/8", "240.0.0.0/8"] {
            expectError(#"{"Network":"\#(n)","Backend":{"Type":"vxlan"}}"#, ["Network", "overlaps"])
        }
        #expect((try? config(#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#)) != nil)
    }

    @Test func aConfigWhoseSubnetsHoldTheNodesAddressIsRefusedOnThatNode() throws {
        let node = [IPAddress("192.168.50.11")!]
        let over = try config(#"{"Network":"192.168.0.0/16","Backend":{"Type":"vxlan"}}"#)
        #expect(over.problem(onNodeWith: node)?.description.contains("192.168.50.11") == true)
        let min = try config(#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.50.0","Backend":{"Type":"vxlan"}}"#)
        #expect(min.problem(onNodeWith: [IPAddress("10.244.77.3")!]) != nil)
        // Left out by SubnetMin/SubnetMax (the first subnet is never leased): usable.
        #expect(min.problem(onNodeWith: [IPAddress("10.244.0.5")!]) == nil)
        #expect(try config(#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).problem(onNodeWith: node) == nil)
    }

    @Test func hostilePeerLeasesAreRejectedWithAReason() throws {
        let c = try config(#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#)
        let me = [IPAddress("192.168.50.11")!]
        func lease(
            _ key: String, _ publicIP: String = "192.168.50.12", backend: String = "vxlan",
            mac: String? = "02:00:00:00:00:12"
        ) -> Lease {
            Lease(
                key: SubnetKey.parse(key)!,
                attributes: LeaseAttributes(
                    publicIP: IPAddress(publicIP)!, backendType: backend, vni: 1,
                    vtepMAC: mac.flatMap { MACAddress($0) }), etcdLease: 1)
        }
        func reason(_ l: Lease) -> LeaseRejection.Reason? {
            c.check(peer: l, backendType: "vxlan", nodeAddresses: me)?.reason
        }
        #expect(reason(lease("10.5.7.0-24")) == nil)
        #expect(reason(lease("192.168.77.2-32")) == .outsideNetwork)
        #expect(reason(lease("169.254.169.254-32")) == .outsideNetwork)
        #expect(reason(lease("10.0.0.0-8")) == .outsideNetwork)
        #expect(reason(lease("10.5.7.0-25")) == .wrongSubnetLength)
        #expect(reason(lease("10.5.0.0-16")) == .wrongSubnetLength)
        for bad in [
            "127.0.0.1", "127.8.9.10", "0.0.0.0", "255.255.255.255", "224.0.0.1", "239.1.1.1", "240.0.0.1", "10.5.9.9",
        ] {
            #expect(reason(lease("10.5.7.0-24", bad)) == .unusablePublicIP, "\(bad)")
        }
        #expect(reason(lease("10.5.7.0-24", "192.168.50.11")) == .ownPublicIP)
        for bad in ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01", "00:00:00:00:00:00", nil] {
            #expect(reason(lease("10.5.7.0-24", mac: bad)) == .unusableVtepMAC, "\(bad ?? "none")")
        }
        #expect(reason(lease("10.5.7.0-24", backend: "host-gw", mac: nil)) == .otherBackend)
        // host-gw leases need no VtepMAC.
        #expect(
            c.check(peer: lease("10.5.7.0-24", backend: "host-gw", mac: nil), backendType: "host-gw", nodeAddresses: me)
                == nil)
        let wide = try config(#"{"Network":"192.168.0.0/16","SubnetMin":"192.168.60.0","Backend":{"Type":"vxlan"}}"#)
        #expect(
            wide.check(peer: lease("192.168.50.0-24", "192.168.60.1"), backendType: "vxlan", nodeAddresses: me)?.reason
                == .coversThisNode)
    }
}

/// One table of backends (issue 9, item 3): a type name maps to one factory, options read with
/// Go's folded keys, an unknown type one config error.
@Suite struct BackendRegistryTests {
    let eth0 = ExternalInterface(name: "eth0", index: 1, mtu: 1500, address: IPNetwork("192.168.77.1/24")!)

    func node() -> RecordingDataPath {
        var k = FakeKernel()
        k.addInterface("eth0", address: IPNetwork("192.168.77.1/24")!)
        return RecordingDataPath(k)
    }

    @Test func lowerCaseVNIReachesTheDevice() throws {
        let c = try config(#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","vni":2}}"#)
        #expect(c.vxlan.vni == 2)
        let dp = node()
        let network = try c.makeBackend(interface: eth0).registerNetwork(dataPath: dp)
        #expect(network.deviceName == "flannel.2")
        #expect(network.leaseAttributes.vni == 2)
        #expect(dp.kernel.link(named: "flannel.2") != nil)
    }

    @Test func eachTypeBuildsItsOwnBackend() throws {
        for type in ["vxlan", "host-gw", "ipip", "VXLAN", "Host-GW"] {
            let c = try config(#"{"Network":"10.5.0.0/16","Backend":{"Type":"\#(type)"}}"#)
            #expect(try c.makeBackend(interface: eth0).backendType == type.lowercased())
        }
        #expect(BackendRegistry.kinds.map(\.type) == ["vxlan", "host-gw", "ipip", "bgp"])
    }

    @Test func anUnknownTypeIsOneConfigErrorNeverIPIP() throws {
        let message = #"backend type "udp" is not supported: use vxlan, host-gw, ipip or bgp"#
        #expect(throws: ConfigError(message)) { try config(#"{"Network":"10.5.0.0/16"}"#) }
        #expect(throws: ConfigError(message)) { try config(#"{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}"#) }
        var c = try config(#"{"Network":"10.5.0.0/16","Backend":{"Type":"ipip"}}"#)
        c.backendType = "udp"
        #expect(throws: ConfigError(message)) { try c.makeBackend(interface: eth0) }
    }
}

/// The in-memory registry keeps etcd's watch semantics, which the agent's tests rely on.
@Suite struct InMemoryRegistryTests {
    @Test func aWatchReplaysFromItsRevisionAndAnOldOneIsCompacted() async throws {
        let r = InMemoryLeaseRegistry(config: nil)
        let a = Lease(subnet: IPNetwork("10.5.1.0/24")!, attributes: attrs("192.0.2.1"), etcdLease: 1)
        r.put(a)
        let start = try await r.leases().revision
        r.remove(a.subnet)
        r.putRaw("10.5.2.0-24", value: "{}")
        var events = r.watch(fromRevision: start).makeAsyncIterator()
        #expect(try await events.next() == .put(a, revision: start))
        #expect(try await events.next() == .delete(a.subnet, revision: start + 1))
        #expect(
            try await events.next()
                == .notALease(
                    key: "/coreos.com/network/subnets/10.5.2.0-24",
                    subnet: IPNetwork("10.5.2.0/24"), revision: start + 2))
        r.compact()
        var old = r.watch(fromRevision: start).makeAsyncIterator()
        #expect(try await old.next() == .compacted(revision: start + 2))
        #expect(try await old.next() == nil)
        // A watch that was caught up carries on after a compaction.
        r.put(a)
        #expect(try await events.next() == .put(a, revision: start + 3))
    }
}
