// Dual stack and IPv6-only in the lease layer: flanneld's config keys and defaults for IPv6, the
// dual-stack key and value (read as flanneld writes them, written so that flanneld's regex reads
// them back), acquisition of both subnets, subnet.env, and the checks of a peer's IPv6 side.

import Addressing
import Foundation
import TestSupport
import Testing

@testable import Overlay

private let dual =
    #"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#
private let v6only =
    #"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}"#

private func dualAttrs(_ n: Int) -> LeaseAttributes {
    LeaseAttributes(
        publicIP: IPAddress("192.0.2.\(n)")!, backendType: "vxlan", vni: 1, vtepMAC: MACAddress("0a:00:00:00:00:0\(n)"),
        publicIPv6: IPAddress("2001:db8::\(n)")!, ipv6VtepMAC: MACAddress("0a:00:00:00:06:0\(n)"))
}

private func v6Attrs(_ n: Int) -> LeaseAttributes {
    .ipv6(
        publicIP: IPAddress("2001:db8::\(n)")!, backendType: "vxlan", vni: 1,
        vtepMAC: MACAddress("0a:00:00:00:06:0\(n)"))
}

@Suite struct DualStackConfigTests {
    @Test func ipv6DefaultsAsFlanneld() throws {
        let c = try config(dual)
        #expect(c.isDualStack && c.families == [.v4, .v6])
        #expect(c.network == IPNetwork("10.244.0.0/16") && c.subnetLength == 24)
        let v6 = try #require(c.ipv6)
        #expect(v6.subnetLength == 64)
        #expect(v6.subnetMin == IPAddress("fd00:10:244:1::"))
        #expect(v6.subnetMax == IPAddress("fd00:10:244:ff::"))
        #expect(Array(v6.subnets.prefix(2)).map(\.description) == ["fd00:10:244:1::/64", "fd00:10:244:2::/64"])
        // A small network is cut in four, as for IPv4.
        let small = try config(
            #"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/120","Backend":{"Type":"host-gw"}}"#)
        #expect(small.ipv6?.subnetLength == 122)
    }

    /// The README's examples, netconf/net-conf-dualstack.json and netconf/net-conf-ipv6only.json.
    @Test func theExampleConfigsAreValid() throws {
        let dir = #filePath.split(separator: "/").dropLast(3).joined(separator: "/") + "/netconf/"
        let dualFile = try NetworkConfig(
            json: Data(contentsOf: URL(fileURLWithPath: "/" + dir + "net-conf-dualstack.json")))
        #expect(dualFile.isDualStack && dualFile.ipv6?.network == IPNetwork("fd00:10:244::/56"))
        let onlyFile = try NetworkConfig(
            json: Data(contentsOf: URL(fileURLWithPath: "/" + dir + "net-conf-ipv6only.json")))
        #expect(onlyFile.families == [.v6] && onlyFile.subnetLength == 64)
    }

    @Test func ipv6OnlyMakesIPv6ThePrimaryFamily() throws {
        let c = try config(v6only)
        #expect(c.ipv4 == nil && c.families == [.v6] && !c.isDualStack)
        #expect(c.network == IPNetwork("fd00:10:244::/56"))
        #expect(c.accepts(IPNetwork("fd00:10:244:5::/64")!))
        #expect(!c.accepts(IPNetwork("10.244.5.0/24")!))
    }

    @Test func badIPv6ConfigsSayWhy() {
        let cases: [(String, String)] = [
            (#"{"Network":"10.5.0.0/16","EnableIPv6":true,"Backend":{"Type":"vxlan"}}"#, "correct IPv6Network"),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"10.6.0.0/16","Backend":{"Type":"vxlan"}}"#,
                "correct IPv6Network"
            ),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":127,"Backend":{"Type":"vxlan"}}"#,
                "IPv6SubnetLen must be less than /127"
            ),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":57,"Backend":{"Type":"vxlan"}}"#,
                "at least four subnets"
            ),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/125","Backend":{"Type":"vxlan"}}"#,
                "IPv6Network is too small"
            ),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMin":"fd00::1:0:0:0:1","Backend":{"Type":"vxlan"}}"#,
                "IPv6SubnetMin is not on a IPv6SubnetLen boundary"
            ),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetMax":"fd01::","Backend":{"Type":"vxlan"}}"#,
                "IPv6SubnetMax is not in the range of the IPv6Network"
            ),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fe80::/56","Backend":{"Type":"vxlan"}}"#,
                "link-local"
            ),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","Backend":{"Type":"ipip"}}"#,
                "ipip backend is IPv4-only"
            ),
            (#"{"EnableIPv4":false,"Backend":{"Type":"vxlan"}}"#, "enable at least one family"),
            (#"{"Network":"10.5.0.0/16","EnableIPv6":"yes","Backend":{"Type":"vxlan"}}"#, "EnableIPv6"),
            (
                #"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56","IPv6SubnetLen":"64","Backend":{"Type":"vxlan"}}"#,
                "IPv6SubnetLen"
            ),
        ]
        expectRefused(cases)
    }

    @Test func aNodeAddressInsideTheIPv6SubnetsIsRefused() throws {
        let c = try config(dual)
        let problem = c.problem(onNodeWith: [IPAddress("192.0.2.1")!, IPAddress("fd00:10:244:7::1")!])
        #expect(problem?.description.contains("IPv6Network fd00:10:244::/56") == true)
        #expect(c.problem(onNodeWith: [IPAddress("192.0.2.1")!, IPAddress("2001:db8::1")!]) == nil)
    }
}

