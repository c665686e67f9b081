// What `podnetctl ipam` needs from the world, as one value: where its output goes, whether that
// is a terminal, the environment, stdin, and how child processes run. The executable passes
// `IPAMContext.system()`; tests pass one that captures the output and fakes the rest, and run
// the command in-process.

import Spawn

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public struct IPAMContext {
    /// Writes text to standard output (the text carries its own newlines).
    public var write: (String) -> Void
    /// Writes text to standard error.
    public var writeError: (String) -> Void
    /// Whether standard output is a terminal: colour is used only then.
    public var isTTY: Bool
    /// The process environment (`PATH`, `NO_COLOR`).
    public var environment: [String: String]
    /// Reads all of standard input (`--live -`).
    public var readStdin: () -> [UInt8]
    /// Runs a program to completion: its path and argv (argv[0] included).
    public var run: (_ path: String, _ argv: [String]) throws(Spawn.Failure) -> Spawn.Output
    /// Runs with each network's lock held during `ipam release`, before its reservations are
    /// read (tests contend for the lock here). Does nothing by default.
    public var whileLocked: () -> Void

    public init(
        write: @escaping (String) -> Void, writeError: @escaping (String) -> Void, isTTY: Bool,
        environment: [String: String], readStdin: @escaping () -> [UInt8] = { [] },
        run: @escaping (_ path: String, _ argv: [String]) throws(Spawn.Failure) -> Spawn.Output = {
            path, argv throws(Spawn.Failure) in
            try Spawn.run(path, argv: argv, stdin: [], timeout: 30)
        },
        whileLocked: @escaping () -> Void = {}
    ) {
        self.write = write
        self.writeError = writeError
        self.isTTY = isTTY
        self.environment = environment
        self.readStdin = readStdin
        self.run = run
        self.whileLocked = whileLocked
    }

    /// The real process: file descriptors 0, 1 and 2, `environ`, runtime queries with a 30 s limit.
    public static func system() -> IPAMContext {
        let env = Spawn.environment()
        return IPAMContext(
            write: { writeAll(1, $0) }, writeError: { writeAll(2, $0) }, isTTY: isatty(1) == 1,
            environment: env, readStdin: { (try? readAll(fd: 0)) ?? [] })
    }
}

/// Whether to colour the output: only on a terminal, never with `NO_COLOR` set (to anything, see
/// no-color.org) nor on a `TERM=dumb` terminal.
/// Private to this target for now; NodeCheck has the same rule for `status` and `check`.
func useColour(isTTY: Bool, environment: [String: String]) -> Bool {
    isTTY && environment["NO_COLOR"] == nil && environment["TERM"] != "dumb"
}

/// ANSI SGR colours, applied only when enabled.
struct Palette {
    var enabled: Bool
    func red(_ s: String) -> String { enabled ? "\u{1B}[31m\(s)\u{1B}[0m" : s }
    func green(_ s: String) -> String { enabled ? "\u{1B}[32m\(s)\u{1B}[0m" : s }
    func bold(_ s: String) -> String { enabled ? "\u{1B}[1m\(s)\u{1B}[0m" : s }
}

// MARK: - Files

/// Everything readable from `fd`; the errno of a failed read is thrown.
func readAll(fd: Int32) throws(SystemError) -> [UInt8] {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 {
            out += buf[0..<n]
        } else if n == 0 {
            return out
        } else if errno != EINTR {
            throw SystemError(call: "read", path: "", errno: errno)
        }
    }
}

/// The whole file at `path`.
func readFile(_ path: String) throws(SystemError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SystemError(call: "open", path: path, errno: errno) }
    defer { close(fd) }
    do throws(SystemError) { return try readAll(fd: fd) } catch {
        throw SystemError(call: error.call, path: path, errno: error.errno)
    }
}

private func writeAll(_ fd: Int32, _ text: String) {
    let bytes = Array(text.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
        if n > 0 { off += n } else if n < 0 && errno == EINTR { continue } else { return }
    }
}

/// A failed system call: the C function, the file, the errno.
struct SystemError: Error, CustomStringConvertible {
    var call: String
    var path: String
    var errno: Int32
    var description: String {
        "\(call)\(path.isEmpty ? "" : " " + path): \(String(cString: strerror(errno)))"
    }
}
