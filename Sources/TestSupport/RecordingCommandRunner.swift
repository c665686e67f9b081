// A CommandRunner for tests: records every command and answers like a host with empty tables
// unless `respond` says otherwise. Lets tests count spawns and read every script without root.

import Netfilter
import Synchronization

public final class RecordingCommandRunner: CommandRunner {
    let calls = Mutex<[Command]>([])
    let respond: @Sendable (Command) -> CommandOutput?
    /// Programs that are "not installed".
    let missing: Set<String>

    public init(missing: Set<String> = [], respond: @escaping @Sendable (Command) -> CommandOutput? = { _ in nil }) {
        self.missing = missing
        self.respond = respond
    }

    public var commands: [Command] { calls.withLock { $0 } }
    public var lines: [String] { commands.map(\.description) }

    public func run(_ command: Command) throws(NetfilterError) -> CommandOutput {
        calls.withLock { $0.append(command) }
        if missing.contains(command.executable) { throw .launchFailed(command: command.description, errno: 2) }
        if let out = respond(command) { return out }
        switch (command.executable, command.arguments.first) {
        case ("iptables", _), ("ip6tables", _): return CommandOutput(status: 0, stdout: "-P POSTROUTING ACCEPT\n")
        case ("nft", "-a"): return CommandOutput(status: 1, stderr: "Error: No such file or directory\n")
        default: return CommandOutput(status: 0)
        }
    }
}
