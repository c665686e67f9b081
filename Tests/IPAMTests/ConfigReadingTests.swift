// host-local reads its config as Go's encoding/json does (issue 8 items 1, 12 and 14): keys in any
// case, a known key of the wrong type is code 7 naming it, and the ranges the Go host-local cannot
// allocate from (0.0.0.0/0, ::/0, IPv4-mapped IPv6) are refused before anything is reserved.

import Addressing
import CNI
import HostLocal
import IPAM
import TestSupport
import Testing

@Suite struct HostLocalConfigReadingTests {
    /// Every ipam key spelled as Go field names, the requested IPs from args.cni.ips and
    /// runtimeConfig.ips too.
    @Test func ipamKeysAreMatchedIgnoringCase() throws {
        try withTempDir { tmp in
            let conf = #"""
                {"cniVersion":"1.0.0","name":"testnet","type":"bridge",
                 "IPAM":{"Type":"host-local","DataDir":"\#(tmp)",
                         "Ranges":[[{"Subnet":"10.9.0.0/24","RangeStart":"10.9.0.50","RangeEnd":"10.9.0.60","Gateway":"10.9.0.254"}]],
                         "Routes":[{"Dst":"10.0.0.0/8","GW":"10.9.0.254"}]}}
                """#
            let r = try add(Array(conf.utf8), version: .v1_0_0)
            #expect(r.ips == [Result.IPConfig(address: cidr("10.9.0.50/24"), gateway: ip("10.9.0.254"))])
            #expect(r.routes == [Result.Route(dst: cidr("10.0.0.0/8"), gw: ip("10.9.0.254"))])
            #expect(reservedIPs(tmp + "/testnet") == [ip("10.9.0.50")])

            let legacy = #"""
                {"cniVersion":"1.0.0","name":"legacy","ipam":{"type":"host-local","dataDir":"\#(tmp)","SUBNET":"10.8.0.0/24"},
                 "Args":{"CNI":{"IPs":["10.8.0.77"]}}}
                """#
            #expect(try add(Array(legacy.utf8), version: .v1_0_0).ips.map(\.address) == [cidr("10.8.0.77/24")])

            let runtime = #"""
                {"cniVersion":"1.0.0","name":"runtime","ipam":{"type":"host-local","dataDir":"\#(tmp)"},
                 "runtimeConfig":{"IPRanges":[[{"subnet":"10.7.0.0/24"}]],"IPs":["10.7.0.9/24"]}}
                """#
            #expect(try add(Array(runtime.utf8), version: .v1_0_0).ips.map(\.address) == [cidr("10.7.0.9/24")])
        }
    }

    /// Issue 8 item 12: `"ipam": "x"` and its relatives are code 7 naming the key, with nothing
    /// reserved.
    @Test(arguments: [
        (#""ipam":"x""#, "ipam"),
        (#""ipam":{"type":"host-local","dataDir":"DATADIR","ranges":{"subnet":"10.9.0.0/24"}}"#, "ipam.ranges"),
        (
            #""ipam":{"type":"host-local","dataDir":"DATADIR","Routes":"10.0.0.0/8","subnet":"10.9.0.0/24"}"#,
            "ipam.Routes"
        ),
        (
            #""ipam":{"type":"host-local","dataDir":"DATADIR","ranges":[[{"subnet":"10.9.0.0/24","RangeStart":5}]]}"#,
            "RangeStart"
        ),
        (
            #""ipam":{"type":"host-local","dataDir":"DATADIR","subnet":"10.9.0.0/24"},"args":{"cni":{"ips":"10.9.0.5"}}"#,
            "args.cni.ips"
        ),
        (
            #""ipam":{"type":"host-local","dataDir":"DATADIR","subnet":"10.9.0.0/24"},"runtimeConfig":{"ips":[5]}"#,
            "runtimeConfig.ips"
        ),
    ])
    func wrongTypesAreCode7AndReserveNothing(_ body: String, key: String) throws {
        try withTempDir { tmp in
            let withDataDir = body.split(separator: "DATADIR", omittingEmptySubsequences: false).joined(separator: tmp)
            let conf = #"{"cniVersion":"1.0.0","name":"testnet",\#(withDataDir)}"#
            let e = try cniError(invoke("ADD", Array(conf.utf8)))
            #expect(e.code == 7)
            #expect(e.msg.contains(key), "\(e.msg)")
            #expect(listDir(tmp).isEmpty)
        }
    }

    /// Issue 8 item 14: ranges Go's host-local cannot allocate from.
    @Test(arguments: [
        ("0.0.0.0/0", "Network 0.0.0.0/0 starts at the unspecified address 0.0.0.0"),
        ("::/0", "Network ::/0 starts at the unspecified address ::"),
        ("0.0.0.0/8", "Network 0.0.0.0/8 starts at the unspecified address 0.0.0.0"),
        ("::ffff:10.1.0.0/120", "IPNet IP and Mask version mismatch"),
        ("::ffff:0.0.0.0/96", "IPNet IP and Mask version mismatch"),
    ])
    func unallocatableRangesAreRefused(_ subnet: String, message: String) throws {
        try withTempDir { tmp in
            for ipam: [String: JSON] in [["ranges": ranges([[subnet]])], ["subnet": .string(subnet)]] {
                let e = try cniError(invoke("ADD", hostLocalConfig(version: .v1_0_0, dataDir: tmp, ipam: ipam)))
                #expect(e.code == 7)
                #expect(e.msg.hasPrefix("invalid range set 0: \(message)"), "\(e.msg)")
                #expect(reservedIPs(tmp + "/testnet").isEmpty)
            }
        }
    }
}
