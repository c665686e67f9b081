// Running iptables, ip6tables and nft. Everything the library does to the kernel goes through one
// `CommandRunner` call per process, so a test can count the spawns and read every script, and a
// plugin pays one posix_spawn per command (through the shared Spawn module).

import Spawn

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
        guard let path = Spawn.lookPath(command.executable) else {
            throw .launchFailed(command: name, errno: ENOENT)
        }
        do throws(Spawn.Failure) {
            let out = try Spawn.run(
                path, argv: [command.executable] + command.arguments,
                stdin: Array(command.stdin.utf8), timeout: timeout)
            return CommandOutput(
                status: out.status, stdout: String(decoding: out.stdout, as: UTF8.self),
                stderr: String(decoding: out.stderr, as: UTF8.self))
        } catch {
            switch error {
            case .launch(let e): throw .launchFailed(command: name, errno: e)
            case .timedOut: throw .timedOut(command: name, seconds: timeout)
            }
        }
    }
}
