// The lease layer against an in-memory registry: flanneld's config rules, the lease value, and
// acquisition (reuse by public IP, the subnet file's subnet, random free subnets, races).

import Addressing
import Foundation
import Logging
import Testing
@testable import Overlay

/// An in-memory `LeaseRegistry` with etcd's create-if-absent semantics. `beforeCreate` lets a
/// test slip another node's claim in between a listing and a create.
actor MemoryRegistry: LeaseRegistry {
    var stored: [IPNetwork: Lease] = [:]
    var revision: Int64 = 1
    var configJSON: Data?
    var nextLease: Int64 = 100
    var beforeCreate: (@Sendable (IPNetwork) -> Lease?)?

    init(config: String?) { configJSON = config.map { Data($0.utf8) } }

    func setBeforeCreate(_ f: (@Sendable (IPNetwork) -> Lease?)?) { beforeCreate = f }
    func put(_ l: Lease) { stored[l.subnet] = l; revision += 1 }

    func config() async throws -> Data? { configJSON }
    func leases() async throws -> LeaseSnapshot {
        LeaseSnapshot(leases: stored.values.sorted { $0.subnet.address < $1.subnet.address }, revision: revision)
    }
    func create(_ subnet: IPNetwork, _ attributes: LeaseAttributes, ttl: Duration) async throws -> Lease? {
        if let intruder = beforeCreate?(subnet) { put(intruder) }
        guard stored[subnet] == nil else { return nil }
        nextLease += 1
        let l = Lease(subnet: subnet, attributes: attributes, etcdLease: nextLease)
        put(l)
        return l
    }
    func update(_ subnet: IPNetwork, _ attributes: LeaseAttributes, ttl: Duration?) async throws -> Lease {
        nextLease += 1
        let l = Lease(subnet: subnet, attributes: attributes, etcdLease: ttl == nil ? nil : nextLease)
        put(l)
        return l
    }
    func delete(_ subnet: IPNetwork) async throws { stored[subnet] = nil; revision += 1 }
}

let logger = Logger(label: "test")
func attrs(_ ip: String) -> LeaseAttributes {
    LeaseAttributes(publicIP: IPAddress(ip)!, backendType: "vxlan", vni: 1, vtepMAC: MACAddress("0a:00:00:00:00:01"))
}
func config(_ json: String) throws -> NetworkConfig { try NetworkConfig(json: Data(json.utf8)) }

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
            (#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"vxlan"}}"#,
             "EnableIPv6 is not supported"),
            (#"{"Network":"10.5.0.0/16"}"#, "backend type \"udp\" is not supported"),
            ("[1]", "not a JSON object"),
        ]
        for (json, message) in cases {
            do {
                _ = try config(json)
                Issue.record("\(json) was accepted")
            } catch {
                #expect("\(error)".contains(message), "\(json): \(error)")
            }
        }
    }
}

