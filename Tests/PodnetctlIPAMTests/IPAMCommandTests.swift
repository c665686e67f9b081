// `podnetctl ipam` and `podnetctl ipam release --leaked` in-process against a store written the
// way host-local writes it: two live and two leaked reservations.

import Addressing
import IPAM
import JSONValue
import PodnetctlIPAM
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct IPAMListingTests {
    @Test func tableNamesEachReservationAndTheLeakedOnes() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            writeFile(tmp + "/live", "# pods on this node\n\(liveA)\n\n  \(liveB)  \n")
            let run = try ipam(["--data-dir", tmp, "--live", tmp + "/live"])
            #expect(run.status == 1)
            #expect(run.stderr == "")
            #expect(
                run.stdout == """
                    network cbr0
                      \(tmp)/cbr0
                      IP           CONTAINER     IFNAME  STATE
                      10.244.1.2   a10000000000  eth0    live
                      10.244.1.3   b20000000000  eth0    live
                      10.244.1.4   c30000000000  eth0    LEAKED
                      10.244.1.10  d40000000000  net1    LEAKED
                    cbr0: 4 reserved, 2 leaked

                    """)
            for line in run.stdout.split(separator: "\n") where !line.contains(tmp) { #expect(line.count <= 80) }
        }
    }

    @Test func withoutALiveSetThereIsNoStateAndNoLeak() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            try reserve("10.88.0.5", id: liveA, network: "podman", dataDir: tmp)
            let run = try ipam(["--data-dir", tmp])
            #expect(run.status == 0)
            #expect(
                run.stdout == """
                    network cbr0
                      \(tmp)/cbr0
                      IP           CONTAINER     IFNAME
                      10.244.1.2   a10000000000  eth0
                      10.244.1.3   b20000000000  eth0
                      10.244.1.4   c30000000000  eth0
                      10.244.1.10  d40000000000  net1
                    cbr0: 4 reserved

                    network podman
                      \(tmp)/podman
                      IP         CONTAINER     IFNAME
                      10.88.0.5  a10000000000  eth0
                    podman: 1 reserved

                    """)
            let one = try ipam(["--data-dir", tmp, "--network", "podman"])
            #expect(one.stdout.hasPrefix("network podman\n") && !one.stdout.contains("cbr0"))
        }
    }

    @Test func jsonHasFullIDsAndStates() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            writeFile(tmp + "/cbr0/10.244.1.20", goneC)  // a legacy reservation: no interface
            let run = try ipam(["--data-dir", tmp, "--live", "-", "--json"], stdin: "\(liveA)\n\(liveB)\n")
            #expect(run.status == 1)
            let doc = try JSON(parsing: Array(run.stdout.utf8))
            #expect(doc["schemaVersion"] == .int(1))
            #expect(doc["dataDir"] == .string(tmp))
            #expect(doc["liveIDs"] == .int(2))
            #expect(doc["error"] == .null)
            let networks = try #require(doc["networks"]?.arrayValue)
            #expect(networks.count == 1)
            let cbr0 = networks[0]
            #expect(cbr0["name"] == .string("cbr0"))
            #expect(cbr0["directory"] == .string(tmp + "/cbr0"))
            #expect(cbr0["reserved"] == .int(5))
            #expect(cbr0["leaked"] == .int(3))
            #expect(cbr0["error"] == .null)
            func row(_ address: String, _ id: String, _ ifname: String?, _ state: String) -> JSON {
                .object([
                    "ip": .string(address), "family": .int(4), "containerID": .string(id),
                    "ifname": ifname.map { .string($0) } ?? .null, "state": .string(state),
                ])
            }
            #expect(
                cbr0["reservations"]
                    == .array([
                        row("10.244.1.2", liveA, "eth0", "live"), row("10.244.1.3", liveB, "eth0", "live"),
                        row("10.244.1.4", goneC, "eth0", "leaked"), row("10.244.1.10", goneD, "net1", "leaked"),
                        row("10.244.1.20", goneC, nil, "leaked"),
                    ]))
        }
    }

    @Test func jsonWithoutALiveSetHasNullStates() throws {
        try withTempDir { tmp in
            try reserve("fd00::2", id: liveA, network: "v6", dataDir: tmp)
            let run = try ipam(["--data-dir", tmp, "--json"])
            #expect(run.status == 0)
            let doc = try JSON(parsing: Array(run.stdout.utf8))
            #expect(doc["liveIDs"] == .null)
            let net = try #require(doc["networks"]?.arrayValue?.first)
            #expect(net["leaked"] == .null)
            let r = try #require(net["reservations"]?.arrayValue?.first)
            #expect(r["family"] == .int(6) && r["state"] == .null && r["ip"] == .string("fd00::2"))
        }
    }

    @Test func rangesAndTheirUseComeFromTheConfig() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            try reserve("10.88.0.5", id: liveA, network: "podman", dataDir: tmp)
            writeFile(
                tmp + "/10-cbr0.conflist",
                """
                {"cniVersion": "1.0.0", "name": "cbr0", "plugins": [
                  {"type": "bridge", "ipam": {"type": "host-local", "dataDir": "\(tmp)",
                    "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:1::/64", "rangeStart": "fd00:1::10"}]]}},
                  {"type": "portmap", "capabilities": {"portMappings": true}}]}
                """)
            let run = try ipam(["--data-dir", tmp, "--config", tmp + "/10-cbr0.conflist"])
            #expect(run.status == 0)
            #expect(
                run.stdout.hasPrefix(
                    """
                    network cbr0
                      \(tmp)/cbr0
                      range 10.244.1.1-10.244.1.254 (10.244.1.0/24): 4 of 253 used
                      range fd00:1::10-fd00:1::ffff:ffff:ffff:ffff (fd00:1::/64): 0 used

                    """))
            // The config names cbr0: the other network has no ranges.
            #expect(
                run.stdout.hasSuffix(
                    "network podman\n  \(tmp)/podman\n  IP         CONTAINER     IFNAME\n  10.88.0.5  a10000000000  eth0\npodman: 1 reserved\n"
                ))

            let json = try JSON(
                parsing: Array(
                    try ipam(["--data-dir", tmp, "--config", tmp + "/10-cbr0.conflist", "--json"]).stdout.utf8))
            let networks = try #require(json["networks"]?.arrayValue)
            #expect(networks[1]["ranges"] == .null)
            #expect(
                networks[0]["ranges"]
                    == .array([
                        .object([
                            "rangeSet": .int(0), "subnet": .string("10.244.1.0/24"),
                            "rangeStart": .string("10.244.1.1"),
                            "rangeEnd": .string("10.244.1.254"), "gateway": .string("10.244.1.1"), "size": .int(253),
                            "used": .int(4),
                        ]),
                        .object([
                            "rangeSet": .int(1), "subnet": .string("fd00:1::/64"), "rangeStart": .string("fd00:1::10"),
                            "rangeEnd": .string("fd00:1::ffff:ffff:ffff:ffff"), "gateway": .string("fd00:1::1"),
                            "size": .null, "used": .int(0),
                        ]),
                    ]))

            writeFile(tmp + "/flannel.conflist", #"{"name": "cbr0", "plugins": [{"type": "flannel"}]}"#)
            let flannel = try ipam(["--data-dir", tmp, "--config", tmp + "/flannel.conflist"])
            #expect(flannel.status == 2)
            #expect(flannel.stderr.contains("no host-local ipam section"))
        }
    }

    @Test func colourOnlyOnATerminalWithoutNoColor() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            writeFile(tmp + "/live", liveA + "\n")
            let args = ["--data-dir", tmp, "--live", tmp + "/live"]
            #expect(try ipam(args, isTTY: true).stdout.contains("\u{1B}[31mLEAKED\u{1B}[0m"))
            #expect(!(try ipam(args, isTTY: false).stdout.contains("\u{1B}")))
            #expect(!(try ipam(args, isTTY: true, environment: ["NO_COLOR": "1"]).stdout.contains("\u{1B}")))
            #expect(!(try ipam(args, isTTY: true, environment: ["NO_COLOR": ""]).stdout.contains("\u{1B}")))
        }
    }

    @Test func anUnreadableStoreIsExitStatus2() throws {
        try withTempDir { tmp in
            let missing = try ipam(["--data-dir", tmp + "/nothing"])
            #expect(missing.status == 2)
            #expect(missing.stderr.contains("cannot list \(tmp)/nothing"))
            let json = try ipam(["--data-dir", tmp + "/nothing", "--json"])
            #expect(json.status == 2)
            #expect(try JSON(parsing: Array(json.stdout.utf8))["error"]?.stringValue != nil)
            // A mistyped network is an error, and no empty store is left behind.
            let typo = try ipam(["--data-dir", tmp, "--network", "cbr9"])
            #expect(typo.status == 2)
            #expect(listDir(tmp) == [])
            let noFile = try ipam(["--data-dir", tmp, "--live", tmp + "/absent"])
            #expect(noFile.status == 2)
            #expect(noFile.stderr.contains("cannot read the live set"))
        }
    }

    @Test func liveAndLiveFromRuntimeExcludeEachOther() {
        #expect(throws: (any Error).self) { try IPAMCommand.parseAsRoot(["--live", "x", "--live-from-runtime"]) }
    }
}

