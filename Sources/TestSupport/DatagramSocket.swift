// A bound AF_UNIX datagram socket, as systemd's $NOTIFY_SOCKET: tests read what a daemon
// sends with sd_notify.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public final class DatagramSocket: @unchecked Sendable {
    let fd: Int32
    /// The socket's name: a path, or an abstract name written with a leading "@".
    public let path: String

    public init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 } else { unlink(path) }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard fd >= 0, bound == 0 else { throw TestFailure("cannot bind \(path): errno \(errno)") }
    }

    /// The next datagram, or nil when none arrives within `timeout` seconds. Blocks its thread.
    public func receive(timeout: Int) -> String? {
        var t = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &t, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 512)
        // A timeout of 0 would wait forever: then only what has arrived already.
        let flags = timeout > 0 ? 0 : Int32(MSG_DONTWAIT)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, flags) }
        return n < 0 ? nil : String(decoding: buffer[..<n], as: UTF8.self)
    }

    /// `receive`, on a thread of its own: the cooperative pool stays free for the sender.
    public func next(timeout: Int) async -> String? {
        await withCheckedContinuation { c in Thread { c.resume(returning: self.receive(timeout: timeout)) }.start() }
    }

    deinit {
        close(fd)
        if !path.hasPrefix("@") { unlink(path) }
    }
}
