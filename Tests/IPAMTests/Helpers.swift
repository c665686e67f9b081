// Test helpers for IPAM and host-local: literals, temporary data directories, in-process plugin
// invocations, file inspection and threads.

import Addressing
import CNI
import HostLocal
import IPAM
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

func ip(_ s: String) -> IPAddress { IPAddress(s)! }
func cidr(_ s: String) -> IPNetwork { IPNetwork(s)! }

// MARK: - Temporary directories

// MARK: - Files

/// The file's bytes, or nil when it does not exist.
func fileBytes(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while case let n = read(fd, &buf, buf.count), n > 0 { out += buf[0..<n] }
    return out
}

func fileText(_ path: String) -> String? { fileBytes(path).map { String(decoding: $0, as: UTF8.self) } }

func writeFile(_ path: String, _ text: String, mode: mode_t = 0o644) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
    precondition(fd >= 0, "open \(path)")
    _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

/// Permission bits (and the type bits stripped).
func fileMode(_ path: String) -> mode_t? {
    var st = stat()
    return stat(path, &st) == 0 ? st.st_mode & 0o7777 : nil
}

/// The process umask, read without changing it (umask(2) would race with parallel tests).
func currentUmask() -> mode_t {
    let status = fileText("/proc/self/status") ?? ""
    for line in status.split(separator: "\n") where line.hasPrefix("Umask:") {
        return mode_t(line.dropFirst(6).trimmingPrefix(while: { $0 == " " || $0 == "\t" }), radix: 8) ?? 0o022
    }
    return 0o022
}

/// The reservation files (names that are addresses) in a network directory, sorted by address.
func reservedIPs(_ dir: String) -> [IPAddress] { listDir(dir).compactMap(IPAddress.init).sorted() }

// MARK: - Plugin invocations

/// A network config for host-local. `ipam` keys are merged over `{type, dataDir}`.
func hostLocalConfig(
    version: SpecVersion?, dataDir: String, name: String = "testnet",
    ipam: [String: JSON], extra: [String: JSON] = [:]
) -> [UInt8] {
    var i = ipam
    i["type"] = i["type"] ?? .string("host-local")
    i["dataDir"] = i["dataDir"] ?? .string(dataDir)
    var o: [String: JSON] = ["name": .string(name), "type": .string("bridge"), "ipam": .object(i)]
    if let version { o["cniVersion"] = .string(version.rawValue) }
    for (k, v) in extra { o[k] = v }
    return JSON.object(o).encoded()
}

func ranges(_ sets: [[String]]) -> JSON {
    .array(sets.map { .array($0.map { .object(["subnet": .string($0)]) }) })
}

/// The environment a runtime passes. `netns: nil` leaves CNI_NETNS out (DEL after the netns is gone).
func cniEnv(
    _ command: String, id: String = "ctr1", ifname: String = "eth0", netns: String? = "/var/run/netns/test",
    args: String? = nil
) -> [String: String] {
    var env = ["CNI_COMMAND": command, "CNI_PATH": "/usr/lib/cni"]
    if command != "GC" && command != "STATUS" {
        env["CNI_CONTAINERID"] = id
        env["CNI_IFNAME"] = ifname
    }
    if let netns { env["CNI_NETNS"] = netns }
    if let args { env["CNI_ARGS"] = args }
    return env
}

func invoke(
    _ command: String, _ config: [UInt8], id: String = "ctr1", ifname: String = "eth0",
    netns: String? = "/var/run/netns/test", args: String? = nil
) -> Outcome {
    CNIMain.dispatch(HostLocal(), env: cniEnv(command, id: id, ifname: ifname, netns: netns, args: args), stdin: config)
}

/// Runs ADD and parses the result; records an issue and returns nil if ADD failed.
func add(
    _ config: [UInt8], version: SpecVersion, id: String = "ctr1", ifname: String = "eth0", args: String? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> Result {
    let out = invoke("ADD", config, id: id, ifname: ifname, args: args)
    try #require(out.exitCode == 0, "ADD failed: \(out.stdoutText)", sourceLocation: sourceLocation)
    return try Result(json: JSON.parse(out.stdout), assumedVersion: version)
}

/// The error an invocation printed; records an issue if it succeeded.
func cniError(_ out: Outcome, sourceLocation: SourceLocation = #_sourceLocation) throws -> CNIError {
    try #require(out.exitCode != 0, "expected failure, got \(out.stdoutText)", sourceLocation: sourceLocation)
    return try #require(CNIError(json: JSON.parse(out.stdout)), sourceLocation: sourceLocation)
}

// MARK: - Threads

/// Runs `body(i)` for i in 0..<n, each on its own thread, all started before any is joined, so
/// they really contend (a cooperative pool on a 2-core machine would run two at a time).
func onThreads(_ n: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Box: @unchecked Sendable {
        let i: Int
        let body: @Sendable (Int) -> Void
        init(_ i: Int, _ body: @escaping @Sendable (Int) -> Void) { self.i = i; self.body = body }
    }
    var threads: [pthread_t] = []
    for i in 0..<n {
        var t = pthread_t()
        let box = Unmanaged.passRetained(Box(i, body)).toOpaque()
        let rc = pthread_create(
            &t, nil,
            { p in
                let b = Unmanaged<Box>.fromOpaque(p!).takeRetainedValue()
                b.body(b.i)
                return nil
            }, box)
        precondition(rc == 0, "pthread_create")
        threads.append(t)
    }
    for t in threads { pthread_join(t, nil) }
}

/// A value several threads append to.
final class Collected<T: Sendable>: Sendable {
    private let items = Mutex<[T]>([])
    func append(_ x: T) { items.withLock { $0.append(x) } }
    var all: [T] { items.withLock { $0 } }
}
