// A real etcd for tests (Debian package etcd-server, 3.4): one member on 127.0.0.1 with free ports
// and a data directory of its own, optionally serving TLS with client certificates or simple-token
// auth. `EtcdServer.with { server in ... }` always stops it and deletes its directory, also when
// the body throws; servers left behind by a test process that crashed are removed by the next one.
// `EtcdServer.withCluster(members: 3) { members in ... }` runs a cluster of members on 127.0.0.1
// (peers over plain http on loopback ports), torn down the same way.
// Also here: the certificates for TLS tests, made with openssl.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public final class EtcdServer: @unchecked Sendable {
    public struct Options: Sendable {
        /// Serve https with these files, and require client certificates signed by the CA.
        public var tls: EtcdTLSFiles?
        /// `--auth-token-ttl`: seconds a simple token lives without use (etcd's default is 300).
        public var authTokenTTL: Int?
        public var extraArguments: [String] = []

        public init(tls: EtcdTLSFiles? = nil, authTokenTTL: Int? = nil, extraArguments: [String] = []) {
            self.tls = tls
            self.authTokenTTL = authTokenTTL
            self.extraArguments = extraArguments
        }
    }

    public let options: Options
    /// Holds the data directory (`data`), the log (`etcd.log`) and the pid file.
    public let directory: String
    public private(set) var clientPort: Int32 = 0
    private var peerPort: Int32 = 0
    private var metricsPort: Int32 = 0
    private var process: Process?
    /// For a member of a cluster: its name and the whole `--initial-cluster`.
    private var member: (name: String, initialCluster: String, token: String)?
    /// Set once auth is enabled, so etcdctl logs in.
    private var rootPassword: String?

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    public var clientURL: String { "\(options.tls == nil ? "http" : "https")://127.0.0.1:\(clientPort)" }

    /// Starts a server and waits until it is healthy.
    public static func start(_ options: Options = Options()) async throws -> EtcdServer {
        reapLeftovers()
        let server = try EtcdServer(options: options)
        do {
            try await server.launch(newPorts: true)
        } catch {
            await server.remove()
            throw error
        }
        return server
    }

    /// Runs `body` with a started server; stops and deletes it afterwards, whatever happens.
    public static func with<T>(
        _ options: Options = Options(),
        _ body: (EtcdServer) async throws -> T
    ) async throws -> T {
        let server = try await start(options)
        do {
            let result = try await body(server)
            await server.remove()
            return result
        } catch {
            await server.remove()
            throw error
        }
    }

    /// Starts `members` members of one cluster, waits until each is healthy, runs `body`, and
    /// stops and deletes them all afterwards, whatever happens.
    public static func withCluster<T>(
        members count: Int = 3, _ options: Options = Options(),
        _ body: ([EtcdServer]) async throws -> T
    ) async throws -> T {
        reapLeftovers()
        var members: [EtcdServer] = []
        do {
            for _ in 0..<count {
                let m = try EtcdServer(options: options)
                (m.clientPort, m.peerPort, m.metricsPort) = (try freePort(), try freePort(), try freePort())
                members.append(m)
            }
            let token = "podnet-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let cluster = members.enumerated().map { "m\($0.offset + 1)=http://127.0.0.1:\($0.element.peerPort)" }
                .joined(separator: ",")
            for (i, m) in members.enumerated() { m.member = ("m\(i + 1)", cluster, token) }
            for m in members { try m.spawn() }
            for m in members {
                guard let p = m.process, await m.becomesHealthy(p, within: .seconds(30)) else {
                    let text = (try? String(contentsOfFile: m.directory + "/etcd.log", encoding: .utf8)) ?? ""
                    throw TestFailure(
                        "etcd member \(m.member!.name) did not become healthy; its log ends:\n"
                            + text.split(separator: "\n").suffix(15).joined(separator: "\n"))
                }
            }
            let result = try await body(members)
            for m in members { await m.remove() }
            return result
        } catch {
            for m in members { await m.remove() }
            throw error
        }
    }

    /// The member's name in a cluster ("m1"), or nil for a single server.
    public var memberName: String? { member?.name }

    /// SIGKILL: the server dies at once, as in a crash; its data stays.
    public func kill() async {
        guard let process else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        await onOwnThread { process.waitUntilExit() }
        self.process = nil
    }

    /// Whether this member is the cluster's leader, as it sees itself.
    public func isLeader() -> Bool {
        guard let out = try? etcdctl("endpoint", "status", "-w", "json", "--command-timeout=2s"),
            let list = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [[String: Any]],
            let status = list.first?["Status"] as? [String: Any], let header = status["header"] as? [String: Any],
            let id = (header["member_id"] as? NSNumber)?.uint64Value,
            let leader = (status["leader"] as? NSNumber)?.uint64Value
        else { return false }
        return id == leader
    }

    /// The member's ID in hex, as `etcdctl move-leader` takes it.
    public func memberID() throws -> String {
        let out = try etcdctl("endpoint", "status", "-w", "json")
        guard let list = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [[String: Any]],
            let status = list.first?["Status"] as? [String: Any], let header = status["header"] as? [String: Any],
            let id = (header["member_id"] as? NSNumber)?.uint64Value
        else {
            throw TestFailure("cannot read the member ID from \(out)")
        }
        return String(id, radix: 16)
    }

    private init(options: Options) throws {
        guard Self.executable("etcd") != nil else {
            throw TestFailure(
                "etcd is not installed: run scripts/deps.sh"
                    + " (Debian packages etcd-server and etcd-client)")
        }
        self.options = options
        directory =
            NSTemporaryDirectory() + "podnet-etcd-\(getpid())-"
            + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        if let process, process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: Lifecycle

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and keeps its data.
    public func stop() async {
        guard let process else { return }
        await onOwnThread { terminate(process, grace: 10) }
        self.process = nil
    }

    /// Stops the process (SIGSTOP) without closing anything: its connections stay open and
    /// silent, as with a network partition.
    public func freeze() throws { try signalEtcd(SIGSTOP, process) }

    /// Lets a frozen server run again (SIGCONT).
    public func thaw() throws { try signalEtcd(SIGCONT, process) }

    /// Starts the stopped server again, on the same ports and with the same data.
    public func restart() async throws {
        await stop()
        try await launch(newPorts: false)
    }

    /// Stops the server and deletes its directory.
    public func remove() async {
        await stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func launch(newPorts: Bool) async throws {
        // Another process can take a port between our probe and etcd's bind: then try new ones.
        for attempt in 1...3 {
            if newPorts || attempt > 1 {
                clientPort = try freePort()
                peerPort = try freePort()
                metricsPort = try freePort()
            }
            let log = directory + "/etcd.log"
            let p = try spawn()
            if await becomesHealthy(p, within: .seconds(20)) { return }
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            await stop()
            if text.contains("address already in use") && attempt < 3 { continue }
            throw TestFailure(
                "etcd did not become healthy on \(clientURL); its log ends:\n"
                    + text.split(separator: "\n").suffix(15).joined(separator: "\n"))
        }
    }

    /// Starts the etcd process (without waiting for it), its output in `etcd.log`.
    @discardableResult
    private func spawn() throws -> Process {
        let log = directory + "/etcd.log"
        if !FileManager.default.fileExists(atPath: log) {
            _ = FileManager.default.createFile(atPath: log, contents: nil)
        }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try output.seekToEnd()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.executable("etcd")!)
        p.arguments = arguments()
        p.environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]  // no ETCD_* from the caller
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = output
        p.standardError = output
        try p.run()
        try output.close()
        process = p
        try "\(p.processIdentifier)".write(toFile: directory + "/etcd.pid", atomically: true, encoding: .utf8)
        return p
    }

    /// Probes the server every 50 ms until it is healthy and the answer is ours (the client port is
    /// open and etcd still runs). The probing runs on a thread of its own: synchronous tests block
    /// the few threads of the cooperative pool, and a probe loop that waits for one of them could
    /// see its deadline pass without having probed at all.
    private func becomesHealthy(_ p: Process, within limit: Duration) async -> Bool {
        let (metricsPort, clientPort) = (metricsPort, clientPort)
        return await onOwnThread {
            let deadline = ContinuousClock.now + limit
            while ContinuousClock.now < deadline, p.isRunning {
                if httpGet(port: metricsPort, path: "/health")?.contains(#""health":"true""#) == true,
                    accepts(port: clientPort), p.isRunning
                {
                    return true
                }
                usleep(50_000)
            }
            return false
        }
    }

    private func arguments() -> [String] {
        let peer = "http://127.0.0.1:\(peerPort)"
        var args = [
            "--name", member?.name ?? "podnet-test", "--data-dir", directory + "/data", "--logger", "zap",
            "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", member?.initialCluster ?? "podnet-test=\(peer)", "--initial-cluster-state", "new",
            "--listen-metrics-urls", "http://127.0.0.1:\(metricsPort)",
        ]
        if let member { args += ["--initial-cluster-token", member.token] }
        if let tls = options.tls {
            args += [
                "--cert-file", tls.serverCertFile, "--key-file", tls.serverKeyFile,
                "--trusted-ca-file", tls.caFile, "--client-cert-auth",
            ]
        }
        if let ttl = options.authTokenTTL { args += ["--auth-token", "simple", "--auth-token-ttl", "\(ttl)"] }
        return args + options.extraArguments
    }

    // MARK: etcdctl

    /// Runs etcdctl against this server (with its TLS files and root login when set up) and
    /// returns its output; throws when it fails.
    @discardableResult
    public func etcdctl(_ args: String...) throws -> String {
        guard let etcdctl = Self.executable("etcdctl") else {
            throw TestFailure("etcdctl is not installed: run scripts/deps.sh (Debian package etcd-client)")
        }
        var argv = [etcdctl, "--endpoints", clientURL]
        if let tls = options.tls {
            argv += ["--cacert", tls.caFile, "--cert", tls.clientCertFile, "--key", tls.clientKeyFile]
        }
        if let rootPassword { argv += ["--user", "root:\(rootPassword)"] }
        let result = try run(argv + args, env: ["ETCDCTL_API": "3"])
        guard result.status == 0 else {
            throw TestFailure("etcdctl \(args.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
        return result.stdout
    }

    /// Creates user `root` (role `root`) with `rootPassword` and turns auth on.
    public func enableAuth(rootPassword: String) throws {
        try etcdctl("user", "add", "root:\(rootPassword)")
        try etcdctl("role", "add", "root")
        try etcdctl("user", "grant-role", "root", "root")
        try etcdctl("auth", "enable")
        self.rootPassword = rootPassword
    }

    // MARK: Helpers

    /// The installed binary; `PODNET_ETCD` names another etcd (e.g. a newer release) for `etcd`.
    static func executable(_ name: String) -> String? {
        if name == "etcd", let path = ProcessInfo.processInfo.environment["PODNET_ETCD"] {
            return FileManager.default.isExecutableFile(atPath: path) ? path : nil
        }
        return ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin"].map { "\($0)/\(name)" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Kills and deletes the servers of test processes that no longer exist.
    private static func reapLeftovers() {
        let tmp = NSTemporaryDirectory()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []
        for name in names where name.hasPrefix("podnet-etcd-") {
            let parts = name.split(separator: "-")
            guard parts.count == 4, let owner = Int32(parts[2]), Glibc.kill(owner, 0) != 0, errno == ESRCH else {
                continue
            }
            let dir = tmp + name
            if let text = try? String(contentsOfFile: dir + "/etcd.pid", encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                let cmdline = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
                cmdline.contains(dir)
            {
                Glibc.kill(pid, SIGKILL)
            }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all PEM, made by openssl.
public struct EtcdTLSFiles: Sendable, Hashable {
    public var caFile: String
    public var serverCertFile: String
    public var serverKeyFile: String
    public var clientCertFile: String
    public var clientKeyFile: String

    /// Makes the files in `directory` (created if needed), their names starting with `name`; the
    /// server certificate is valid for `addresses` (IPs), localhost and 127.0.0.1.
    /// The server certificate carries both serverAuth and clientAuth: etcd's gateway presents it
    /// to its own gRPC port as a client certificate (flannel.md §10.7).
    public static func generate(
        in directory: String, name: String = "test",
        addresses: [String] = []
    ) throws -> EtcdTLSFiles {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let p = directory + "/" + name
        let files = EtcdTLSFiles(
            caFile: p + "-ca.crt", serverCertFile: p + "-server.crt",
            serverKeyFile: p + "-server.key", clientCertFile: p + "-client.crt",
            clientKeyFile: p + "-client.key")
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        let names = (addresses + ["127.0.0.1"]).map { "IP:\($0)" } + ["DNS:localhost"]
        try "subjectAltName=\(names.joined(separator: ","))\nextendedKeyUsage=serverAuth,clientAuth\n"
            .write(toFile: p + "-server.ext", atomically: true, encoding: .utf8)
        try "extendedKeyUsage=clientAuth\n".write(toFile: p + "-client.ext", atomically: true, encoding: .utf8)
        try sh(
            """
            set -e; cd '\(directory)'
            openssl req -x509 \(ec) -keyout \(name)-ca.key -out \(name)-ca.crt -days 2 -subj /CN=podnet-\(name)-ca \
              -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
            for who in server client; do
              openssl req \(ec) -keyout \(name)-$who.key -out \(name)-$who.csr -subj /CN=podnet-\(name)-$who 2>/dev/null
              openssl x509 -req -in \(name)-$who.csr -CA \(name)-ca.crt -CAkey \(name)-ca.key -CAcreateserial \
                -out \(name)-$who.crt -days 2 -extfile \(name)-$who.ext 2>/dev/null
            done
            """)
        return files
    }
}

/// A port on 127.0.0.1 that nothing listens on right now, and that this process has not handed
/// out before: the kernel may give a port that was just probed and closed to the next probe, and
/// two servers starting in parallel must not get the same one.
public func freePort() throws -> Int32 {
    while true {
        let port = try unusedPort()
        if handedOutPorts.claim(port) { return port }
    }
}

private let handedOutPorts = PortRegistry()

private final class PortRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var ports: Set<Int32> = []

    /// True the first time `port` is claimed.
    func claim(_ port: Int32) -> Bool {
        lock.withLock { ports.insert(port).inserted }
    }
}

private func unusedPort() throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var addr = loopback(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    guard ok else { throw TestFailure("bind: \(String(cString: strerror(errno)))") }
    return Int32(UInt16(bigEndian: addr.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func accepts(port: Int32) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = loopback(port: UInt16(port))
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

func loopback(port: UInt16) -> sockaddr_in {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    return addr
}

/// Runs blocking work on a thread of its own and awaits its result, so that it neither holds nor
/// waits for a thread of the cooperative pool (which synchronous tests keep busy).
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { done in
        Thread.detachNewThread { done.resume(returning: body()) }
    }
}

/// Sends `signal` to a running etcd; throws when it is not running.
func signalEtcd(_ signal: Int32, _ process: Process?) throws {
    guard let process, process.isRunning else { throw TestFailure("etcd is not running") }
    kill(process.processIdentifier, signal)
}

/// `GET path` on 127.0.0.1:`port` over plain HTTP/1.0; the whole answer, or nil.
func httpGet(port: Int32, path: String) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = loopback(port: UInt16(port))
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
    guard connected else { return nil }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return nil }
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        answer += buffer[0..<n]
    }
    return String(decoding: answer, as: UTF8.self)
}

/// A TCP listener on 127.0.0.1 that accepts connections (the kernel completes the handshake) and
/// never answers: an endpoint for timeout tests. Closed by ``close()`` or when released.
public final class SilentTCPListener: @unchecked Sendable {
    public let port: Int32
    private var fd: Int32

    public init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var addr = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else {
            Glibc.close(fd)
            throw TestFailure("listen: \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        port = Int32(UInt16(bigEndian: addr.sin_port))
    }

    public var url: String { "http://127.0.0.1:\(port)" }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }
}
