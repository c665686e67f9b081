// Delegation to another plugin (IPAM, or the flannel meta plugin's bridge): find it in CNI_PATH,
// run it with our environment (CNI_COMMAND overridden) and the given stdin, and pass its result
// or its error through (SPEC.md §4, pkg/invoke).

#if canImport(Glibc)
import Glibc
#endif

public enum Delegate {
    /// How long a delegate may run before it is killed and the call fails with code 11.
    /// `PODNET_DELEGATE_TIMEOUT` (seconds) in the environment overrides it.
    public static let defaultTimeout: Double = 60

    /// Finds `type` in the CNI_PATH directories: the first regular, executable file of that name.
    public static func find(_ type: String, in path: [String]) throws(CNIError) -> String {
        if type.isEmpty { throw CNIError(.invalidNetworkConfig, "no plugin name provided") }
        if type.contains("/") { throw CNIError(.invalidNetworkConfig, "invalid plugin name \"\(type)\"") }
        for dir in path {
            let candidate = dir.hasSuffix("/") ? dir + type : dir + "/" + type
            var st = stat()
            if stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        throw CNIError(.invalidEnvironment, "failed to find plugin \"\(type)\" in path \(path)")
    }

    /// Runs ADD on the delegate and reads its result.
    public static func add(_ type: String, request: Request, stdin: [UInt8]? = nil) throws(CNIError) -> Result {
        let out = try exec(type, command: .add, request: request, stdin: stdin)
        return try Result(json: try JSON.parse(out), assumedVersion: request.version)
    }

    /// Runs DEL, CHECK, GC or STATUS on the delegate; its error, if any, is thrown unchanged.
    public static func run(_ type: String, command: Command, request: Request, stdin: [UInt8]? = nil) throws(CNIError) {
        _ = try exec(type, command: command, request: request, stdin: stdin)
    }

    /// Executes the delegate and returns its stdout. A non-zero exit becomes the delegate's own
    /// error object when it printed one, else code 999 with its stderr.
    public static func exec(_ type: String, command: Command, request: Request, stdin: [UInt8]? = nil) throws(CNIError) -> [UInt8] {
        let path = try find(type, in: request.env.path)
        var env = request.env.raw
        env["CNI_COMMAND"] = command.rawValue
        let timeout = env["PODNET_DELEGATE_TIMEOUT"].flatMap(Double.init) ?? defaultTimeout
        let r = try Subprocess.run(path, arguments: [type], environment: env, stdin: stdin ?? request.stdin,
                                   timeout: timeout)
        if !r.stderr.isEmpty { writeAll(fd: 2, r.stderr) }
        if r.timedOut {
            throw CNIError(.tryAgainLater, "plugin \(type) did not finish \(command.rawValue) within \(timeout)s")
        }
        guard r.status == 0 else {
            if let j = try? JSON.parse(r.stdout), let e = CNIError(json: j) { throw e }
            let err = String(decoding: r.stderr, as: UTF8.self).trimmed
            throw CNIError(.internal, "plugin \(type) failed (exit status \(r.status)): \(err)")
        }
        return r.stdout
    }
}

/// A child process run to completion with its stdin given and its stdout/stderr collected.
public enum Subprocess {
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: [UInt8]
        public var stderr: [UInt8]
        public var timedOut: Bool
    }

    /// Runs `path` (argv[0] = arguments[0]). "Text file busy" (the binary is still being written)
    /// is retried up to 5 times, one second apart, as pkg/invoke does.
    public static func run(_ path: String, arguments: [String], environment: [String: String],
                           stdin: [UInt8], timeout: Double) throws(CNIError) -> Output {
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        for i in 0..<3 {
            var p: [Int32] = [0, 0]
            guard pipe(&p) == 0 else { throw CNIError(.ioFailure, "pipe: \(String(cString: strerror(errno)))") }
            // Close-on-exec, so the child keeps only the ends dup2'ed onto 0, 1 and 2.
            _ = fcntl(p[0], F_SETFD, FD_CLOEXEC); _ = fcntl(p[1], F_SETFD, FD_CLOEXEC)
            if i == 0 { inPipe = p } else if i == 1 { outPipe = p } else { errPipe = p }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }

        var pid: pid_t = 0
        var rc: Int32 = 0
        for attempt in 0..<6 {
            rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
            if rc != ETXTBSY || attempt == 5 { break }
            sleep(1)
        }
        for fd in [inPipe[0], outPipe[1], errPipe[1]] { close(fd) }
        guard rc == 0 else {
            for fd in [inPipe[1], outPipe[0], errPipe[0]] { close(fd) }
            throw CNIError(.internal, "failed to execute \(path): \(String(cString: strerror(rc)))")
        }
        // The child reads stdin while we write it; configs are small, but a pipe holds only 64 KiB,
        // so write from the poll loop rather than all at once.
        var written = 0
        var out: [UInt8] = [], err: [UInt8] = []
        var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0),
                   pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0),
                   pollfd(fd: inPipe[1], events: Int16(POLLOUT), revents: 0)]
        if stdin.isEmpty { close(inPipe[1]); fds[2].fd = -1 }
        let deadline = monotonicNow() + timeout
        var timedOut = false
        var buf = [UInt8](repeating: 0, count: 65536)
        while fds[0].fd >= 0 || fds[1].fd >= 0 {
            let left = deadline - monotonicNow()
            if left <= 0 { timedOut = true; kill(pid, SIGKILL); break }
            let n = poll(&fds, nfds_t(fds.count), Int32(min(left * 1000, 1000)) + 1)
            if n < 0 && errno != EINTR { break }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let r = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
                if r > 0 {
                    if i == 0 { out += buf[0..<r] } else { err += buf[0..<r] }
                } else if r == 0 || errno != EINTR {
                    close(fds[i].fd); fds[i].fd = -1
                }
            }
            if fds[2].fd >= 0 && fds[2].revents != 0 {
                let w = stdin.withUnsafeBytes { write(inPipe[1], $0.baseAddress! + written, $0.count - written) }
                if w > 0 { written += w }
                if w < 0 && errno != EINTR && errno != EAGAIN || written == stdin.count {
                    close(inPipe[1]); fds[2].fd = -1
                }
            }
        }
        for i in 0..<3 where fds[i].fd >= 0 { close(fds[i].fd) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Output(status: exit, stdout: out, stderr: err, timedOut: timedOut)
    }

    static func monotonicNow() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

extension String {
    /// The string without leading and trailing white space (FoundationEssentials has no
    /// trimmingCharacters).
    public var trimmed: String {
        let u = unicodeScalars
        guard let first = u.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = u.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(u[first...last])
    }
}
