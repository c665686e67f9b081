// host-local in-process through the CNI dispatcher, as a runtime would call it: every verb for
// every spec version it applies to, checked by what a user would look at (the result's addresses,
// the files under the data directory).

import Addressing
import CNI
import HostLocal
import IPAM
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

let allVersions = SpecVersion.allCases
let checkVersions = SpecVersion.allCases.filter { $0 >= .v0_4_0 }

@Suite struct HostLocalVerbTests {
    @Test(arguments: allVersions)
    func addAllocatesAndPrintsTheResultInTheConfigVersion(_ version: SpecVersion) throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(version: version, dataDir: tmp, ipam: ["ranges": ranges([["10.20.0.0/24"]])])
            let out = invoke("ADD", conf)
            #expect(out.exitCode == 0, "\(out.stdoutText)")
            let json = try JSON.parse(out.stdout)
            #expect(json["cniVersion"] == .string(version.rawValue))
            #expect(json["interfaces"] == nil)
            let result = try Result(json: json, assumedVersion: version)
            #expect(result.ips == [Result.IPConfig(address: cidr("10.20.0.2/24"), gateway: ip("10.20.0.1"))])
            if version.layout == .legacy {
                #expect(json["ip4"]?["ip"] == .string("10.20.0.2/24"))
            } else {
                #expect(json["ips"]?.arrayValue?.first?["interface"] == nil)
            }
            #expect(reservedIPs(tmp + "/testnet") == [ip("10.20.0.2")])
            #expect(fileText(tmp + "/testnet/10.20.0.2") == "ctr1\r\neth0")