@Suite struct DualStackLeaseValueTests {
    /// flanneld's key regex (pkg/subnet/subnet.go), as Go's regexp reads it.
    let flanneldKey = try! Regex(#"(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$"#)

    @Test func flanneldsDualStackLeaseIsRead() throws {
        let key = "/coreos.com/network/subnets/10.244.1.0-24&fd00:10:244:1::-64"
        let value =
            #"{"PublicIP":"192.168.77.11","PublicIPv6":"2001:db8:77::11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:66"}}"#
        let k = try #require(SubnetKey.parse(key))
        #expect(k.subnet == IPNetwork("10.244.1.0/24") && k.ipv6Subnet == IPNetwork("fd00:10:244:1::/64"))
        let a = try #require(LeaseAttributes(json: Data(value.utf8)))
        #expect(a.publicIPv6 == IPAddress("2001:db8:77::11") && a.ipv6VtepMAC == MACAddress("c6:d2:32:6f:8f:66"))
        let peer = Lease(key: k, attributes: a, etcdLease: 1).peer
        #expect(peer.subnet == IPNetwork("10.244.1.0/24") && peer.vtepMAC == MACAddress("c6:d2:32:6f:8f:44"))
        #expect(
            peer.ipv6Peer
                == Peer(
                    subnet: IPNetwork("fd00:10:244:1::/64")!, publicIP: IPAddress("2001:db8:77::11")!,
                    vtepMAC: MACAddress("c6:d2:32:6f:8f:66")))
    }

