// The plugin dispatcher: environment + stdin -> ADD/DEL/CHECK/VERSION/STATUS/GC -> stdout.
// The counterpart of the reference's skel.PluginMainFuncs.

import Spawn

#if canImport(Glibc)
    import Glibc
#endif

/// A CNI plugin's verbs. Each runs synchronously; errors are reported as CNI error JSON.
public protocol CNIPlugin {
    var supportedVersions: [SpecVersion] { get }
    func add(_ request: Request) throws -> Result
    func del(_ request: Request) throws
    func check(_ request: Request) throws
    func gc(_ request: Request) throws
    func status(_ request: Request) throws
}

extension CNIPlugin {
    public var supportedVersions: [SpecVersion] { SpecVersion.allCases }
}

/// What one invocation printed and returned.
public struct Outcome: Sendable {
    public var exitCode: Int32
    public var stdout: [UInt8]
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
}

public enum CNIMain {
    /// Runs the plugin as a process: reads the environment and stdin, writes stdout, exits.
    public static func run(_ plugin: some CNIPlugin, about: String) -> Never {
        run(plugin, about: about, delegates: [:])
    }

    /// As `run(_:about:)`; `delegates` are plugins compiled into this executable that run
    /// in-process when the delegate file found in CNI_PATH is this executable's own file, a hard
    /// link of it (see `Delegate.builtIn`).
    public static func run(_ plugin: some CNIPlugin, about: String, delegates: [String: any CNIPlugin]) -> Never {
        Delegate.builtIn = delegates
        let env = Spawn.environment()
        if (env["CNI_COMMAND"] ?? "").isEmpty {
            let versions = plugin.supportedVersions.map(\.rawValue).joined(separator: ", ")
            logStderr("\(about)\nCNI protocol versions supported: \(versions)")
            exit(0)
        }
        let stdin = (env["CNI_COMMAND"] == Command.version.rawValue) ? [] : readAll(fd: 0)
        let out = dispatch(plugin, env: env, stdin: stdin)
        writeAll(fd: 1, out.stdout)
        exit(out.exitCode)
    }

    /// Runs one invocation in-process; tests call this directly.
    public static func dispatch(_ plugin: some CNIPlugin, env: [String: String], stdin: [UInt8]) -> Outcome {
        var version: String?
        do {
            let cniEnv = try CNIEnvironment(env)
            if cniEnv.command == .version {
                let v: JSON = .object([
                    "cniVersion": .string(SpecVersion.current.rawValue),
                    "supportedVersions": .array(plugin.supportedVersions.map { .string($0.rawValue) }),
                ])
                return Outcome(exitCode: 0, stdout: v.encoded() + [10])
            }
            let request = try Request(env: cniEnv, stdin: stdin, supported: plugin.supportedVersions)
            version = request.version.rawValue
            switch cniEnv.command {
            case .add:
                let result = try plugin.add(request)
                return Outcome(exitCode: 0, stdout: try result.json(version: request.version).encoded(pretty: true))
            case .del: try plugin.del(request)
            case .check: try plugin.check(request)
            case .gc: try plugin.gc(request)
            case .status: try plugin.status(request)
            case .version: break
            }
            return Outcome(exitCode: 0, stdout: [])
        } catch let e as CNIError {
            logStderr("\(e.description)")
            return Outcome(exitCode: 1, stdout: e.json(cniVersion: version).encoded(pretty: true))
        } catch {
            let e = CNIError(.internal, "\(error)")
            logStderr(e.msg)
            return Outcome(exitCode: 1, stdout: e.json(cniVersion: version).encoded(pretty: true))
        }
    }
}

/// Writes a line to stderr, the free-text channel of a CNI plugin.
public func logStderr(_ message: String) {
    writeAll(fd: 2, Array((message + "\n").utf8))
}

func readAll(fd: Int32) -> [UInt8] {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 { out += buf[0..<n]; continue }
        if n < 0 && errno == EINTR { continue }
        return out
    }
}

func writeAll(fd: Int32, _ bytes: [UInt8]) {
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
        if n > 0 { off += n } else if n < 0 && errno == EINTR { continue } else { return }
    }
}
