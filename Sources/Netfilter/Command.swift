// Running iptables, ip6tables and nft. Everything the library does to the kernel goes through one
// `CommandRunner` call per process, so a test can count the spawns and read every script, and a
// plugin pays one posix_spawn per command (FoundationEssentials has no Process, and this library
// may not use the CNI library's Subprocess).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One process to run: a program name (looked up in PATH) or path, its arguments and its stdin.
public struct Command: Hashable, Sendable, CustomStringConvertible {
    public var executable: String
    public var arguments: [String]
    public var stdin: String

    public init(_ executable: String, _ arguments: [String], stdin: String = "") {
        self.executable = executable
        self.arguments = arguments
        self.stdin = stdin
    }

    /// The command line as a shell would show it, for error messages.
    public var description: String { ([executable] + arguments).joined(separator: " ") }
}

/// What a finished command printed, and its exit status (128 + signal when killed).
public struct CommandOutput: Hashable, Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    public init(status: Int32, stdout: String = "", stderr: String = "") {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// Runs commands. The real one spawns processes; tests pass a recording fake.
/// A non-zero exit status is returned, not thrown: callers decide what it means
/// ("No such file or directory" from `nft list` just means there is nothing yet).
public protocol CommandRunner: Sendable {
    func run(_ command: Command) throws(NetfilterError) -> CommandOutput
}

extension CommandRunner {
    /// Runs `command` and throws `commandFailed` unless it exits 0.
    func succeed(_ command: Command) throws(NetfilterError) -> String {
        let out = try run(command)
        guard out.status == 0 else {
            throw .commandFailed(command: command.description, status: out.status, stderr: trimmed(out.stderr))
        }
        return out.stdout
    }
}

func trimmed(_ s: String) -> String {
    var u = Substring(s)
    while let c = u.first, c.isWhitespace { u.removeFirst() }
    while let c = u.last, c.isWhitespace { u.removeLast() }
    return String(u)
}

/// Spawns the command with posix_spawn in the calling thread's network namespace, with this
/// process's environment, feeding `stdin` and collecting stdout and stderr.
public struct SystemCommandRunner: CommandRunner {
    /// Seconds a command may run before it is killed. iptables waits for the xtables lock (`-w`),
    /// which kube-proxy may hold for a while, so this is generous.
    public var timeout: Double

    public init(timeout: Double = 60) {
        self.timeout = timeout
    }

    public func run(_ command: Command) throws(NetfilterError) -> CommandOutput {
        let name = command.description
        guard let path = Self.lookPath(command.executable) else {
            throw .launchFailed(command: name, errno: ENOENT)
        }
        var pipes: [[Int32]] = []
        for _ in 0..<3 {
            var p: [Int32] = [0, 0]
            guard pipe(&p) == 0 else {
                let e = errno
                pipes.joined().forEach { _ = close($0) }
                throw .launchFailed(command: name, errno: e)
            }
            // Close-on-exec, so the child keeps only the ends dup2'ed onto 0, 1 and 2.
            _ = fcntl(p[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(p[1], F_SETFD, FD_CLOEXEC)
            pipes.append(p)
        }
        let (inPipe, outPipe, errPipe) = (pipes[0], pipes[1], pipes[2])

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)

        let argv = ([command.executable] + command.arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        for fd in [inPipe[0], outPipe[1], errPipe[1]] { close(fd) }
        guard rc == 0 else {
            for fd in [inPipe[1], outPipe[0], errPipe[0]] { close(fd) }
            throw .launchFailed(command: name, errno: rc)
        }

        // A child that exits without reading all of stdin makes our write raise SIGPIPE, which
        // would kill the plugin. Block it in this thread (a broken pipe's SIGPIPE is sent to the
        // writing thread), take the EPIPE, and discard the signal if we caused one.
        var sigpipe = sigset_t(), oldMask = sigset_t()
        sigemptyset(&sigpipe)
        sigaddset(&sigpipe, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &sigpipe, &oldMask)
        var brokePipe = false
        defer {
            if brokePipe {
                var zero = timespec()
                _ = sigtimedwait(&sigpipe, nil, &zero)
            }
            pthread_sigmask(SIG_SETMASK, &oldMask, nil)
        }

        let input = Array(command.stdin.utf8)
        var written = 0
        var out: [UInt8] = [], err: [UInt8] = []
        var fds = [pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0),
                   pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0),
                   pollfd(fd: inPipe[1], events: Int16(POLLOUT), revents: 0)]
        if input.isEmpty { close(inPipe[1]); fds[2].fd = -1 }
        let deadline = Self.monotonicNow() + timeout
        var timedOut = false
        var buf = [UInt8](repeating: 0, count: 65536)
        while fds[0].fd >= 0 || fds[1].fd >= 0 {
            let left = deadline - Self.monotonicNow()
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
                let w = input.withUnsafeBytes { write(inPipe[1], $0.baseAddress! + written, $0.count - written) }
                if w > 0 { written += w }
                if w < 0 && errno == EPIPE { brokePipe = true }
                if w < 0 && errno != EINTR && errno != EAGAIN || written == input.count {
                    close(inPipe[1]); fds[2].fd = -1
                }
            }
        }
        for i in 0..<3 where fds[i].fd >= 0 { close(fds[i].fd) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if timedOut { throw .timedOut(command: name, seconds: timeout) }
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return CommandOutput(status: exit, stdout: String(decoding: out, as: UTF8.self),
                             stderr: String(decoding: err, as: UTF8.self))
    }

    /// The first executable `name` in PATH, then in the sbin and bin directories: iptables and nft
    /// live in /usr/sbin, which a runtime's PATH does not always include.
    static func lookPath(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? ""
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin",
                                                                 "/usr/local/bin", "/usr/bin", "/bin"]
        for dir in dirs where !dir.isEmpty {
            let candidate = dir + "/" + name
            var st = stat()
            if stat(candidate, &st) == 0, st.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    static func monotonicNow() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