    @Test func podnetsKeysAndValuesReadBackAsFlanneldReadsThem() throws {
        let k = SubnetKey(IPNetwork("10.244.1.0/24")!, ipv6Subnet: IPNetwork("fd00:10:244:1::/64")!)
        #expect(k.name == "10.244.1.0-24&fd00:10:244:1::-64")
        let m = try #require(k.name.firstMatch(of: flanneldKey))
        #expect(m.output[1].substring == "10.244.1.0" && m.output[2].substring == "24")
        #expect(m.output[3].substring == "fd00:10:244:1::" && m.output[4].substring == "64")
        // IPv6-only: flanneld's zero IPv4 subnet in front.
        let only = SubnetKey(IPNetwork("fd00:10:244:2::/64")!)
        #expect(only.name == "0.0.0.0-0&fd00:10:244:2::-64")
        #expect(only.name.firstMatch(of: flanneldKey) != nil)
        #expect(SubnetKey.parse(only.name) == only)
        #expect(SubnetKey.parse(k.name) == k)

        let json = String(decoding: dualAttrs(1).json(), as: UTF8.self)
        #expect(
            json
                == #"{"BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"},"BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:06:01"},"PublicIP":"192.0.2.1","PublicIPv6":"2001:db8::1"}"#
        )
        #expect(LeaseAttributes(json: Data(json.utf8)) == dualAttrs(1))
        let v6json = String(decoding: v6Attrs(2).json(), as: UTF8.self)
        #expect(
            v6json
                == #"{"BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:06:02"},"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::2"}"#
        )
        #expect(LeaseAttributes(json: Data(v6json.utf8)) == v6Attrs(2))
    }

    @Test func malformedIPv6KeysAndValuesAreNotLeases() {
        for key in [
            "10.244.1.0-24&", "10.244.1.0-24&10.0.0.0-8", "10.244.1.0-24&fd00::1-64", "10.244.1.0-24&fd00::-0",
            "1.0.0.0-0&fd00::-64", "0.0.0.0-0", "10.244.1.0-24&fd00::-64&fd01::-64", "10.244.1.0-24&fd00::-١٢",
            "10.244.1.0-+24", "10.244.1.0-24&fd00::-+64",
        ] {
            #expect(SubnetKey.parse(key) == nil, "\(key)")
        }
        for value in [
            #"{"PublicIP":"192.0.2.1","PublicIPv6":"192.0.2.2"}"#, #"{"PublicIP":"192.0.2.1","PublicIPv6":6}"#,
        ] {
            #expect(LeaseAttributes(json: Data(value.utf8)) == nil, "\(value)")
        }
    }

    @Test func subnetEnvInFlanneldsOrder() throws {
        let c = try config(dual)
        let lease = Lease(
            subnet: IPNetwork("10.244.3.0/24")!, ipv6Subnet: IPNetwork("fd00:10:244:3::/64")!,
            attributes: dualAttrs(1), etcdLease: 1)
        let text = SubnetFile.render(config: c, lease: lease, mtu: 1430, ipMasq: true)
        #expect(
            text
                == "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\n"
                + "FLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n")
        let only = SubnetFile.render(
            config: try config(v6only),
            lease: Lease(subnet: IPNetwork("fd00:10:244:4::/64")!, attributes: v6Attrs(1), etcdLease: 1),
            mtu: 1430, ipMasq: false)
        #expect(
            only
                == "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:4::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
        )
        let dir = NSTemporaryDirectory() + "podnet-subnet-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SubnetFile.write(text, to: dir + "/dual.env")
        try SubnetFile.write(only, to: dir + "/only.env")
        #expect(SubnetFile.previousKey(at: dir + "/dual.env") == lease.key)
        #expect(SubnetFile.previousKey(at: dir + "/only.env") == SubnetKey(IPNetwork("fd00:10:244:4::/64")!))
    }
}

@Suite struct DualStackAcquisitionTests {
    @Test func eachNodeGetsBothFamiliesAndKeepsThem() async throws {
        let c = try config(dual)
        let r = InMemoryLeaseRegistry(config: nil)
        let m = SubnetManager(registry: r, logger: logger)
        let a = try await m.acquire(config: c, attributes: dualAttrs(1), previous: nil)
        let b = try await m.acquire(config: c, attributes: dualAttrs(2), previous: nil)
        #expect(c.accepts(a.key) && c.accepts(b.key))
        let (a6, b6) = (try #require(a.ipv6Subnet), try #require(b.ipv6Subnet))
        #expect(!a6.overlaps(b6) && a.subnet != b.subnet)
        // Restarted: the same key, found by the public IP.
        let again = try await m.acquire(config: c, attributes: dualAttrs(1), previous: nil)
        #expect(again.key == a.key)
        #expect(
            try await r.leases().leases.map(\.key).sorted { $0.name < $1.name }
                == [a.key, b.key].sorted { $0.name < $1.name })
    }

    @Test func theSubnetFileGivesBothSubnetsBack() async throws {
        let c = try config(dual)
        let r = InMemoryLeaseRegistry(config: nil)
        let hint = SubnetKey(IPNetwork("10.244.42.0/24")!, ipv6Subnet: IPNetwork("fd00:10:244:42::/64")!)
        let l = try await SubnetManager(registry: r, logger: logger).acquire(
            config: c, attributes: dualAttrs(1), previous: hint)
        #expect(l.key == hint)
    }

    @Test func turningIPv6OnKeepsTheIPv4SubnetOfANode() async throws {
        let r = InMemoryLeaseRegistry(config: nil)
        r.put(Lease(subnet: IPNetwork("10.244.77.0/24")!, attributes: attrs("192.0.2.1"), etcdLease: 1))
        let l = try await SubnetManager(registry: r, logger: logger).acquire(
            config: try config(dual), attributes: dualAttrs(1), previous: nil)
        #expect(l.subnet == IPNetwork("10.244.77.0/24"))
        #expect(l.ipv6Subnet != nil)
        // The old key went: one lease for the node, under its dual-stack key.
        #expect(try await r.leases().leases.map(\.key) == [l.key])
    }

