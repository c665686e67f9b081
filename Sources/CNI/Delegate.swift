// Delegation to another plugin (IPAM, or the flannel meta plugin's bridge): find it in CNI_PATH,
// run it with our environment (CNI_COMMAND overridden) and the given stdin, and pass its result
// or its error through (SPEC.md §4, pkg/invoke).

import Spawn

#if canImport(Glibc)
    import Glibc
#endif

public enum Delegate {
    /// Plugins compiled into this executable, by CNI type. When the file found in CNI_PATH for
    /// such a type is this executable itself (`isRunningExecutable`), it is the same code, and it
    /// runs in-process through the same dispatcher: same environment, stdin, result bytes and
    /// errors, without paying for a process start on every pod's ADD and DEL. Set once by
    /// `CNIMain.run`.
    nonisolated(unsafe) static var builtIn: [String: any CNIPlugin] = [:]

    /// The device and inode of the running executable (`/proc/self/exe`), read once.
    static let runningExecutable: (dev: UInt64, ino: UInt64)? = fileID("/proc/self/exe")

    /// Whether `path` is the running executable's file: the same device and inode, i.e. the file
    /// itself or a hard link of it. A copy is another inode, and so is another build installed
    /// over it (a rename gives the name a new inode), so both are executed instead.
    static func isRunningExecutable(_ path: String) -> Bool {
        guard let own = runningExecutable, let other = fileID(path) else { return false }
        return own == other
    }

