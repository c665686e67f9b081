// The on-disk store, byte-compatible with the Go host-local (backend/disk/backend.go, lock.go), so
// a node can run either binary, or both at once, against the same directory:
//
//   <dataDir>/<network>/                  mkdir -p, 0755
//   <dataDir>/<network>/<ip>              "containerID\r\nifname", no newline; O_EXCL-created, 0600
//   <dataDir>/<network>/last_reserved_ip.<i>  the last address reserved in range set i, 0600
//   <dataDir>/<network>/lock              empty, 0750; flock(LOCK_EX) serialises every invocation
//
// The lock is flock(2), not fcntl(2): Go's go-filemutex uses flock, and the two kinds of lock do not
// see each other. flock also belongs to the open file description, so two DiskStores in one process
// exclude each other too, which fcntl locks would not.
//
// Reservation files are found by walking the directory and comparing each file's trimmed content,
// as the reference does; `lock`, `last_reserved_ip.*` and names that are not addresses are skipped
// (the reference would match a legacy container ID such as "10.0.0.5" against last_reserved_ip).

import Addressing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public final class DiskStore: Store {
    public static let defaultDataDir = "/var/lib/cni/networks"
    static let lastIPPrefix = "last_reserved_ip."
    static let lockName = "lock"

    /// `<dataDir>/<network>`.
    public let directory: String
    private let lockFD: Int32

    /// Creates the network's directory and opens (creating) its lock file, unlocked.
    /// The corresponding Go function is `disk.New`.
    public init(network: String, dataDir: String? = nil) throws(IPAMError) {
        guard !network.isEmpty, !network.contains("/"), network != ".", network != ".." else {
            throw .invalidNetworkName(network)
        }
        let base = (dataDir ?? "").isEmpty ? Self.defaultDataDir : dataDir!
        directory = base.hasSuffix("/") ? base + network : base + "/" + network
        try Self.makeDirectories(directory)
        let path = directory + "/" + Self.lockName
        // O_NONBLOCK: a FIFO planted at the name would otherwise block the open (flock does not
        // care about the flag).
        let fd = Self.retryingEINTR { open(path, O_CREAT | O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0o750) }
        guard fd >= 0 else { throw .system(call: "open", path: path, errno: errno) }
        lockFD = fd
    }

    deinit { close(lockFD) }

    public func lock() throws(IPAMError) {
        guard Self.retryingEINTR({ flock(lockFD, LOCK_EX) }) == 0 else {
            throw .system(call: "flock", path: directory + "/" + Self.lockName, errno: errno)
        }
    }

    public func unlock() {
        _ = flock(lockFD, LOCK_UN)
    }

    public func reserve(_ ip: IPAddress, id: String, ifname: String, rangeSetIndex: Int) throws(IPAMError) -> Bool {
        let path = self.path(for: ip)
        let fd = Self.retryingEINTR { open(path, O_RDWR | O_EXCL | O_CREAT | O_CLOEXEC, 0o600) }
        if fd < 0 {
            if errno == EEXIST { return false }
            throw .system(call: "open", path: path, errno: errno)
        }
        let content = Self.trim(Array(id.utf8)) + Array("\r\n".utf8) + Array(ifname.utf8)
        if let err = Self.writeAll(fd, content) {
            close(fd)
            unlink(path)
            throw .system(call: "write", path: path, errno: err)
        }
        if close(fd) != 0 && errno != EINTR {
            let err = errno
            unlink(path)
            throw .system(call: "close", path: path, errno: err)
        }
        // The reference's os.WriteFile: truncate and rewrite in place (no newline). O_NONBLOCK: a
        // FIFO there fails the open (ENXIO) instead of waiting for a reader. When this fails the
        // reservation is removed again (the reference leaves it behind).
        let lastPath = directory + "/" + Self.lastIPPrefix + String(rangeSetIndex)
        let lfd = Self.retryingEINTR { open(lastPath, O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK | O_CLOEXEC, 0o600) }
        guard lfd >= 0 else {
            let err = errno
            unlink(path)
            throw .system(call: "open", path: lastPath, errno: err)
        }
        defer { close(lfd) }
        if let err = Self.writeAll(lfd, Array(ip.description.utf8)) {
            unlink(path)
            throw .system(call: "write", path: lastPath, errno: err)
        }
        return true
    }

    public func lastReservedIP(rangeSetIndex: Int) -> IPAddress? {
        let path = directory + "/" + Self.lastIPPrefix + String(rangeSetIndex)
        guard let data = Self.readFile(path, limit: Self.lastIPSizeLimit) else { return nil }
        return IPAddress(String(decoding: Self.trim(data), as: UTF8.self))
    }

    @discardableResult
    public func release(id: String, ifname: String) throws(IPAMError) -> [IPAddress] {
        let all = try entries()
        let (exact, legacy) = Self.keys(id: id, ifname: ifname)
        var matching = all.filter { $0.content == exact }
        if matching.isEmpty { matching = all.filter { $0.content == legacy } }
        var errors: [IPAMError] = []
        for e in matching where unlink(path(for: e.ip)) != 0 && errno != ENOENT {
            errors.append(.system(call: "unlink", path: path(for: e.ip), errno: errno))
        }
        if !errors.isEmpty { throw errors.count == 1 ? errors[0] : .several(errors) }
        return matching.map(\.ip)
    }

    public func release(_ ip: IPAddress) throws(IPAMError) {
        let path = self.path(for: ip)
        if unlink(path) != 0 && errno != ENOENT { throw .system(call: "unlink", path: path, errno: errno) }
    }

    public func getByID(id: String, ifname: String) -> [IPAddress] {
        let (exact, legacy) = Self.keys(id: id, ifname: ifname)
        return ((try? entries()) ?? []).filter { $0.content == exact || $0.content == legacy }.map(\.ip)
    }

    public func reservations() throws(IPAMError) -> [Reservation] {
        try entries().map { e in
            let text = String(decoding: e.content, as: UTF8.self)
            // Split at the first CR LF only: "id\r\nifname"; without one it is a legacy file.
            if let r = e.content.firstIndex(of: 13), r + 1 < e.content.count, e.content[r + 1] == 10 {
                return Reservation(
                    ip: e.ip, containerID: String(decoding: e.content[..<r], as: UTF8.self),
                    ifname: String(decoding: e.content[(r + 2)...], as: UTF8.self))
            }
            return Reservation(ip: e.ip, containerID: text, ifname: nil)
        }
    }

    // MARK: - Files

    /// The reservation file of `ip`: its text form, as Go's `ip.String()` writes it.
    public func path(for ip: IPAddress) -> String { directory + "/" + ip.description }

    /// Every reservation file: its address and its trimmed content.
    private func entries() throws(IPAMError) -> [(ip: IPAddress, content: [UInt8])] {
        guard let dir = opendir(directory) else { throw .system(call: "opendir", path: directory, errno: errno) }
        defer { closedir(dir) }
        var out: [(ip: IPAddress, content: [UInt8])] = []
        while let ent = readdir(dir) {
            let type = ent.pointee.d_type
            if type != UInt8(DT_REG) && type != UInt8(DT_UNKNOWN) { continue }
            let name = withUnsafePointer(to: &ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == Self.lockName || name.hasPrefix(Self.lastIPPrefix) { continue }
            guard let ip = IPAddress(name),
                let data = Self.readFile(directory + "/" + name, limit: Self.reservationSizeLimit)
            else { continue }
            out.append((ip, Self.trim(data)))
        }
        return out
    }

    /// The two contents that mean "held by id+ifname": current and legacy.
    private static func keys(id: String, ifname: String) -> (exact: [UInt8], legacy: [UInt8]) {
        let legacy = trim(Array(id.utf8))
        return (legacy + Array("\r\n".utf8) + Array(ifname.utf8), legacy)
    }

    /// `mkdir -p` with mode 0755 (before the umask), as Go's os.MkdirAll.
    private static func makeDirectories(_ path: String) throws(IPAMError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw .system(call: "mkdir", path: prefix, errno: errno)
            }
        }
        var st = stat()
        guard stat(path, &st) == 0 else { throw .system(call: "stat", path: path, errno: errno) }
        if st.st_mode & S_IFMT != S_IFDIR { throw .system(call: "mkdir", path: path, errno: ENOTDIR) }
    }

    /// The most a reservation file is read: "containerID\r\nifname" is far shorter; a larger file
    /// cannot be any attachment's and is skipped like an unreadable one.
    static let reservationSizeLimit = 64 * 1024
    /// The most `last_reserved_ip.<i>` is read: an address is at most 45 characters.
    static let lastIPSizeLimit = 4096

    /// The whole file, or nil if it cannot be opened or read (a directory, a file removed
    /// meanwhile), is not a regular file (a FIFO is opened O_NONBLOCK, so it cannot block) or
    /// holds more than `limit` bytes.
    static func readFile(_ path: String, limit: Int) -> [UInt8]? {
        let fd = retryingEINTR { open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return nil }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                out += buf[0..<n]
                if out.count > limit { return nil }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            return n == 0 ? out : nil
        }
    }

    /// Writes everything; returns the errno of a failed write.
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Int32? {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
            if n > 0 { off += n } else if n < 0 && errno == EINTR { continue } else { return n < 0 ? errno : EIO }
        }
        return nil
    }

    /// Strips ASCII white space at both ends (Go's strings.TrimSpace for the bytes that occur here).
    static func trim(_ b: [UInt8]) -> [UInt8] {
        func space(_ c: UInt8) -> Bool { c == 32 || (c >= 9 && c <= 13) }
        guard let s = b.firstIndex(where: { !space($0) }) else { return [] }
        let e = b.lastIndex(where: { !space($0) })!
        return Array(b[s...e])
    }

    private static func retryingEINTR(_ call: () -> Int32) -> Int32 {
        while true {
            let r = call()
            if r == -1 && errno == EINTR { continue }
            return r
        }
    }
}