@Suite struct LeaseValueTests {
    @Test func keysAndValuesAsFlanneld() throws {
        let n = IPNetwork("10.5.34.0/24")!
        #expect(SubnetKey.name(n) == "10.5.34.0-24")
        #expect(SubnetKey.parse("/coreos.com/network/subnets/10.5.34.0-24") == n)
        #expect(SubnetKey.parse("/coreos.com/network/subnets/10.5.34.0-24&fd00::-64") == nil)
        #expect(SubnetKey.parse("/coreos.com/network/subnets/garbage") == nil)
        let flanneld = #"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#
        let a = try #require(LeaseAttributes(json: Data(flanneld.utf8)))
        #expect(a == LeaseAttributes(publicIP: IPAddress("192.168.64.3")!, backendType: "vxlan", vni: 1,
                                     vtepMAC: MACAddress("c6:d2:32:6f:8f:44")))
        let round = try #require(JSONSerialization.jsonObject(with: a.json()) as? [String: Any])
        #expect(round["PublicIPv6"] is NSNull)
        #expect((round["BackendData"] as? [String: Any])?["VtepMAC"] as? String == "c6:d2:32:6f:8f:44")
        let hostgw = #"{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"host-gw"}"#
        #expect(LeaseAttributes(json: Data(hostgw.utf8))?.backendType == "host-gw")
        // The exact bytes podnetd writes: flanneld's fields, keys sorted.
        #expect(String(decoding: a.json(), as: UTF8.self)
                == #"{"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendType":"vxlan","PublicIP":"192.168.64.3","PublicIPv6":null}"#)
        // Go reads field names case-insensitively and a whole number written as 1.0 into an int.
        let spelled = #"{"publicip":"192.168.64.3","backendtype":"VXLAN","backenddata":{"vni":1.0,"vtepmac":"c6:d2:32:6f:8f:44"}}"#
        #expect(LeaseAttributes(json: Data(spelled.utf8)) == a)
        for bad in [#"{"PublicIP":"fd00::1"}"#, #"{"PublicIP":7}"#, "[]", "{", ""] {
            #expect(LeaseAttributes(json: Data(bad.utf8)) == nil, "\(bad)")
        }
    }

    @Test func subnetFileAsFlanneldWritesIt() throws {
        let text = SubnetFile.render(network: IPNetwork("10.5.0.0/16")!, subnet: IPNetwork("10.5.34.0/24")!, mtu: 1450, ipMasq: false)
        #expect(text == "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.34.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
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
        let r = MemoryRegistry(config: nil)
        await r.put(Lease(subnet: IPNetwork("10.5.1.0/24")!, attributes: attrs("192.0.2.9"), etcdLease: 1))
        let l = try await SubnetManager(registry: r, logger: logger).acquire(config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(conf.accepts(l.subnet))
        #expect(l.subnet != IPNetwork("10.5.1.0/24"))
        #expect(l.etcdLease != nil)
    }

    @Test func nodeKeepsItsLeaseByPublicIP() async throws {
        let r = MemoryRegistry(config: nil)
        await r.put(Lease(subnet: IPNetwork("10.5.77.0/24")!, attributes: attrs("192.0.2.1"), etcdLease: 1))
        let l = try await SubnetManager(registry: r, logger: logger).acquire(config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(l.subnet == IPNetwork("10.5.77.0/24"))
        #expect(l.etcdLease != 1)  // re-put with a fresh etcd lease
    }

    @Test func reservationStaysWithoutTTL() async throws {
        let r = MemoryRegistry(config: nil)
        await r.put(Lease(subnet: IPNetwork("10.5.9.0/24")!, attributes: attrs("192.0.2.1"), etcdLease: nil))
        let m = SubnetManager(registry: r, logger: logger)
        let l = try await m.acquire(config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(l.subnet == IPNetwork("10.5.9.0/24"))
        #expect(l.isReservation)
        #expect(try await m.renew(l).isReservation)
    }

    @Test func incompatibleOwnLeaseIsReplaced() async throws {
        let r = MemoryRegistry(config: nil)
        await r.put(Lease(subnet: IPNetwork("10.9.1.0/24")!, attributes: attrs("192.0.2.1"), etcdLease: 1))
        let l = try await SubnetManager(registry: r, logger: logger).acquire(config: conf, attributes: attrs("192.0.2.1"), previous: nil)
        #expect(conf.accepts(l.subnet))
        #expect(try await r.leases().leases.count == 1)
    }

    @Test func subnetFileHintIsUsedWhenFree() async throws {
        let r = MemoryRegistry(config: nil)
        let m = SubnetManager(registry: r, logger: logger)
        let hint = IPNetwork("10.5.42.0/24")!
        #expect(try await m.acquire(config: conf, attributes: attrs("192.0.2.1"), previous: hint).subnet == hint)
        // Taken by someone else: another subnet instead.
        let other = try await m.acquire(config: conf, attributes: attrs("192.0.2.2"), previous: hint)
        #expect(other.subnet != hint)
    }

    @Test func lostRaceIsRetried() async throws {
        let r = MemoryRegistry(config: nil)
        // Every first attempt loses: another node takes the chosen subnet just before the create.
        let raced = Counter()
        await r.setBeforeCreate { subnet in
            raced.increment() == 0 ? Lease(subnet: subnet, attributes: attrs("192.0.2.99"), etcdLease: 7) : nil
        }
        let l = try await SubnetManager(registry: r, logger: logger).acquire(config: conf, attributes: attrs("192.0.2.1"), previous: nil)
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
        let r = MemoryRegistry(config: nil)
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

final class Counter: @unchecked Sendable {
    private var n = 0
    private let lock = NSLock()
    func increment() -> Int { lock.withLock { defer { n += 1 }; return n } }
    var value: Int { lock.withLock { n } }
}
