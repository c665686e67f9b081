// Input that once crashed or hung a plugin, at the level of the CNI library (issue 8): route
// numbers the kernel cannot hold, delegate time-outs and their rollback, interface names with
// "%", and files that are FIFOs, devices or too large.

import Addressing
import FoundationEssentials
import Glibc
import TestSupport
import Testing

@testable import CNI

/// A CNI_PATH folder holding the shell script `fake`; DEL only records that it ran (file
/// `del-called` next to the script), everything else runs `script`.
private func withFake(_ script: String, _ body: (_ dir: String) throws -> Void) throws {
    var template = Array("/tmp/podnet-hostile-XXXXXX".utf8CString)
    let dir = try #require(
        template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
    defer { for f in ["fake", "del-called", "child.pid", "fifo", "big"] { unlink(dir + "/" + f) }; rmdir(dir) }
    let text =
        "#!/bin/sh\nd=$(dirname \"$0\")\nif [ \"$CNI_COMMAND\" = DEL ]; then : > \"$d/del-called\"; exit 0; fi\n"
        + script + "\n"
    try writeExecutable(dir + "/fake", text)
    try body(dir)
}

private func request(
    _ dir: String, command: String = "ADD", ifname: String = "eth0",
    _ extra: [String: String] = [:]
) throws -> Request {
    var e = [
        "CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": ifname,
        "CNI_PATH": dir,
    ]
    e.merge(extra) { $1 }
    return try Request(
        env: CNIEnvironment(e), stdin: Array(#"{"cniVersion":"1.0.0","name":"n"}"#.utf8),
        supported: SpecVersion.allCases)
}

private func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

private let badRouteFields: [(field: String, value: String)] = [
    ("priority", "-1"), ("scope", "300"), ("table", "-1"), ("mtu", "5000000000"), ("advmss", "-1"),
    ("priority", "4294967296"), ("scope", "-1"),
]

@Suite struct HostileInputTests {
    // MARK: Route numbers

    @Test(arguments: badRouteFields.map { "\($0.field)=\($0.value)" })
    func routeFieldOutOfRangeIsNamed(_ pair: String) throws {
        let (field, value) = (String(pair.split(separator: "=")[0]), String(pair.split(separator: "=")[1]))
        let json = try JSON.parse(
            Array(#"{"cniVersion":"1.0.0","routes":[{"dst":"0.0.0.0/0","\#(field)":\#(value)}]}"#.utf8))
        // Parsing keeps the value (a prevResult on DEL must still be readable) ...
        let result = try Result(json: json, assumedVersion: .v1_0_0)
        // ... and the conversion for the kernel names it.
        #expect(
            throws: CNIError(
                .invalidNetworkConfig,
                "invalid routes[0].\(field): \(value) is out of range "
                    + (field == "scope" ? "(0 to 255)" : "(0 to 4294967295)"))
        ) {
            try result.checkRouteRanges()
        }
    }

    @Test func routeFieldsAtTheirLimitsConvert() throws {
        let r = Result.Route(
            dst: IPNetwork("0.0.0.0/0")!, mtu: 4_294_967_295, advmss: 0, priority: 4_294_967_295,
            table: 4_294_967_295, scope: 255)
        let k = try r.kernelValues(path: "routes[0]")
        #expect(
            k
                == Result.Route.KernelValues(
                    table: UInt32.max, priority: UInt32.max, scope: 255, mtu: UInt32.max, advmss: 0))
    }

    /// A delegate's result the kernel cannot hold fails ADD with code 7, and its DEL is registered
    /// (it may hold an address).
    @Test func delegateResultWithBadRouteIsRolledBack() throws {
        try withFake(
            #"echo '{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}],"routes":[{"dst":"0.0.0.0/0","mtu":5000000000}]}'"#
        ) { dir in
            var undo = Rollback()
            #expect(
                throws: CNIError(
                    .invalidNetworkConfig,
                    "invalid result from plugin fake: invalid routes[0].mtu: 5000000000 is out of range (0 to 4294967295)"
                )
            ) {
                _ = try Delegate.add("fake", request: try request(dir), undo: &undo)
            }
            #expect(!fileExists(dir + "/del-called"))
            undo.runUnlessCommitted()
            #expect(fileExists(dir + "/del-called"))
        }
    }

    // MARK: Delegate time-outs

    /// A hung delegate is killed at the time-out (code 11), and its DEL is what undoes it.
    @Test func hungDelegateIsKilledAndItsDelRegistered() throws {
        try withFake("exec sleep 600") { dir in
            var undo = Rollback()
            let started = ContinuousClock.now
            do {
                _ = try Delegate.add("fake", request: try request(dir, ["PODNET_DELEGATE_TIMEOUT": "0.3"]), undo: &undo)
                Issue.record("a hung delegate must fail")
            } catch {
                #expect((error as? CNIError)?.code == CNIError.Code.tryAgainLater.rawValue)
            }
            #expect(ContinuousClock.now - started < .seconds(10))
            undo.runUnlessCommitted()
            #expect(fileExists(dir + "/del-called"))
        }
    }

    /// A delegate that reports an error of its own holds nothing: no DEL.
    @Test func delegateReportingAnErrorGetsNoDel() throws {
        try withFake(#"echo '{"code":11,"msg":"pool busy"}'; exit 1"#) { dir in
            var undo = Rollback()
            #expect(throws: CNIError(code: 11, msg: "pool busy")) {
                _ = try Delegate.add("fake", request: try request(dir), undo: &undo)
            }
            undo.runUnlessCommitted()
            #expect(!fileExists(dir + "/del-called"))
        }
    }

    /// A delegate that dies without an error object (a crash) may hold something: DEL.
    @Test func crashedDelegateIsRolledBack() throws {
        try withFake("kill -SEGV $$") { dir in
            var undo = Rollback()
            #expect(throws: CNIError.self) { _ = try Delegate.add("fake", request: try request(dir), undo: &undo) }
            undo.runUnlessCommitted()
            #expect(fileExists(dir + "/del-called"))
        }
    }

    /// A delegate that exits while a process it started still holds its stdout: the result is
    /// used as soon as the delegate has exited, not when the stdout reaches EOF.
    @Test func delegateWhoseChildKeepsStdoutOpen() throws {
        try withFake(
            #"sleep 600 & echo $! > "$d/child.pid"; echo '{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.9/24"}]}'"#
        ) { dir in
            defer {
                if let pid = try? String(contentsOfFile: dir + "/child.pid", encoding: .utf8),
                    let p = Int32(pid.trimmed)
                {
                    kill(p, SIGKILL)
                }
            }
            let started = ContinuousClock.now
            let r = try Delegate.add("fake", request: try request(dir, ["PODNET_DELEGATE_TIMEOUT": "30"]))
            #expect(r.ips.first?.address.description == "10.0.0.9/24")
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    /// A delegate that closes its output and then hangs is still killed at the time-out.
    @Test func delegateThatClosesItsOutputAndHangsTimesOut() throws {
        try withFake("exec >&- 2>&-; exec sleep 600") { dir in
            let started = ContinuousClock.now
            #expect(throws: CNIError.self) {
                try Delegate.run("fake", command: .check, request: try request(dir, ["PODNET_DELEGATE_TIMEOUT": "0.3"]))
            }
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    /// PODNET_DELEGATE_TIMEOUT that is not a positive finite number is code 4 naming it ("nan"
    /// trapped in the conversion for poll).
    @Test(arguments: ["nan", "-nan", "-1", "0", "inf", "1e400", "soon"])
    func badDelegateTimeoutIsNamed(_ value: String) throws {
        try withFake("exit 0") { dir in
            #expect(
                throws: CNIError(
                    .invalidEnvironment,
                    "invalid PODNET_DELEGATE_TIMEOUT \"\(value)\": must be a positive number of seconds")
            ) {
                try Delegate.run(
                    "fake", command: .del, request: try request(dir, command: "DEL", ["PODNET_DELEGATE_TIMEOUT": value])
                )
            }
        }
    }

    // MARK: Interface names

    @Test func percentInInterfaceNameIsRefused() throws {
        for name in ["eth%d", "%d", "a%", "br%s"] {
            #expect(throws: CNIError(.invalidEnvironment, "interface name contains %", details: name)) {
                try CNIEnvironment.validateInterfaceName(name)
            }
        }
        for command in ["ADD", "CHECK"] {
            #expect(throws: CNIError(.invalidEnvironment, "interface name contains %", details: "eth%d")) {
                _ = try CNIEnvironment([
                    "CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
                    "CNI_IFNAME": "eth%d", "CNI_PATH": "/opt/cni/bin",
                ])
            }
        }
        // DEL takes it, as Go does: there is nothing to find under that name, and the IP goes.
        let del = try CNIEnvironment([
            "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth%d",
            "CNI_PATH": "/opt/cni/bin",
        ])
        #expect(del.ifname == "eth%d")
    }

    // MARK: Files

    @Test func boundedFileRefusesWhatIsNotASmallRegularFile() throws {
        try withFake("exit 0") { dir in
            #expect(mkfifo(dir + "/fifo", 0o600) == 0)
            #expect(throws: BoundedFile.Failure.notRegularFile(path: dir + "/fifo", kind: "a FIFO")) {
                _ = try BoundedFile.contents(dir + "/fifo", limit: 100)
            }
            #expect(throws: BoundedFile.Failure.notRegularFile(path: "/dev/zero", kind: "a character device")) {
                _ = try BoundedFile.contents("/dev/zero", limit: 100)
            }
            #expect(throws: BoundedFile.Failure.system(call: "open", path: dir + "/none", errno: ENOENT)) {
                _ = try BoundedFile.contents(dir + "/none", limit: 100)
            }
            #expect(FileManager.default.createFile(atPath: dir + "/big", contents: Data(repeating: 65, count: 101)))
            #expect(throws: BoundedFile.Failure.tooLarge(path: dir + "/big", limit: 100)) {
                _ = try BoundedFile.contents(dir + "/big", limit: 100)
            }
            let exact = try BoundedFile.contents(dir + "/big", limit: 101)
            #expect(exact.count == 101)
            // A symbolic link is refused with noFollow, as O_NOFOLLOW does.
            #expect(symlink(dir + "/big", dir + "/fifo.link") == 0)
            defer { unlink(dir + "/fifo.link") }
            #expect(throws: BoundedFile.Failure.system(call: "open", path: dir + "/fifo.link", errno: ELOOP)) {
                _ = try BoundedFile.contents(dir + "/fifo.link", limit: 1000, noFollow: true)
            }
        }
    }
}