@Suite struct IPAMReleaseTests {
    @Test func releasesExactlyTheLeakedOnes() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            writeFile(tmp + "/live", "\(liveA)\n\(liveB)\n")
            let run = try ipam(["release", "--leaked", "--data-dir", tmp, "--live", tmp + "/live"])
            #expect(run.status == 0)
            #expect(run.stderr == "")
            #expect(
                run.stdout == """
                    cbr0: released 10.244.1.4 (\(goneC) eth0)
                    cbr0: released 10.244.1.10 (\(goneD) net1)
                    cbr0: 2 released

                    """)
            #expect(
                try held("cbr0", tmp) == [
                    Reservation(ip: ip("10.244.1.2"), containerID: liveA, ifname: "eth0"),
                    Reservation(ip: ip("10.244.1.3"), containerID: liveB, ifname: "eth0"),
                ])
            let after = try ipam(["--data-dir", tmp, "--live", tmp + "/live"])
            #expect(after.status == 0)
            #expect(after.stdout.hasSuffix("cbr0: 2 reserved, 0 leaked\n"))
            #expect(!after.stdout.contains("LEAKED"))
        }
    }

    @Test func aLiveContainersLegacyReservationIsKept() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            writeFile(tmp + "/cbr0/10.244.1.20", liveA)
            writeFile(tmp + "/cbr0/10.244.1.21", "")  // created, never written: a crash
            let run = try ipam(["release", "--leaked", "--data-dir", tmp, "--live", "-"], stdin: liveA + "\n" + liveB)
            #expect(run.status == 0)
            #expect(run.stdout.contains("released 10.244.1.21 (no owner)"))
            #expect(try held("cbr0", tmp).map(\.ip) == [ip("10.244.1.2"), ip("10.244.1.3"), ip("10.244.1.20")])
        }
    }

    @Test func dryRunChangesNothing() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            let before = listDir(tmp + "/cbr0")
            let run = try ipam(
                ["release", "--leaked", "--dry-run", "--data-dir", tmp, "--live", "-"], stdin: "\(liveA)\n\(liveB)\n")
            #expect(run.status == 0)
            #expect(
                run.stdout == """
                    cbr0: would release 10.244.1.4 (\(goneC) eth0)
                    cbr0: would release 10.244.1.10 (\(goneD) net1)
                    cbr0: 2 leaked, nothing released (dry run)

                    """)
            #expect(listDir(tmp + "/cbr0") == before)
            #expect(try held("cbr0", tmp).count == 4)
        }
    }

    @Test func anEmptyLiveSetIsRefused() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            writeFile(tmp + "/live", "# nothing is running\n\n")
            let run = try ipam(["release", "--leaked", "--data-dir", tmp, "--live", tmp + "/live"])
            #expect(run.status == 2)
            #expect(run.stderr.contains("the live set is empty"))
            #expect(try held("cbr0", tmp).count == 4)
            let allowed = try ipam(
                ["release", "--leaked", "--allow-empty-live", "--data-dir", tmp, "--live", tmp + "/live"])
            #expect(allowed.status == 0)
            #expect(try held("cbr0", tmp).isEmpty)
        }
    }

    @Test func releaseNeedsLeakedAndALiveSet() {
        #expect(throws: (any Error).self) { try IPAMCommand.parseAsRoot(["release", "--live", "x"]) }
        #expect(throws: (any Error).self) { try IPAMCommand.parseAsRoot(["release", "--leaked"]) }
        #expect(throws: Never.self) { try IPAMCommand.parseAsRoot(["release", "--leaked", "--live-from-runtime"]) }
    }

    /// A plugin ADD that comes while release holds the lock waits for it, then finds the freed
    /// address free: nothing is lost on either side.
    @Test func aConcurrentReserveWaitsForTheLockAndIsKept() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            let reserved = Cell<Result<Bool, IPAMError>?>(nil)
            let sawWaiter = Cell(false)
            let thread = Cell<Thread?>(nil)
            let run = try ipam(
                ["release", "--leaked", "--data-dir", tmp, "--live", "-"], stdin: "\(liveA)\n\(liveB)\n",
                whileLocked: {
                    // The plugin's path: its own DiskStore (its own open file description), lock,
                    // reserve the address release is about to free.
                    let t = Thread {
                        let r = Result<Bool, IPAMError> { () throws(IPAMError) -> Bool in
                            let store = try DiskStore(network: "cbr0", dataDir: tmp)
                            return try store.withLock { () throws(IPAMError) in
                                try store.reserve(ip("10.244.1.4"), id: liveA, ifname: "eth1", rangeSetIndex: 0)
                            }
                        }
                        reserved.value = r
                    }
                    thread.value = t
                    sawWaiter.value = waitForFlockWaiter(on: tmp + "/cbr0/lock")
                    #expect(reserved.value == nil)
                })
            thread.value?.join()
            #expect(sawWaiter.value)
            #expect(run.status == 0)
            #expect(run.stdout.hasSuffix("cbr0: 2 released\n"))
            #expect(reserved.value == .success(true))
            #expect(
                try held("cbr0", tmp) == [
                    Reservation(ip: ip("10.244.1.2"), containerID: liveA, ifname: "eth0"),
                    Reservation(ip: ip("10.244.1.3"), containerID: liveB, ifname: "eth0"),
                    Reservation(ip: ip("10.244.1.4"), containerID: liveA, ifname: "eth1"),
                ])
        }
    }
}

