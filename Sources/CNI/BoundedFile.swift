// Reading a small file a plugin is pointed at (subnet.env, resolvConf, a saved delegate config)
// without trusting what is there: a plugin runs on every pod's start-up path, and a path that names
// /dev/zero must not grow the process to gigabytes, a FIFO must not block it for ever.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public enum BoundedFile {
    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        /// `call` failed with `errno` (ENOENT: the file does not exist).
        case system(call: String, path: String, errno: Int32)
        /// The path names something other than a regular file; `kind` says what.
        case notRegularFile(path: String, kind: String)
        /// The file holds more than `limit` bytes.
        case tooLarge(path: String, limit: Int)

        public var description: String {
            switch self {
            case .system(let call, let path, let e):
                // Go's spelling of a syscall error: "open /x: no such file or directory".
                let text = String(cString: strerror(e))
                return "\(call) \(path): \(text.prefix(1).lowercased() + text.dropFirst())"
            case .notRegularFile(let path, let kind):
                return "\(path) is \(kind), not a regular file"
            case .tooLarge(let path, let limit):
                return "\(path) is larger than \(limit) bytes"
            }
        }

        /// The errno of a failed call, nil for the other failures.
        public var errno: Int32? {
            if case .system(_, _, let e) = self { return e }
            return nil
        }
    }

    /// The whole content of the regular file at `path`, at most `limit` bytes. Anything that is
    /// not a regular file is refused before it is opened (`stat`), and the open is O_NONBLOCK
    /// (a FIFO swapped in meanwhile opens at once, then fails the `fstat` check), so this never
    /// blocks. `noFollow` refuses a symbolic link at `path` (O_NOFOLLOW, ELOOP).
    public static func contents(_ path: String, limit: Int, noFollow: Bool = false) throws(Failure) -> [UInt8] {
        var st = stat()
        let rc = noFollow ? lstat(path, &st) : stat(path, &st)
        // Named "open", as the reference's message for a missing file is ("open <path>: no such
        // file or directory"): what failed is opening the file, whichever call noticed.
        guard rc == 0 else { throw .system(call: "open", path: path, errno: errno) }
        if noFollow && st.st_mode & S_IFMT == S_IFLNK { throw .system(call: "open", path: path, errno: ELOOP) }
        try checkRegular(st, path)
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | (noFollow ? O_NOFOLLOW : 0))
        guard fd >= 0 else { throw .system(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        guard fstat(fd, &st) == 0 else { throw .system(call: "fstat", path: path, errno: errno) }
        try checkRegular(st, path)
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: min(limit + 1, 65536))
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                data += buf[0..<n]
                if data.count > limit { throw .tooLarge(path: path, limit: limit) }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw .system(call: "read", path: path, errno: errno) }
            return data
        }
    }

    private static func checkRegular(_ st: stat, _ path: String) throws(Failure) {
        let kind: String
        switch st.st_mode & S_IFMT {
        case S_IFREG: return
        case S_IFIFO: kind = "a FIFO"
        case S_IFCHR: kind = "a character device"
        case S_IFBLK: kind = "a block device"
        case S_IFDIR: kind = "a directory"
        case S_IFSOCK: kind = "a socket"
        default: kind = "a special file"
        }
        throw .notRegularFile(path: path, kind: kind)
    }
}