    @Test func ipv6OnlyNodesAreTellApartByTheirIPv6Address() async throws {
        let c = try config(v6only)
        let r = InMemoryLeaseRegistry(config: nil)
        let m = SubnetManager(registry: r, logger: logger)
        let a = try await m.acquire(config: c, attributes: v6Attrs(1), previous: nil)
        let b = try await m.acquire(config: c, attributes: v6Attrs(2), previous: nil)
        #expect(a.subnet.family == .v6 && a.ipv6Subnet == nil && a.subnet != b.subnet)
        // Every IPv6-only lease has PublicIP 0.0.0.0: the node is found by PublicIPv6.
        #expect(try await m.acquire(config: c, attributes: v6Attrs(2), previous: nil).subnet == b.subnet)
        #expect(try await r.leases().leases.count == 2)
    }

    @Test func outOfIPv6SubnetsIsAnErrorAndWritesNothing() async throws {
        let c = try config(
            #"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/124","Backend":{"Type":"vxlan"}}"#)
        let r = InMemoryLeaseRegistry(config: nil)
        let m = SubnetManager(registry: r, logger: logger)
        // /124 cut into /126: SubnetMin..SubnetMax holds three subnets (the first is skipped).
        for n in 1...3 { _ = try await m.acquire(config: c, attributes: dualAttrs(n), previous: nil) }
        await #expect(throws: LeaseError.outOfSubnets(IPNetwork("fd00::/124")!)) {
            _ = try await m.acquire(config: c, attributes: dualAttrs(4), previous: nil)
        }
        #expect(try await r.leases().leases.count == 3)
    }
}

@Suite struct DualStackPeerCheckTests {
    let me = [IPAddress("192.0.2.1")!, IPAddress("2001:db8::1")!]

    func lease(_ key: String, _ a: LeaseAttributes) -> Lease {
        Lease(key: SubnetKey.parse(key)!, attributes: a, etcdLease: 1)
    }

    @Test func theIPv6SideIsCheckedLikeTheIPv4Side() throws {
        let c = try config(dual)
        func reason(_ l: Lease) -> LeaseRejection? { c.check(peer: l, backendType: "vxlan", nodeAddresses: me) }
        #expect(reason(lease("10.244.2.0-24&fd00:10:244:2::-64", dualAttrs(2))) == nil)
        #expect(reason(lease("10.244.2.0-24&fd00:99::-64", dualAttrs(2)))?.reason == .outsideNetwork)
        #expect(reason(lease("10.244.2.0-24&fd00:10:244:2::-80", dualAttrs(2)))?.reason == .wrongSubnetLength)
        var a = dualAttrs(2)
        a.publicIPv6 = IPAddress("fe80::2")
        #expect(reason(lease("10.244.2.0-24&fd00:10:244:2::-64", a))?.reason == .unusablePublicIP)
        a.publicIPv6 = IPAddress("2001:db8::1")
        #expect(reason(lease("10.244.2.0-24&fd00:10:244:2::-64", a))?.reason == .ownPublicIP)
        a = dualAttrs(2)
        a.ipv6VtepMAC = MACAddress("ff:ff:ff:ff:ff:ff")
        #expect(reason(lease("10.244.2.0-24&fd00:10:244:2::-64", a))?.reason == .unusableVtepMAC)
        // A node without IPv6 yet (a flanneld node, IPv4-only key) is an IPv4 peer.
        let v4only = lease("10.244.3.0-24", attrs("192.0.2.3"))
        #expect(reason(v4only) == nil)
        #expect(v4only.peer.ipv6Peer == nil)
    }

    @Test func ipv6OnlyLeasesNeedAnIPv6PublicIP() throws {
        let c = try config(v6only)
        func reason(_ l: Lease) -> LeaseRejection? { c.check(peer: l, backendType: "vxlan", nodeAddresses: me) }
        #expect(reason(lease("0.0.0.0-0&fd00:10:244:2::-64", v6Attrs(2))) == nil)
        var a = v6Attrs(2)
        a.publicIPv6 = nil
        #expect(reason(lease("0.0.0.0-0&fd00:10:244:2::-64", a))?.reason == .unusablePublicIP)
        #expect(reason(lease("0.0.0.0-0&fd00:10:245::-64", v6Attrs(2)))?.reason == .outsideNetwork)
        let p = lease("0.0.0.0-0&fd00:10:244:2::-64", v6Attrs(2)).peer
        #expect(p.subnet == IPNetwork("fd00:10:244:2::/64") && p.publicIP == IPAddress("2001:db8::2"))
        #expect(p.vtepMAC == MACAddress("0a:00:00:00:06:02"))
    }
}