            // The next container gets the next address.
            let second = try add(conf, version: version, id: "ctr2")
            #expect(second.ips.map(\.address) == [cidr("10.20.0.3/24")])
        }
    }

    @Test(arguments: allVersions)
    func delReleasesWithoutANetnsAndCanBeRepeated(_ version: SpecVersion) throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(
                version: version, dataDir: tmp,
                ipam: ["ranges": ranges([["10.20.0.0/24"], ["fd00:20::/64"]])].filter { _ in version >= .v0_3_0 }
                    .merging(["subnet": .string("10.30.0.0/24")]) { a, _ in a })
            _ = try add(conf, version: version, id: "ctr1")
            _ = try add(conf, version: version, id: "ctr2")
            let before = reservedIPs(tmp + "/testnet")
            #expect(before.count == (version >= .v0_3_0 ? 6 : 2))

            // The runtime may pass no CNI_NETNS on DEL (the namespace is gone).
            #expect(invoke("DEL", conf, id: "ctr1", netns: nil).exitCode == 0)
            let after = reservedIPs(tmp + "/testnet")
            #expect(after.count == before.count / 2)
            #expect(after.allSatisfy { fileText(tmp + "/testnet/\($0)") == "ctr2\r\neth0" })
            let again = invoke("DEL", conf, id: "ctr1", netns: "/var/run/netns/gone")
            #expect(again.exitCode == 0 && again.stdout.isEmpty)
            // Never added at all: also fine.
            #expect(invoke("DEL", conf, id: "never", netns: nil).exitCode == 0)
            #expect(reservedIPs(tmp + "/testnet") == after)
        }
    }

    @Test(arguments: checkVersions)
    func checkFindsTheAttachmentsReservation(_ version: SpecVersion) throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(version: version, dataDir: tmp, ipam: ["ranges": ranges([["10.20.0.0/24"]])])
            _ = try add(conf, version: version)
            #expect(invoke("CHECK", conf).exitCode == 0)
            let other = try cniError(invoke("CHECK", conf, ifname: "eth1"))
            #expect(other.msg == "host-local: Failed to find address added by container ctr1")
            #expect(invoke("DEL", conf).exitCode == 0)
            let gone = try cniError(invoke("CHECK", conf))
            #expect(gone.code == 999)
            #expect(gone.msg == "host-local: Failed to find address added by container ctr1")
        }
    }

    @Test(arguments: allVersions.filter { $0 < .v0_4_0 })
    func checkIsRefusedBeforeVersion040(_ version: SpecVersion) throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(version: version, dataDir: tmp, ipam: ["ranges": ranges([["10.20.0.0/24"]])])
            let e = try cniError(invoke("CHECK", conf))
            #expect(e.code == 1)
            #expect(e.msg == "config version does not allow CHECK")
        }
    }

    @Test func gcReleasesOnlyReservationsOfInvalidAttachments() throws {
        try withTempDir { tmp in
            let dir = tmp + "/testnet"
            let conf = hostLocalConfig(
                version: .v1_1_0, dataDir: tmp,
                ipam: ["ranges": ranges([["10.20.0.0/24"], ["fd00:20::/64"]])])
            _ = try add(conf, version: .v1_1_0, id: "live")  // .2, ::2
            _ = try add(conf, version: .v1_1_0, id: "live", ifname: "net1")  // .3, ::3 stale
            _ = try add(conf, version: .v1_1_0, id: "dead")  // .4, ::4 stale
            writeFile(dir + "/10.20.0.100", "live")  // legacy, container live: kept
            writeFile(dir + "/10.20.0.101", "gone")  // legacy, container gone

            func gc(_ extra: [String: JSON]) -> Outcome {
                let c = hostLocalConfig(
                    version: .v1_1_0, dataDir: tmp,
                    ipam: ["ranges": ranges([["10.20.0.0/24"], ["fd00:20::/64"]])], extra: extra)
                return invoke("GC", c)
            }
            // No list: nothing is known to be stale, nothing goes.
            #expect(gc([:]).exitCode == 0)
            #expect(reservedIPs(dir).count == 8)

            let valid: JSON = .array([.object(["containerID": .string("live"), "ifname": .string("eth0")])])
            let out = gc(["cni.dev/valid-attachments": valid])
            #expect(out.exitCode == 0, "\(out.stdoutText)")
            #expect(reservedIPs(dir) == ["10.20.0.2", "10.20.0.100", "fd00:20::2"].map(ip))
            #expect(listDir(dir).contains("lock") && listDir(dir).contains("last_reserved_ip.0"))
            #expect(invoke("CHECK", conf, id: "live").exitCode == 0)

            // The spec-1.1.0 spelling of the key, and an empty list: nothing is valid.
            #expect(gc(["cni.dev/attachments": .array([])]).exitCode == 0)
            #expect(reservedIPs(dir).isEmpty)
        }
    }

    @Test(arguments: allVersions.filter { $0 < .v1_1_0 })
    func gcAndStatusAreRefusedBeforeVersion110(_ version: SpecVersion) throws {
        let conf = hostLocalConfig(
            version: version, dataDir: "/tmp/unused", ipam: ["ranges": ranges([["10.20.0.0/24"]])])
        for verb in ["GC", "STATUS"] {
            let e = try cniError(invoke(verb, conf))
            #expect(e.code == 1)
            #expect(e.msg == "config version does not allow \(verb)")
        }
    }

    @Test func statusChecksTheDataDirectory() throws {
        try withTempDir { tmp in
            let ok = hostLocalConfig(
                version: .v1_1_0, dataDir: tmp + "/new", ipam: ["ranges": ranges([["10.20.0.0/24"]])])
            #expect(invoke("STATUS", ok).exitCode == 0)
            #expect(listDir(tmp + "/new/testnet") == ["lock"])

            writeFile(tmp + "/file", "not a directory")
            let bad = hostLocalConfig(
                version: .v1_1_0, dataDir: tmp + "/file", ipam: ["ranges": ranges([["10.20.0.0/24"]])])
            let e = try cniError(invoke("STATUS", bad))
            #expect(e.code == 50)
            #expect(e.msg.contains("\(tmp)/file/testnet"))
            #expect(e.msg.contains("Not a directory"))

            let invalid = hostLocalConfig(version: .v1_1_0, dataDir: tmp, ipam: [:])
            #expect(try cniError(invoke("STATUS", invalid)).code == 50)
        }
    }
}