    private static func fileID(_ path: String) -> (dev: UInt64, ino: UInt64)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (UInt64(truncatingIfNeeded: st.st_dev), UInt64(truncatingIfNeeded: st.st_ino))
    }

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
        var ignored = Rollback()  // never run: the caller does not undo
        return try add(type, request: request, stdin: stdin, undo: &ignored)
    }

    /// Runs ADD on the delegate and reads its result, registering the delegate's DEL in `undo`
    /// whenever the delegate may hold something: it succeeded, or its outcome is unknown (it was
    /// killed at the time-out, it died without printing an error object, or it printed a result
    /// that cannot be used). A delegate that reported an error object of its own, or that could
    /// not be started, holds nothing, and a DEL then could only release what an earlier ADD of
    /// the same attachment still holds.
    public static func add(
        _ type: String, request: Request, stdin: [UInt8]? = nil,
        undo: inout Rollback
    ) throws(CNIError) -> Result {
        let input = stdin ?? request.stdin
        let out: [UInt8]
        switch execute(type, command: .add, request: request, stdin: input) {
        case .succeeded(let bytes): out = bytes
        case .reportedError(let e), .notStarted(let e): throw e
        case .unknownOutcome(let e):
            registerDel(type, request: request, stdin: input, &undo)
            throw e
        }
        registerDel(type, request: request, stdin: input, &undo)
        do throws(CNIError) {
            let result = try Result(json: try JSON.parse(out), assumedVersion: request.version)
            try result.checkRouteRanges()
            return result
        } catch {
            throw CNIError.wrap(error, "invalid result from plugin \(type)")
        }
    }

    private static func registerDel(_ type: String, request: Request, stdin: [UInt8], _ undo: inout Rollback) {
        undo.add("release through \(type) DEL") {
            try Delegate.run(type, command: .del, request: request, stdin: stdin)
        }
    }

    /// Runs DEL, CHECK, GC or STATUS on the delegate; its error, if any, is thrown unchanged.
    public static func run(_ type: String, command: Command, request: Request, stdin: [UInt8]? = nil) throws(CNIError) {
        _ = try exec(type, command: command, request: request, stdin: stdin)
    }

    /// Executes the delegate and returns its stdout. A non-zero exit becomes the delegate's own
    /// error object when it printed one, else code 999 with its stderr.
    public static func exec(_ type: String, command: Command, request: Request, stdin: [UInt8]? = nil) throws(CNIError)
        -> [UInt8]
    {
        switch execute(type, command: command, request: request, stdin: stdin ?? request.stdin) {
        case .succeeded(let out): return out
        case .reportedError(let e), .notStarted(let e), .unknownOutcome(let e): throw e
        }
    }

    /// How a delegate run ended.
    enum Outcome {
        case succeeded([UInt8])
        /// It exited non-zero and printed its own error object.
        case reportedError(CNIError)
        /// It was never started (not found, not executable, a bad time limit).
        case notStarted(CNIError)
        /// It was killed at the time-out, or died without an error object (a crash, a signal).
        case unknownOutcome(CNIError)
    }

    /// The time limit in seconds: PODNET_DELEGATE_TIMEOUT when set, which must be a positive
    /// finite number (code 4 naming it otherwise), else `defaultTimeout`.
    static func timeout(_ env: [String: String]) throws(CNIError) -> Double {
        guard let text = env["PODNET_DELEGATE_TIMEOUT"], !text.isEmpty else { return defaultTimeout }
        guard let t = Double(text), t.isFinite, t > 0 else {
            throw CNIError(
                .invalidEnvironment, "invalid PODNET_DELEGATE_TIMEOUT \"\(text)\": must be a positive number of seconds"
            )
        }
        return t
    }

    static func execute(_ type: String, command: Command, request: Request, stdin input: [UInt8]) -> Outcome {
        let path: String
        let timeout: Double
        do throws(CNIError) {
            path = try find(type, in: request.env.path)
            timeout = try Self.timeout(request.env.raw)
        } catch {
            return .notStarted(error)
        }
        var env = request.env.raw
        env["CNI_COMMAND"] = command.rawValue
        if let plugin = builtIn[type], isRunningExecutable(path) {
            let out = CNIMain.dispatch(plugin, env: env, stdin: input)
            return outcome(type, status: out.exitCode, stdout: out.stdout, stderr: [])
        }
        let r: Spawn.Output
        do throws(Spawn.Failure) {
            r = try Spawn.run(
                path, argv: [type], environment: env.map { "\($0.key)=\($0.value)" },
                stdin: input, timeout: timeout)
        } catch {
            switch error {
            case .timedOut:
                return .unknownOutcome(
                    CNIError(.tryAgainLater, "plugin \(type) did not finish \(command.rawValue) within \(timeout)s"))
            case .launch(let e):
                return .notStarted(CNIError(.internal, "failed to execute \(path): \(String(cString: strerror(e)))"))
            }
        }
        return outcome(type, status: r.status, stdout: r.stdout, stderr: r.stderr)
    }

    /// The delegate's stdout on success; its own error object, or code 999 with its stderr.
    private static func outcome(_ type: String, status: Int32, stdout: [UInt8], stderr: [UInt8]) -> Outcome {
        if !stderr.isEmpty { writeAll(fd: 2, stderr) }
        guard status == 0 else {
            if let j = try? JSON.parse(stdout), let e = CNIError(json: j) { return .reportedError(e) }
            let err = String(decoding: stderr, as: UTF8.self).trimmed
            return .unknownOutcome(CNIError(.internal, "plugin \(type) failed (exit status \(status)): \(err)"))
        }
        return .succeeded(stdout)
    }
}

/// Runs the plugins a plugin delegates to (its IPAM plugin), as a value the plugin is given, so
/// tests can put a fake in its place. `CNIPathDelegates` is the real one, `Delegate`'s execution.
public protocol DelegateRunner: Sendable {
    /// Runs ADD on the delegate and reads its result, registering the delegate's DEL in `undo`
    /// whenever the delegate may hold something (see `Delegate.add(_:request:stdin:undo:)`).
    func add(_ type: String, request: Request, stdin: [UInt8]?, undo: inout Rollback) throws(CNIError) -> Result
    /// Runs DEL, CHECK, GC or STATUS on the delegate; its error, if any, is thrown unchanged.
    func run(_ type: String, command: Command, request: Request, stdin: [UInt8]?) throws(CNIError)
}

/// The delegates found in CNI_PATH (or compiled in): `Delegate.add` and `Delegate.run`.
public struct CNIPathDelegates: DelegateRunner {
    public init() {}

    public func add(_ type: String, request: Request, stdin: [UInt8]?, undo: inout Rollback) throws(CNIError) -> Result
    {
        try Delegate.add(type, request: request, stdin: stdin, undo: &undo)
    }

    public func run(_ type: String, command: Command, request: Request, stdin: [UInt8]?) throws(CNIError) {
        try Delegate.run(type, command: command, request: request, stdin: stdin)
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
