// Traffic through the plugins' rules, for privileged tests: a tiny TCP/UDP echo server run inside
// a namespace, and a client that sends one request from a namespace. Both are python3 scripts
// run with `ip netns exec`, so the test process itself never changes namespace.

import Foundation

/// A TCP or UDP server inside a namespace that answers each request with "<tag> <peer address>":
/// the tag says which container answered, the peer address whether the request was masqueraded.
/// It listens on all IPv4 and IPv6 addresses. Stopped by `stop()` or when released.
public final class EchoServer: @unchecked Sendable {
    public let proto: String
    public let port: Int
    private let process: Process

    static let script = """
        import socket, sys
        proto, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        try:
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            addr = "::"
        except OSError:
            s, addr = socket.socket(socket.AF_INET, kind), "0.0.0.0"
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        if proto == "tcp":
            s.listen(64)
        print("ready", flush=True)
        def answer(peer):
            return ("%s %s" % (tag, peer[0].removeprefix("::ffff:"))).encode()
        while True:
            if proto == "tcp":
                c, peer = s.accept()
                try:
                    c.settimeout(2)
                    c.recv(1024)
                    c.sendall(answer(peer))
                except OSError:
                    pass
                c.close()
            else:
                data, peer = s.recvfrom(1024)
                s.sendto(answer(peer), peer)
        """

    /// Starts the server and waits until it listens.
    public init(in ns: TestNamespace, proto: String, port: Int, tag: String) throws {
        self.proto = proto
        self.port = port
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", ns.name, "python3", "-c", Self.script, proto, String(port), tag]
        process.environment = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        // `ip netns exec` execs python in place, so the process is the server itself.
        var seen = Data()
        let deadline = Date().addingTimeInterval(10)
        while !String(decoding: seen, as: UTF8.self).contains("ready") {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw TestFailure("echo server \(proto)/\(port) in \(ns.name) did not start")
            }
            seen += out.fileHandleForReading.availableData
        }
    }

    /// Kills the server with SIGKILL: a child inherits the test runner's signal mask, in which
    /// SIGTERM (Process.terminate) may be blocked.
    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}

/// Runs `body` with echo servers started as given, and stops them afterwards whatever happens
/// (a namespace with a process still inside survives `ip netns delete`).
public func withEchoServers<T>(
    _ specs: [(ns: TestNamespace, proto: String, port: Int, tag: String)],
    _ body: () throws -> T
) throws -> T {
    var servers: [EchoServer] = []
    defer { for s in servers { s.stop() } }
    for s in specs { servers.append(try EchoServer(in: s.ns, proto: s.proto, port: s.port, tag: s.tag)) }
    return try body()
}

/// Sends one request from inside `ns` to `host`:`port` over "tcp" or "udp" (optionally from a
/// fixed source port) and returns the answer, or nil when none came within `timeout` seconds
/// (refused, unreachable, dropped).
public func request(
    from ns: TestNamespace, _ proto: String, _ host: String, _ port: Int,
    sourcePort: Int? = nil, timeout: Double = 2
) throws -> String? {
    let script = """
        import socket, sys
        proto, host, port, sport, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            if sport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
            if proto == "tcp":
                s.connect((host, port))
                s.sendall(b"ping")
                print(s.recv(1024).decode())
            else:
                s.sendto(b"ping", (host, port))
                print(s.recvfrom(1024)[0].decode())
        except OSError as e:
            print("ERROR " + type(e).__name__)
        """
    let r = try run([
        "/usr/sbin/ip", "netns", "exec", ns.name, "python3", "-c", script, proto, host, String(port),
        String(sourcePort ?? 0), String(timeout),
    ])
    let answer = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    return answer.isEmpty || answer.hasPrefix("ERROR") ? nil : answer
}
