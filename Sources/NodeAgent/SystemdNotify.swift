// systemd's readiness protocol (sd_notify(3)), written directly: one datagram to the AF_UNIX socket
// named by $NOTIFY_SOCKET (a path, or an abstract name written with a leading "@"). With
// `Type=notify` in the unit, systemd and every unit ordered after podnetd wait for `READY=1`,
// which the agent sends once subnet.env is written (flanneld's main.go does the same), and
// `STOPPING=1` when a graceful shutdown begins. Without $NOTIFY_SOCKET nothing is sent.

import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Sends sd_notify messages to the socket a service manager named.
public struct SystemdNotifier: Sendable {
    /// $NOTIFY_SOCKET, nil when the process was not started by a service manager that listens.
    public let socketPath: String?

    public init(socketPath: String?) {
        self.socketPath = socketPath.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The notifier for this process's $NOTIFY_SOCKET.
    public static var fromEnvironment: SystemdNotifier {
        SystemdNotifier(socketPath: getenv("NOTIFY_SOCKET").map { String(cString: $0) })
    }

    public struct Failure: Error, CustomStringConvertible {
        public let call: String
        public let errno: Int32
        public var description: String { "sd_notify: \(call) failed: \(String(cString: strerror(errno)))" }
    }

    /// Sends `state` ("READY=1", "STOPPING=1", ...) as one datagram; nothing without a socket.
    public func notify(_ state: String) throws(Failure) {
        guard let path = socketPath else { return }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // an abstract socket name
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { throw Failure(call: "socket path", errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(call: "socket", errno: errno) }
        defer { close(fd) }
        let message = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
            }
        }
        guard sent == message.count else { throw Failure(call: "sendto \(path)", errno: errno) }
    }
}

/// Tells the service manager the daemon is ready when it starts (the agent's start-up, subnet.env
/// included, is over by then), and that it is stopping when a graceful shutdown begins.
public struct ReadinessNotifier: Service {
    let notifier: SystemdNotifier
    let logger: Logger

    public init(notifier: SystemdNotifier, logger: Logger) {
        self.notifier = notifier
        self.logger = logger
    }

    public func run() async throws {
        send("READY=1")
        try? await gracefulShutdown()
        send("STOPPING=1")
    }

    private func send(_ state: String) {
        do { try notifier.notify(state) } catch { logger.warning("\(error)") }
    }
}
