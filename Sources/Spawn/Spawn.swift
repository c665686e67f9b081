// Running a child process to completion: stdin fed, stdout and stderr collected, a time limit.
// Shared by CNI (delegating to IPAM and other plugins) and Netfilter (iptables-restore, nft).
// FoundationEssentials has no Process, and plugins must not pay for Foundation's.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

public enum Spawn {
    public struct Output: Sendable {
        /// The exit status, or 128 + signal when the child was killed.
        public var status: Int32
        public var stdout: [UInt8]
        public var stderr: [UInt8]
    }

    public enum Failure: Error, Sendable {
        /// posix_spawn (or pipe) failed with `errno`.
        case launch(errno: Int32)
        /// The child ran longer than the time limit and was killed.
        case timedOut
    }

    /// Runs `path` with `argv` (argv[0] included). `environment` nil inherits this process's.
    /// "Text file busy" (the binary is still being written by an installer) is retried up to 5
    /// times, a second apart, as the reference's pkg/invoke does.
    /// The corresponding C functions are `posix_spawn`, `poll` and `waitpid`.
    public static func run(
        _ path: String, argv: [String], environment: [String]? = nil, stdin: [UInt8],
        timeout: Double
    ) throws(Failure) -> Output {
        var pipes: [[Int32]] = []
        for _ in 0..<3 {
            var p: [Int32] = [0, 0]
            guard pipe(&p) == 0 else {
                let e = errno
                for fd in pipes.joined() { close(fd) }
                throw .launch(errno: e)
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
        // The child does not inherit this thread's blocked signals (a daemon's threads, or a
        // test runner's, block most), so a time-out's SIGTERM from its own children works.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attr, &noSignals)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK))

        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { $0.map { strdup($0) } + [nil] }
        defer {
            for p in cArgv { free(p) }
            for p in cEnv ?? [] { free(p) }
        }
        var pid: pid_t = 0
        var rc: Int32 = 0
        for attempt in 0..<6 {
            rc =
                cEnv.map { posix_spawn(&pid, path, &actions, &attr, cArgv, $0) }
                ?? posix_spawn(&pid, path, &actions, &attr, cArgv, environ)
            if rc != ETXTBSY || attempt == 5 { break }
            sleep(1)
        }
        for fd in [inPipe[0], outPipe[1], errPipe[1]] { close(fd) }
        guard rc == 0 else {
            for fd in [inPipe[1], outPipe[0], errPipe[0]] { close(fd) }
            throw .launch(errno: rc)
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

        // Our ends never block: after the child has exited, its output is read up to what the pipes
        // hold, not up to EOF (see below).
        for fd in [inPipe[1], outPipe[0], errPipe[0]] { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }

        // stdin is written from the poll loop: a pipe holds only 64 KiB, and the child may write
        // its output before it has read all of its input.
        //
        // The loop ends when the child has exited, not when its stdout reaches EOF: a child that
        // leaves a process behind (`sleep 600 &` in a shell script) passes its stdout on, and EOF
        // would then come only when that process ends. Everything the child wrote is in the pipes
        // once it has exited (a write into a full pipe does not return), so the loop reads what
        // is there and stops. The exit is noticed with waitpid(WNOHANG) between polls: poll wakes
        // at once for output, and otherwise after a tick that grows from 50 µs to 10 ms, so a
        // child that exits is reaped within 10 ms (at once in the usual case, where its exit
        // closes the pipes and wakes poll).
        var written = 0
        var out: [UInt8] = [], err: [UInt8] = []
        var fds = [
            pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0),
            pollfd(fd: errPipe[0], events: Int16(POLLIN), revents: 0),
            pollfd(fd: inPipe[1], events: Int16(POLLOUT), revents: 0),
        ]
        if stdin.isEmpty { close(inPipe[1]); fds[2].fd = -1 }
        // NaN or a negative limit must not trap below: both mean "no time at all".
        let limit = timeout.isNaN ? 0 : max(0, timeout)
        let deadline = monotonicNow() + limit
        var timedOut = false
        var status: Int32 = 0
        var tick = 50e-6
        var buf = [UInt8](repeating: 0, count: 65536)

        /// Reads what `fds[i]` holds now; closes it at EOF or on an error.
        func readAvailable(_ i: Int) {
            while fds[i].fd >= 0 {
                let r = buf.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
                if r > 0 {
                    if i == 0 { out += buf[0..<r] } else { err += buf[0..<r] }
                    continue
                }
                if r < 0 && errno == EINTR { continue }
                if r < 0 && errno == EAGAIN { return }
                close(fds[i].fd); fds[i].fd = -1
            }
        }

        while true {
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid || (reaped < 0 && errno != EINTR) {
                readAvailable(0)
                readAvailable(1)
                break
            }
            let left = deadline - monotonicNow()
            if left <= 0 {
                timedOut = true
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                break
            }
            let wait = min(left, tick)
            tick = min(tick * 2, 0.01)
            if fds.allSatisfy({ $0.fd < 0 }) {
                // Nothing left to poll: the child closed its output and has not exited yet.
                var ts = timespec(tv_sec: 0, tv_nsec: Int(wait * 1e9))
                _ = nanosleep(&ts, nil)
                continue
            }
            let n = poll(&fds, nfds_t(fds.count), Int32(wait * 1000) + (wait < 0.001 ? 0 : 1))
            if n <= 0 { continue }
            tick = 50e-6
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 { readAvailable(i) }
            if fds[2].fd >= 0 && fds[2].revents != 0 {
                let w = stdin.withUnsafeBytes { write(inPipe[1], $0.baseAddress! + written, $0.count - written) }
                if w > 0 { written += w }
                if w < 0 && errno == EPIPE { brokePipe = true }
                if w < 0 && errno != EINTR && errno != EAGAIN || written == stdin.count {
                    close(inPipe[1]); fds[2].fd = -1
                }
            }
        }
        for i in 0..<3 where fds[i].fd >= 0 { close(fds[i].fd) }
        if timedOut { throw .timedOut }
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Output(status: exit, stdout: out, stderr: err)
    }

    /// This process's environment (`environ`), as a dictionary.
    public static func environment() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return env
    }

    /// The first executable `name` in PATH, then in the sbin and bin directories: iptables and nft
    /// live in /usr/sbin, which a runtime's PATH does not always include.
    public static func lookPath(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? ""
        let dirs =
            path.split(separator: ":").map(String.init) + [
                "/usr/local/sbin", "/usr/sbin", "/sbin",
                "/usr/local/bin", "/usr/bin", "/bin",
            ]
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