@Suite struct HostileBinaryTests {
    /// A delegate file that is not this executable, here a malformed ELF (a PT_NOTE size with the
    /// top bit set, which once trapped the build-id reader), is simply not us: executed, never run
    /// in-process.
    @Test func elfWithNegativeNoteSizeIsNotThisExecutable() throws {
        var elf = [UInt8](repeating: 0, count: 120)
        elf.replaceSubrange(0..<8, with: [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0])
        elf[0x20] = 64  // e_phoff
        elf[0x36] = 56  // e_phentsize
        elf[0x38] = 1  // e_phnum
        elf[64] = 4  // p_type PT_NOTE
        for i in 0..<8 { elf[64 + 32 + i] = 0xff }  // p_filesz
        let path = "/tmp/podnet-elf-\(UInt32.random(in: 0...UInt32.max))"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(elf)))
        defer { unlink(path) }
        #expect(!Delegate.isRunningExecutable(path))
    }

    /// The running executable is recognised through any of its names, a hard link included (a
    /// copy is another inode, as the malformed file above is).
    @Test func aHardLinkOfThisExecutableIsThisExecutable() throws {
        #expect(Delegate.isRunningExecutable("/proc/self/exe"))
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        try #require(n > 0)
        let exe = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        #expect(Delegate.isRunningExecutable(exe))
        #expect(!Delegate.isRunningExecutable("/nonexistent/podnet-cni"))
        // Next to the executable, on its file system, as a hard link must be.
        let link = exe + ".podnet-link-\(UInt32.random(in: 0...UInt32.max))"
        try #require(Glibc.link(exe, link) == 0)
        defer { unlink(link) }
        #expect(Delegate.isRunningExecutable(link))
    }
}