@Suite struct LiveFromRuntimeTests {
    /// A fake runtime CLI: a shell script that prints `output` and exits with `status`.
    func fakeRuntime(_ dir: String, _ name: String, output: String, status: Int = 0) throws {
        try writeExecutable(dir + "/" + name, "#!/bin/sh\nprintf '%s' '\(output)'\necho oops >&2\nexit \(status)\n")
    }

    @Test func crictlFirstThenPodman() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            mkdir(tmp + "/bin", 0o755)
            try fakeRuntime(tmp + "/bin", "podman", output: "\(liveA)\n")
            let podman = try ipam(["--data-dir", tmp, "--live-from-runtime"], environment: ["PATH": tmp + "/bin"])
            #expect(podman.stdout.hasSuffix("cbr0: 4 reserved, 3 leaked\n"))
            try fakeRuntime(tmp + "/bin", "crictl", output: "\(liveA)\n\(liveB)\n")
            let crictl = try ipam(["--data-dir", tmp, "--live-from-runtime"], environment: ["PATH": tmp + "/bin"])
            #expect(crictl.status == 1)
            #expect(crictl.stdout.hasSuffix("cbr0: 4 reserved, 2 leaked\n"))
        }
    }

    @Test func aFailingOrMissingRuntimeIsExitStatus2() throws {
        try withTempDir { tmp in
            try fillStore(tmp)
            mkdir(tmp + "/bin", 0o755)
            let none = try ipam(
                ["release", "--leaked", "--data-dir", tmp, "--live-from-runtime"], environment: ["PATH": tmp + "/bin"])
            #expect(none.status == 2)
            #expect(none.stderr.contains("neither crictl nor podman is on PATH"))
            try fakeRuntime(tmp + "/bin", "crictl", output: "", status: 1)
            let failed = try ipam(
                ["release", "--leaked", "--data-dir", tmp, "--live-from-runtime"], environment: ["PATH": tmp + "/bin"])
            #expect(failed.status == 2)
            #expect(failed.stderr.contains("crictl pods -q --no-trunc failed (exit status 1): oops"))
            #expect(try held("cbr0", tmp).count == 4)
        }
    }
}