@Suite struct HostLocalConfigTests {
    @Test func dualStackGetsOneAddressPerFamily() throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(
                version: .v1_0_0, dataDir: tmp,
                ipam: ["ranges": ranges([["10.20.0.0/24"], ["fd00:20::/64"]])])
            let r = try add(conf, version: .v1_0_0)
            #expect(
                r.ips == [
                    Result.IPConfig(address: cidr("10.20.0.2/24"), gateway: ip("10.20.0.1")),
                    Result.IPConfig(address: cidr("fd00:20::2/64"), gateway: ip("fd00:20::1")),
                ])
            #expect(reservedIPs(tmp + "/testnet") == [ip("10.20.0.2"), ip("fd00:20::2")])
            #expect(fileText(tmp + "/testnet/last_reserved_ip.1") == "fd00:20::2")
        }
    }

    @Test func dualStackInTheLegacyLayout() throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(
                version: .v0_2_0, dataDir: tmp,
                ipam: [
                    "ranges": ranges([["10.20.0.0/24"], ["fd00:20::/64"]]),
                    "routes": .array([
                        .object(["dst": .string("0.0.0.0/0")]),
                        .object(["dst": .string("::/0")]),
                    ]),
                ])
            let json = try JSON.parse(invoke("ADD", conf).stdout)
            #expect(json["ip4"]?["ip"] == .string("10.20.0.2/24"))
            #expect(json["ip6"]?["ip"] == .string("fd00:20::2/64"))
            #expect(json["ip6"]?["routes"] == .array([.object(["dst": .string("::/0")])]))
        }
    }

    @Test func routesAreCopiedVerbatimAndDNSComesFromResolvConf() throws {
        try withTempDir { tmp in
            writeFile(
                tmp + "/resolv.conf",
                """
                # generated
                ; also a comment
                nameserver 10.0.0.53
                nameserver fd00::53
                domain example.com
                search a.example.com  b.example.com
                options ndots:5 timeout:2
                sortlist 10.0.0.0
                nameserver
                """)
            let routes: JSON = .array([
                .object(["dst": .string("0.0.0.0/0")]),
                .object(["dst": .string("192.168.0.0/16"), "gw": .string("10.20.0.254")]),
                .object(["dst": .string("fd00:99::/64"), "gw": .string("fd00::1"), "priority": .int(10)]),
            ])
            let conf = hostLocalConfig(
                version: .v1_1_0, dataDir: tmp,
                ipam: [
                    "ranges": ranges([["10.20.0.0/24"]]), "routes": routes,
                    "resolvConf": .string(tmp + "/resolv.conf"),
                ])
            let json = try JSON.parse(invoke("ADD", conf).stdout)
            #expect(json["routes"] == routes)
            let r = try Result(json: json, assumedVersion: .v1_1_0)
            #expect(
                r.dns
                    == Result.DNS(
                        nameservers: ["10.0.0.53", "fd00::53"], domain: "example.com",
                        search: ["a.example.com", "b.example.com"], options: ["ndots:5", "timeout:2"]))

            let missing = hostLocalConfig(
                version: .v1_1_0, dataDir: tmp,
                ipam: [
                    "ranges": ranges([["10.20.0.0/24"]]),
                    "resolvConf": .string(tmp + "/nope"),
                ])
            let e = try cniError(invoke("ADD", missing, id: "ctr2"))
            #expect(e.code == 5)
            #expect(reservedIPs(tmp + "/testnet") == [ip("10.20.0.2")])
        }
    }

    @Test func rangeSetOrderIsRuntimeThenLegacyThenRanges() throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(
                version: .v1_0_0, dataDir: tmp,
                ipam: [
                    "subnet": .string("10.2.0.0/24"), "rangeStart": .string("10.2.0.50"),
                    "gateway": .string("10.2.0.254"), "ranges": ranges([["10.3.0.0/24"]]),
                ],
                extra: ["runtimeConfig": .object(["ipRanges": ranges([["10.1.0.0/24"]])])])
            let r = try add(conf, version: .v1_0_0)
            #expect(r.ips.map(\.address) == [cidr("10.1.0.2/24"), cidr("10.2.0.50/24"), cidr("10.3.0.2/24")])
            #expect(r.ips.map(\.gateway) == [ip("10.1.0.1"), ip("10.2.0.254"), ip("10.3.0.1")])
            #expect(fileText(tmp + "/testnet/last_reserved_ip.1") == "10.2.0.50")
        }
    }

    @Test func requestedAddressesFromAllThreeSources() throws {
        try withTempDir { tmp in
            let extra: [String: JSON] = [
                "args": .object(["cni": .object(["ips": .array([.string("fd00:20::77/64")])])]),
                "runtimeConfig": .object(["ips": .array([.string("10.21.0.9")])]),
            ]
            let conf = hostLocalConfig(
                version: .v1_0_0, dataDir: tmp,
                ipam: ["ranges": ranges([["10.20.0.0/24"], ["fd00:20::/64"], ["10.21.0.0/24"]])],
                extra: extra)
            let r = try add(conf, version: .v1_0_0, args: "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.20.0.66")
            #expect(r.ips.map(\.address) == [cidr("10.20.0.66/24"), cidr("fd00:20::77/64"), cidr("10.21.0.9/24")])
            #expect(reservedIPs(tmp + "/testnet") == ["10.20.0.66", "10.21.0.9", "fd00:20::77"].map(ip))
        }
    }

    @Test func requestedAddressErrors() throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(
                version: .v1_0_0, dataDir: tmp,
                ipam: ["ranges": ranges([["10.20.0.0/24"], ["fd00:20::/64"]])])
            // Unknown CNI_ARGS keys need IgnoreUnknown.
            let unknown = try cniError(invoke("ADD", conf, args: "K8S_POD_NAME=p;IP=10.20.0.66"))
            #expect(unknown.code == 4)
            let bad = try cniError(invoke("ADD", conf, args: "IP=10.20.0.666"))
            #expect(bad.code == 4)
            let gateway = try cniError(invoke("ADD", conf, args: "IP=10.20.0.1"))
            #expect(gateway.msg == "failed to allocate for range 0: requested ip 10.20.0.1 is subnet's gateway")
            let outside = try cniError(invoke("ADD", conf, args: "IP=192.168.1.1"))
            #expect(outside.msg == "failed to allocate all requested IPs: 192.168.1.1")
            #expect(reservedIPs(tmp + "/testnet").isEmpty)

            _ = try add(conf, version: .v1_0_0, id: "first", args: "IP=10.20.0.66")
            let taken = try cniError(invoke("ADD", conf, id: "second", args: "IP=10.20.0.66"))
            #expect(
                taken.msg
                    == "failed to allocate for range 0: requested IP address 10.20.0.66 is not available in range set 10.20.0.1-10.20.0.254"
            )
            // The failure in range set 0 happened before anything was reserved for "second". (The
            // rolled-back ADD above still advanced the v6 round robin: "first" got ::3, not ::2.)
            #expect(reservedIPs(tmp + "/testnet") == [ip("10.20.0.66"), ip("fd00:20::3")])
        }
    }

    @Test func secondAddForTheSameAttachmentFailsAndKeepsTheFirst() throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(version: .v1_0_0, dataDir: tmp, ipam: ["ranges": ranges([["10.20.0.0/24"]])])
            _ = try add(conf, version: .v1_0_0)
            let e = try cniError(invoke("ADD", conf))
            #expect(
                e.msg
                    == "failed to allocate for range 0: 10.20.0.2 has been allocated to ctr1, duplicate allocation is not allowed"
            )
            #expect(reservedIPs(tmp + "/testnet") == [ip("10.20.0.2")])
        }
    }

    @Test func exhaustedPoolFailsAndReleasesEarlierRangeSets() throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(
                version: .v1_0_0, dataDir: tmp,
                ipam: ["ranges": ranges([["10.20.0.0/24"], ["10.21.0.0/30"]])])
            _ = try add(conf, version: .v1_0_0, id: "a")  // takes 10.21.0.2, the only one
            let e = try cniError(invoke("ADD", conf, id: "b"))
            #expect(e.code == 999)
            #expect(
                e.msg == "failed to allocate for range 1: no IP addresses available in range set: 10.21.0.1-10.21.0.2")
            #expect(reservedIPs(tmp + "/testnet") == [ip("10.20.0.2"), ip("10.21.0.2")])
        }
    }

    @Test func configErrors() throws {
        func error(_ ipam: [String: JSON]?, version: SpecVersion = .v1_0_0, extra: [String: JSON] = [:]) throws
            -> CNIError
        {
            var o: [String: JSON] = [
                "cniVersion": .string(version.rawValue), "name": .string("testnet"), "type": .string("x"),
            ]
            if var ipam {
                ipam["dataDir"] = .string("/tmp/podnet-ipam-never-created")
                o["ipam"] = .object(ipam)
            }
            for (k, v) in extra { o[k] = v }
            return try cniError(invoke("ADD", JSON.object(o).encoded()))
        }
        let cases: [(ipam: [String: JSON]?, version: SpecVersion, msg: String)] = [
            (nil, .v1_0_0, "IPAM config missing 'ipam' key"),
            (["type": .string("host-local")], .v1_0_0, "no IP ranges specified"),
            (["ranges": .array([])], .v1_0_0, "no IP ranges specified"),
            (["ranges": .array([.array([])])], .v1_0_0, "invalid range set 0: empty range set"),
            (
                ["ranges": ranges([["10.0.0.0/24"], ["10.1.0.5/24"]])], .v1_0_0,
                "invalid range set 1: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.0.0"
            ),
            (
                ["ranges": ranges([["10.0.0.0/31"]])], .v1_0_0,
                "invalid range set 0: Network 10.0.0.0/31 too small to allocate from"
            ),
            (
                ["ranges": ranges([["10.0.0.0/24", "fd00::/64"]])], .v1_0_0,
                "invalid range set 0: mixed address families"
            ),
            (
                ["ranges": ranges([["10.0.0.0/24", "10.0.0.0/25"]])], .v1_0_0,
                "invalid range set 0: subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap"
            ),
            (
                ["ranges": ranges([["10.0.0.0/24"], ["fd00::/64"], ["10.0.0.128/25"]])], .v1_0_0,
                "range set 0 overlaps with 2"
            ),
            (
                ["ranges": ranges([["10.0.0.0/24"], ["10.1.0.0/24"]])], .v0_2_0,
                "CNI version 0.2.0 does not support more than 1 address per family"
            ),
            (
                ["subnet": .string("10.0.0.0/24"), "rangeStart": .string("10.0.1.1")], .v1_0_0,
                "invalid range set 0: RangeStart 10.0.1.1 not in network 10.0.0.0/24"
            ),
            (
                ["subnet": .string("10.0.0.0/24"), "rangeEnd": .string("10.0.0.x")], .v1_0_0,
                "invalid range set 0: invalid IP address: 10.0.0.x"
            ),
            (
                ["ranges": .array([.array([.object(["subnet": .string("banana")])])])], .v1_0_0,
                "invalid range set 0: invalid CIDR address: banana"
            ),
            (
                ["ranges": .array([.array([.object(["rangeStart": .string("10.0.0.1")])])])], .v1_0_0,
                "invalid range set 0: ipam.ranges[0][0].subnet is missing"
            ),
        ]
        for c in cases {
            let e = try error(c.ipam, version: c.version)
            #expect(e.code == 7, "\(c.msg)")
            #expect(e.msg == c.msg)
        }
        // Two ranges of different families are fine in the legacy versions.
        try withTempDir { tmp in
            let conf = hostLocalConfig(
                version: .v0_1_0, dataDir: tmp, ipam: ["ranges": ranges([["10.0.0.0/24"], ["fd00::/64"]])])
            #expect(invoke("ADD", conf).exitCode == 0)
        }
        // A value of the wrong type names its key.
        let typed = try error(["ranges": .string("10.0.0.0/24")])
        #expect(typed.code == 7 && typed.msg.contains("ipam.ranges"))
        let runtime = try error(
            ["ranges": ranges([["10.0.0.0/24"]])],
            extra: ["runtimeConfig": .object(["ips": .array([.string("nope")])])])
        #expect(runtime.code == 7 && runtime.msg == "invalid IP address in runtimeConfig.ips: \"nope\"")
    }

    @Test func delStillReleasesWhenTheRangesNoLongerValidate() throws {
        try withTempDir { tmp in
            let good = hostLocalConfig(version: .v1_0_0, dataDir: tmp, ipam: ["ranges": ranges([["10.20.0.0/24"]])])
            _ = try add(good, version: .v1_0_0)
            let broken = hostLocalConfig(version: .v1_0_0, dataDir: tmp, ipam: ["ranges": ranges([["10.20.0.5/24"]])])
            #expect(invoke("DEL", broken).exitCode == 0)
            #expect(reservedIPs(tmp + "/testnet").isEmpty)
        }
    }

    @Test func concurrentAddsGetDistinctAddresses() throws {
        try withTempDir { tmp in
            let conf = hostLocalConfig(
                version: .v1_0_0, dataDir: tmp,
                ipam: ["ranges": ranges([["10.20.0.0/24"], ["fd00:20::/64"]])])
            let got = Collected<String>()
            let failures = Collected<String>()
            onThreads(30) { i in
                let out = invoke("ADD", conf, id: "ctr\(i)")
                guard out.exitCode == 0, let r = try? Result(json: JSON.parse(out.stdout), assumedVersion: .v1_0_0)
                else {
                    failures.append(out.stdoutText)
                    return
                }
                for a in r.ips { got.append(a.address.address.description) }
            }
            #expect(failures.all.isEmpty)
            #expect(got.all.count == 60)
            #expect(Set(got.all).count == 60)
            #expect(reservedIPs(tmp + "/testnet").count == 60)
            // Each file names its own container.
            let owners = reservedIPs(tmp + "/testnet").compactMap { fileText(tmp + "/testnet/\($0)") }
            #expect(Set(owners).count == 30)
        }
    }
}
