// Network namespace handles and "run this closure inside namespace X".
//
// setns(2) moves only the calling thread. A CNI plugin is a single-threaded synchronous process,
// so the closure given to `run` executes on this thread and returns to the original namespace
// before `run` returns. Never call `run` across an `await`: a task may resume on another thread
// (the reference's pkg/ns/README.md explains the same hazard for goroutines). Where a netlink
// socket is needed, open it inside `run`; the socket stays bound to that namespace afterwards.

import CNetNS

#if canImport(Glibc)
    import Glibc
#endif

public enum NetNSError: Error, Equatable, CustomStringConvertible {
    /// The path does not exist (the namespace was already deleted).
    case notFound(path: String)
    /// The path exists but is not a network namespace (e.g. a plain file or a tmpfs path).
    case notANamespace(path: String)
    /// A system call failed; `call` names it.
    case system(call: String, errno: Int32)

    public var description: String {
        switch self {
        case .notFound(let p): "network namespace \(p) does not exist"
        case .notANamespace(let p): "\(p) is not a network namespace"
        case .system(let call, let e): "\(call): \(String(cString: strerror(e)))"
        }
    }
}

/// An open handle on a network namespace. The descriptor is closed on deinit.
public final class NetworkNamespace {
    public let fd: Int32
    public let path: String

    // nsfs (a bind-mounted /run/netns/x) and procfs (/proc/<pid>/ns/net) are the two file systems
    // a namespace handle can live on.
    static let nsfsMagic: Int = 0x6e73_6673
    static let procMagic: Int = 0x9fa0

    /// Opens the namespace at `path` and checks that it is one, without ever blocking: a
    /// namespace handle is a regular file (nsfs shows its inodes as such), so anything else (a
    /// FIFO, whose open would wait for a writer forever, a device, a directory) is
    /// `.notANamespace` before it is opened; the open itself is O_NONBLOCK in case the path is
    /// swapped meanwhile, and the file system magic is checked on the descriptor.
    /// The corresponding C calls are `stat`, `open(O_RDONLY|O_NONBLOCK|O_CLOEXEC)`, `fstat` and `fstatfs`.
    public init(path: String) throws(NetNSError) {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw errno == ENOENT ? .notFound(path: path) : .system(call: "stat \(path)", errno: errno)
        }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .notANamespace(path: path) }
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            throw errno == ENOENT ? .notFound(path: path) : .system(call: "open \(path)", errno: errno)
        }
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw .notANamespace(path: path)
        }
        let magic = Int(podnet_fs_magic(fd))
        if magic < 0 {
            let e = errno
            close(fd)
            throw .system(call: "fstatfs \(path)", errno: e)
        }
        guard magic == Self.nsfsMagic || magic == Self.procMagic else {
            close(fd)
            throw .notANamespace(path: path)
        }
        self.fd = fd
        self.path = path
    }

    /// The calling thread's current network namespace.
    public static func current() throws(NetNSError) -> NetworkNamespace {
        try NetworkNamespace(path: "/proc/thread-self/ns/net")
    }

    deinit { close(fd) }

    /// Runs `body` with the calling thread inside this namespace, then switches back.
    /// The corresponding C function is `podnet_setns_net(fd)`.
    public func run<T>(_ body: () throws -> T) throws -> T {
        let original = try NetworkNamespace.current()
        guard podnet_setns_net(fd) == 0 else { throw NetNSError.system(call: "setns \(path)", errno: errno) }
        defer {
            // Failing to return would leave the plugin in the container's namespace: nothing
            // sensible can continue from there.
            if podnet_setns_net(original.fd) != 0 { fatalError("setns back to the original namespace failed") }
        }
        return try body()
    }
}

/// Writes a sysctl through /proc/sys in the calling thread's namespace, e.g.
/// `writeSysctl("net/ipv4/conf/eth0/arp_notify", "1")`.
public func writeSysctl(_ key: String, _ value: String) throws(NetNSError) {
    let path = "/proc/sys/" + key
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .system(call: "open \(path)", errno: errno) }
    defer { close(fd) }
    let bytes = Array(value.utf8)
    guard write(fd, bytes, bytes.count) == bytes.count else { throw .system(call: "write \(path)", errno: errno) }
}

/// Reads a sysctl, without the trailing newline.
public func readSysctl(_ key: String) throws(NetNSError) -> String {
    let path = "/proc/sys/" + key
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .system(call: "open \(path)", errno: errno) }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 256)
    let n = read(fd, &buf, buf.count)
    guard n >= 0 else { throw .system(call: "read \(path)", errno: errno) }
    return String(decoding: buf[0..<n], as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
}
