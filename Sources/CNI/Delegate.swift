// Delegation to another plugin (IPAM, or the flannel meta plugin's bridge): find it in CNI_PATH,
// run it with our environment (CNI_COMMAND overridden) and the given stdin, and pass its result
// or its error through (SPEC.md §4, pkg/invoke).

#if canImport(Glibc)
import Glibc
#endif
import Spawn

public enum Delegate {
    /// Plugins compiled into this executable, by CNI type. When the binary found in CNI_PATH for
    /// such a type carries this executable's build-id, it is the same code, and it runs
    /// in-process through the same dispatcher: same environment, stdin, result bytes and errors,
    /// without paying for a process start on every pod's ADD and DEL. Set once by `CNIMain.run`.
    nonisolated(unsafe) static var builtIn: [String: any CNIPlugin] = [:]

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
        let input = stdin ?? request.stdin
        if let plugin = builtIn[type], let own = BuildID.current, BuildID.read(path: path) == own {
            let out = CNIMain.dispatch(plugin, env: env, stdin: input)
            return try output(type, status: out.exitCode, stdout: out.stdout, stderr: [])
        }
        let r: Spawn.Output
        do throws(Spawn.Failure) {
            r = try Spawn.run(path, argv: [type], environment: env.map { "\($0.key)=\($0.value)" },
                              stdin: input, timeout: timeout)
        } catch {
            switch error {
            case .timedOut:
                throw CNIError(.tryAgainLater, "plugin \(type) did not finish \(command.rawValue) within \(timeout)s")
            case .launch(let e):
                throw CNIError(.internal, "failed to execute \(path): \(String(cString: strerror(e)))")
            }
        }
        return try output(type, status: r.status, stdout: r.stdout, stderr: r.stderr)
    }

    /// The delegate's stdout on success; its own error object, or code 999 with its stderr.
    private static func output(_ type: String, status: Int32, stdout: [UInt8], stderr: [UInt8]) throws(CNIError) -> [UInt8] {
        if !stderr.isEmpty { writeAll(fd: 2, stderr) }
        guard status == 0 else {
            if let j = try? JSON.parse(stdout), let e = CNIError(json: j) { throw e }
            let err = String(decoding: stderr, as: UTF8.self).trimmed
            throw CNIError(.internal, "plugin \(type) failed (exit status \(status)): \(err)")
        }
        return stdout
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
