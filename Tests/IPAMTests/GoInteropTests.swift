// Interoperability with the Go reference host-local (Debian containernetworking-plugins 1.1.1, which
// speaks cniVersion up to 1.0.0): both binaries on one data directory must see and release each
// other's reservations, continue each other's round robin, and exclude each other with the flock.
// These tests fail, not skip, when the Go binary is missing.

import Addressing
import CNI
import Spawn
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

let goHostLocal = "/usr/lib/cni/host-local"
let goVersions: [SpecVersion] = [.v0_1_0, .v0_2_0, .v0_3_0, .v0_3_1, .v0_4_0, .v1_0_0]

/// Runs the Go host-local as a runtime would: CNI_* in the environment, the config on stdin.
func runGo(
    _ command: String, _ config: [UInt8], id: String = "ctr1", ifname: String = "eth0",
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> Spawn.Output {
    try #require(
        access(goHostLocal, X_OK) == 0,
        "the Go reference plugin \(goHostLocal) is missing: run scripts/deps.sh bench to install it",
        sourceLocation: sourceLocation)
    return try Spawn.run(
        goHostLocal, argv: ["host-local"],
        environment: cniEnv(command, id: id, ifname: ifname).map { "\($0.key)=\($0.value)" },
        stdin: config, timeout: 30)
}

/// Go's ADD result; records an issue if the Go plugin failed.
func goAdd(_ config: [UInt8], version: SpecVersion, id: String, sourceLocation: SourceLocation = #_sourceLocation)
    throws -> Result
{
    let out = try runGo("ADD", config, id: id, sourceLocation: sourceLocation)
    try #require(
        out.status == 0, "Go ADD failed: \(String(decoding: out.stdout + out.stderr, as: UTF8.self))",
        sourceLocation: sourceLocation)
    return try Result(json: JSON.parse(out.stdout), assumedVersion: version)
}

@Suite struct GoInteropTests {
    @Test(arguments: goVersions)
    func reservationsAreSharedBothWays(_ version: SpecVersion) throws {
        try withTempDir { tmp in
            let dir = tmp + "/testnet"
            let conf = hostLocalConfig(
                version: version, dataDir: tmp,
                ipam: ["ranges": ranges([["10.40.0.0/24"], ["fd00:40::/64"]])])

            // Go allocates first; we continue its round robin and see its reservation.
            let go = try goAdd(conf, version: version, id: "go-ctr")
            #expect(go.ips.map(\.address) == [cidr("10.40.0.2/24"), cidr("fd00:40::2/64")])
            #expect(fileText(dir + "/10.40.0.2") == "go-ctr\r\neth0")
            let ours = try add(conf, version: version, id: "swift-ctr")
            #expect(ours.ips.map(\.address) == [cidr("10.40.0.3/24"), cidr("fd00:40::3/64")])
            if version >= .v0_4_0 {
                #expect(invoke("CHECK", conf, id: "go-ctr").exitCode == 0)
                #expect(try runGo("CHECK", conf, id: "swift-ctr").status == 0)
            }
            // Neither hands out the other's address to a requester.
            let stolen = try runGo("ADD", conf, id: "thief", ifname: "eth9")
            #expect(stolen.status == 0)  // sanity: Go can allocate...
            let goAgain = try Result(json: JSON.parse(stolen.stdout), assumedVersion: version)
            #expect(goAgain.ips.map(\.address) == [cidr("10.40.0.4/24"), cidr("fd00:40::4/64")])

            // We release Go's reservation, Go releases ours.
            #expect(invoke("DEL", conf, id: "go-ctr", netns: nil).exitCode == 0)
            #expect(try runGo("DEL", conf, id: "swift-ctr").status == 0)
            #expect(reservedIPs(dir) == [ip("10.40.0.4"), ip("fd00:40::4")])
            if version >= .v0_4_0 {
                #expect(try runGo("CHECK", conf, id: "go-ctr").status != 0)
                #expect(invoke("CHECK", conf, id: "swift-ctr").exitCode != 0)
            }
            // And Go continues our round robin in turn.
            _ = try add(conf, version: version, id: "swift-2")
            let go2 = try goAdd(conf, version: version, id: "go-2")
            #expect(go2.ips.map(\.address) == [cidr("10.40.0.6/24"), cidr("fd00:40::6/64")])
        }
    }

    @Test func ourGarbageCollectionReleasesGoReservations() throws {
        try withTempDir { tmp in
            let dir = tmp + "/testnet"
            let goConf = hostLocalConfig(version: .v1_0_0, dataDir: tmp, ipam: ["ranges": ranges([["10.41.0.0/24"]])])
            _ = try goAdd(goConf, version: .v1_0_0, id: "keep")
            _ = try goAdd(goConf, version: .v1_0_0, id: "stale")
            let gcConf = hostLocalConfig(
                version: .v1_1_0, dataDir: tmp, ipam: ["ranges": ranges([["10.41.0.0/24"]])],
                extra: [
                    "cni.dev/valid-attachments": .array([
                        .object(["containerID": .string("keep"), "ifname": .string("eth0")])
                    ])
                ])
            #expect(invoke("GC", gcConf).exitCode == 0)
            #expect(reservedIPs(dir) == [ip("10.41.0.2")])
            #expect(try runGo("CHECK", goConf, id: "keep").status == 0)
            #expect(try runGo("CHECK", goConf, id: "stale").status != 0)
        }
    }

    @Test func concurrentGoAndSwiftAddsNeverCollide() throws {
        _ = try runGo("VERSION", [])
        try withTempDir { tmp in
            let conf = hostLocalConfig(version: .v1_0_0, dataDir: tmp, ipam: ["ranges": ranges([["10.42.0.0/24"]])])
            let got = Collected<String>()
            let failures = Collected<String>()
            onThreads(24) { i in
                let id = "ctr\(i)"
                let stdout: [UInt8]
                if i % 2 == 0 {
                    let out = invoke("ADD", conf, id: id)
                    guard out.exitCode == 0 else { return failures.append("swift \(id): \(out.stdoutText)") }
                    stdout = out.stdout
                } else {
                    guard
                        let out = try? Spawn.run(
                            goHostLocal, argv: ["host-local"],
                            environment: cniEnv("ADD", id: id).map { "\($0.key)=\($0.value)" },
                            stdin: conf, timeout: 30),
                        out.status == 0
                    else { return failures.append("go \(id) failed") }
                    stdout = out.stdout
                }
                guard let r = try? Result(json: JSON.parse(stdout), assumedVersion: .v1_0_0) else {
                    return failures.append("\(id): unreadable result")
                }
                for a in r.ips { got.append(a.address.address.description) }
            }
            #expect(failures.all.isEmpty)
            #expect(got.all.count == 24)
            #expect(Set(got.all).count == 24)
            #expect(reservedIPs(tmp + "/testnet").count == 24)
        }
    }
}
