// Helpers for driving `podnetctl ipam` in-process: temporary data directories, stores filled
// the way host-local fills them, captured output, a thread that contends for a store's lock.

import Addressing
import ArgumentParser
import IPAM
import PodnetctlIPAM
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

func ip(_ s: String) -> IPAddress { IPAddress(s)! }

/// Container IDs as runtimes make them: 64 hex digits.
let liveA = "a1" + String(repeating: "0", count: 61) + "1"
let liveB = "b2" + String(repeating: "0", count: 61) + "2"
let goneC = "c3" + String(repeating: "0", count: 61) + "3"
let goneD = "d4" + String(repeating: "0", count: 61) + "4"

func writeFile(_ path: String, _ text: String, mode: mode_t = 0o644) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
    precondition(fd >= 0, "open \(path)")
    _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

/// Reserves through DiskStore under its lock, exactly as host-local's ADD writes a reservation.
func reserve(_ address: String, id: String, ifname: String = "eth0", network: String, dataDir: String) throws {
    let store = try DiskStore(network: network, dataDir: dataDir)
    let ok = try store.withLock { () throws(IPAMError) in
        try store.reserve(ip(address), id: id, ifname: ifname, rangeSetIndex: 0)
    }
    try #require(ok, "\(address) was already taken")
}

/// The store of the tests: network "cbr0" with liveA and liveB live, goneC and goneD leaked.
func fillStore(_ dataDir: String) throws {
    try reserve("10.244.1.2", id: liveA, network: "cbr0", dataDir: dataDir)
    try reserve("10.244.1.3", id: liveB, network: "cbr0", dataDir: dataDir)
    try reserve("10.244.1.4", id: goneC, network: "cbr0", dataDir: dataDir)
    try reserve("10.244.1.10", id: goneD, ifname: "net1", network: "cbr0", dataDir: dataDir)
}

/// The reservations of a network as DiskStore reads them, by address.
func held(_ network: String, _ dataDir: String) throws -> [Reservation] {
    try DiskStore(network: network, dataDir: dataDir).reservations().sorted { $0.ip < $1.ip }
}

// MARK: - Running the command

/// What one run printed and returned.
struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Parses `arguments` as `podnetctl ipam ...` and runs the command in-process.
func ipam(
    _ arguments: [String], stdin: String = "", isTTY: Bool = false, environment: [String: String] = [:],
    whileLocked: @escaping () -> Void = {}
) throws -> Run {
    final class Sink {
        var out = ""
        var err = ""
    }
    let sink = Sink()
    let context = IPAMContext(
        write: { sink.out += $0 }, writeError: { sink.err += $0 }, isTTY: isTTY, environment: environment,
        readStdin: { Array(stdin.utf8) }, whileLocked: whileLocked)
    let command = try IPAMCommand.parseAsRoot(arguments)
    let status: Int32
    switch command {
    case let c as IPAMCommand: status = c.run(context: context)
    case let c as IPAMCommand.Release: status = c.run(context: context)
    default:
        Issue.record("unexpected command \(type(of: command))")
        status = -1
    }
    return Run(status: status, stdout: sink.out, stderr: sink.err)
}

// MARK: - Threads

/// A value shared between threads.
final class Cell<T: Sendable>: Sendable {
    private let storage: Mutex<T>
    init(_ value: T) { storage = Mutex(value) }
    var value: T {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }
}

/// A thread running `body`; `join()` waits for it.
final class Thread: Sendable {
    private final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    private let handle: Mutex<pthread_t?> = Mutex(nil)

    init(_ body: @escaping @Sendable () -> Void) {
        var t = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(
            &t, nil,
            { p in
                Unmanaged<Box>.fromOpaque(p!).takeRetainedValue().body()
                return nil
            }, box)
        precondition(rc == 0, "pthread_create")
        handle.withLock { $0 = t }
    }

    func join() {
        if let t = handle.withLock({ h -> pthread_t? in
            defer { h = nil }; return h
        }) {
            pthread_join(t, nil)
        }
    }
}

/// Waits until some open file description is blocked in flock(2) on the file at `path`: /proc/locks
/// lists a waiter as "N: -> FLOCK ... <major>:<minor>:<inode> ...". Polls without sleeping; false
/// if no waiter showed up after a very long time (the test then fails instead of hanging).
func waitForFlockWaiter(on path: String) -> Bool {
    var st = stat()
    guard stat(path, &st) == 0 else { return false }
    let inode = ":\(st.st_ino) "
    for _ in 0..<2_000_000 {
        let fd = open("/proc/locks", O_RDONLY)
        guard fd >= 0 else { return false }
        var text: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while case let n = read(fd, &buf, buf.count), n > 0 { text += buf[0..<n] }
        close(fd)
        for line in String(decoding: text, as: UTF8.self).split(separator: "\n")
        where line.contains("-> FLOCK") && line.contains(inode) {
            return true
        }
        sched_yield()
    }
    return false
}

/// The whole text of the file at `path`, or nil when it cannot be read.
func readText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while case let n = read(fd, &buf, buf.count), n > 0 { out += buf[0..<n] }
    return String(decoding: out, as: UTF8.self)
}
