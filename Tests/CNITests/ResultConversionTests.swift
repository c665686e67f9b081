// Result conversion between spec versions, both ways, with the 0.1/0.2 limits.

import Addressing
import Testing

@testable import CNI

@Suite struct ResultConversionTests {
    let dual = Result(
        interfaces: [
            .init(name: "cni0", mac: "0a:58:00:00:00:01"),
            .init(name: "eth0", mac: "0a:58:00:00:00:02", mtu: 1400, sandbox: "/run/netns/p"),
        ],
        ips: [
            .init(address: IPNetwork("10.1.0.5/24")!, gateway: IPAddress("10.1.0.1"), interface: 1),
            .init(address: IPNetwork("10.2.0.5/24")!, interface: 1),
            .init(address: IPNetwork("fd00::5/64")!, gateway: IPAddress("fd00::1"), interface: 1),
        ],
        routes: [
            .init(dst: IPNetwork("0.0.0.0/0")!, gw: IPAddress("10.1.0.1"), priority: 5),
            .init(dst: IPNetwork("::/0")!),
        ],
        dns: .init(nameservers: ["10.1.0.2"], search: ["svc"]))

    @Test(arguments: SpecVersion.allCases)
    func roundTripKeepsWhatTheLayoutCanHold(version: SpecVersion) throws {
        let back = try Result(json: dual.json(version: version), assumedVersion: .v0_1_0)
        switch version.layout {
        case .legacy:
            // Only the first address per family; no interfaces; routes only dst/gw.
            #expect(back.ips.map(\.address.description) == ["10.1.0.5/24", "fd00::5/64"])
            #expect(back.interfaces.isEmpty)
            #expect(
                back.routes == [
                    .init(dst: IPNetwork("0.0.0.0/0")!, gw: IPAddress("10.1.0.1")), .init(dst: IPNetwork("::/0")!),
                ])
        case .v04, .v1:
            #expect(back.ips == dual.ips)
            #expect(back.routes == dual.routes)
            #expect(back.dns == dual.dns)
            // Interface mtu exists only from 1.1.0 on.
            #expect(back.interfaces[1].mtu == (version == .v1_1_0 ? 1400 : nil))
        }
    }

    @Test func legacyInputBecomesIpsList() throws {
        let j = try JSON.parse(
            Array(
                #"""
                {"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/8","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0"}]},
                 "ip6":{"ip":"fd::2/64","routes":[{"dst":"::/0","gw":"fd::1"}]},"dns":{"nameservers":["1.1.1.1"]}}
                """#.utf8))
        let r = try Result(json: j, assumedVersion: .v1_0_0)
        #expect(r.ips.map(\.address.description) == ["10.0.0.2/8", "fd::2/64"])
        #expect(r.routes.count == 2)
        #expect(r.dns.nameservers == ["1.1.1.1"])
        let v04 = try r.json(version: .v0_4_0)
        #expect(v04["ips"]?.arrayValue?.map { $0["version"] } == [.string("4"), .string("6")])
    }

    @Test func legacyWithoutAddressFails() {
        #expect(throws: CNIError(.incompatibleVersion, "cannot convert: no valid IP addresses")) {
            try Result(interfaces: [.init(name: "eth0")]).json(version: .v0_2_0)
        }
    }

    @Test func missingCniVersionUsesAssumed() throws {
        let j = try JSON.parse(Array(#"{"ips":[{"address":"10.0.0.2/24","version":"4"}]}"#.utf8))
        #expect(try Result(json: j, assumedVersion: .v0_3_1).ips.count == 1)
    }
}
