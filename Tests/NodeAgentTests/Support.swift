// A node for the agent's tests: the fake kernel with eth0 at 192.168.77.1/24, the in-memory
// registry, a manual clock, a subnet file in a fresh folder. Nothing needs root, nothing sleeps.

import Addressing
import Foundation
import Logging
import NodeAgent
import Overlay
import ServiceLifecycle
import TestSupport

#if canImport(Glibc)
    import Glibc
#endif

let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
let nodeIP = IPAddress("192.168.77.1")!
/// The node leases from 10.5.200.0/24 up; the tests' peers live below, so that the node's
/// random pick never takes a subnet a test gives a peer.
let vxlanConfig = #"{"Network":"10.5.0.0/16","SubnetMin":"10.5.200.0","Backend":{"Type":"vxlan"}}"#

func peerLease(_ subnet: String, _ publicIP: String, mac: String = "02:00:00:00:00:02") -> Lease {
    Lease(
        subnet: IPNetwork(subnet)!,
        attributes: LeaseAttributes(
            publicIP: IPAddress(publicIP)!, backendType: "vxlan", vni: 1,
            vtepMAC: MACAddress(mac)), etcdLease: 7)
}

/// Rules that count their calls; with `blockAfter`, each call after that many blocks until
/// `release()`, saying so first on `entered`.
final class TestRules: RuleKeeper, @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    private var removals = 0
    private var order: [String] = []
    private let blockAfter: Int?
    private let gate = DispatchSemaphore(value: 0)
    let entered = AsyncStream<Int>.makeStream()

    init(blockAfter: Int? = nil) { self.blockAfter = blockAfter }

    var calls: Int { lock.withLock { count } }
    /// "removeLeftovers" and "ensure", in the order they were called.
    var history: [String] { lock.withLock { order } }
    func release() { gate.signal() }

    func removeLeftovers() throws -> Bool {
        lock.withLock { order.append("removeLeftovers") }
        return false
    }

    func ensure() throws -> Bool {
        let n = lock.withLock {
            count += 1; order.append("ensure"); return count
        }
        if let blockAfter, n > blockAfter {
            entered.continuation.yield(n)
            gate.wait()
        }
        return n == 1
    }
}

final class TestNode: Sendable {
    let registry: InMemoryLeaseRegistry
    let dataPath: RecordingDataPath
    let clock = ManualClock()
    let threads = BlockingThreads()
    let readiness = Readiness()
    let rules: TestRules
    let options: NodeAgent.Options

    init(
        registry: InMemoryLeaseRegistry = InMemoryLeaseRegistry(config: vxlanConfig), rules: TestRules = TestRules(),
        _ change: (inout NodeAgent.Options) -> Void = { _ in }
    ) {
        self.registry = registry
        var kernel = FakeKernel()
        kernel.addInterface("eth0", address: IPNetwork("192.168.77.1/24")!)
        dataPath = RecordingDataPath(kernel)
        self.rules = rules
        var o = NodeAgent.Options()
        o.interfaces = ["eth0"]
        o.subnetFile =
            FileManager.default.temporaryDirectory.appendingPathComponent("podnet-agent-\(UUID())/subnet.env").path
        change(&o)
        options = o
    }

    deinit { try? FileManager.default.removeItem(atPath: (options.subnetFile as NSString).deletingLastPathComponent) }

    var agent: NodeAgent {
        let rules = self.rules
        return NodeAgent(
            options: options, registry: registry, dataPath: dataPath, threads: threads, readiness: readiness,
            clock: clock, rules: { _, _ in rules }, logger: quiet)
    }

    /// This node's lease as the registry holds it.
    var ownLease: Lease? { registry.snapshot.leases.values.first { $0.attributes.publicIP == nodeIP } }

    /// Whether the kernel routes `subnet` (through the VXLAN device: the peer is programmed).
    func routes(_ subnet: String) -> Bool { Self.routes(dataPath.kernel, subnet) }
    static func routes(_ kernel: FakeKernel, _ subnet: String) -> Bool {
        kernel.routes.contains { $0.destination == IPNetwork(subnet)! }
    }
}

/// Runs `services` in a service group while `body` runs, then shuts the group down gracefully
/// and waits for it.
func withServices<T: Sendable>(_ services: [any Service], _ body: () async throws -> T) async throws -> T {
    let group = ServiceGroup(services: services, logger: quiet)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        let result = try await body()
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        return result
    }
}

/// GET `path` from 127.0.0.1:`port` over a plain socket; the status line and body.
func httpGet(port: Int, _ path: String) throws -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    defer { close(fd) }
    // A guard against a hung test only: the server answers at once.
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
    guard send(fd, request, request.count, 0) == request.count else { throw POSIXError(.EIO) }
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n > 0 else { break }
        answer += buffer[..<n]
    }
    return String(decoding: answer, as: UTF8.self)
}
