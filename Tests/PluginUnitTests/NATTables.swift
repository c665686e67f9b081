// A stand-in for the kernel's iptables nat tables behind a recording command runner: it applies
// the scripts given to iptables-restore / ip6tables-restore (--noflush) and answers `-S` with
// what they left, so a test reads the rules as `iptables -t nat -S` would show them.

import Netfilter
import Synchronization
import TestSupport  // RecordingCommandRunner, once it moves here from Netfilter

final class NATTables: Sendable {
    struct Table {
        var chains: [String] = []
        var rules: [IPTablesRule] = []
    }

    let tables = Mutex([String: Table]())  // by program: "iptables", "ip6tables"

    /// A runner that records every command and runs iptables against these tables.
    var runner: RecordingCommandRunner { RecordingCommandRunner { [self] in respond($0) } }

    /// The user chains and rules of `program`'s nat table.
    func table(_ program: String = "iptables") -> Table { tables.withLock { $0[program] ?? Table() } }

    /// The rules as `-A` lines, as `iptables -t nat -S` prints them.
    func lines(_ program: String = "iptables") -> [String] { table(program).rules.map { $0.line() } }

    private func respond(_ c: Netfilter.Command) -> CommandOutput? {
        switch c.executable {
        case "iptables-restore", "ip6tables-restore":
            let program = String(c.executable.dropLast("-restore".count))
            tables.withLock { t in
                for line in c.stdin.split(separator: "\n") {
                    Self.apply(String(line), to: &t[program, default: Table()])
                }
            }
            return CommandOutput(status: 0)
        case "iptables", "ip6tables":
            guard c.arguments.starts(with: ["-w", "-t", "nat", "-S"]) else { return nil }
            let t = table(c.executable)
            if let only = c.arguments.dropFirst(4).first {
                let rules = t.rules.filter { $0.chain == only }.map { $0.line() }
                return CommandOutput(status: 0, stdout: (["-P \(only) ACCEPT"] + rules).joined(separator: "\n") + "\n")
            }
            let builtin = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"].map { "-P \($0) ACCEPT" }
            let text = builtin + t.chains.map { "-N \($0)" } + t.rules.map { $0.line() }
            return CommandOutput(status: 0, stdout: text.joined(separator: "\n") + "\n")
        default:
            return nil
        }
    }

    private static func apply(_ line: String, to t: inout Table) {
        let words = line.split(separator: " ", maxSplits: 2).map(String.init)
        guard words.count >= 2 else { return }
        let chain = words[1]
        switch words[0] {
        case "-N": if !t.chains.contains(chain) { t.chains.append(chain) }
        case "-X": t.chains.removeAll { $0 == chain }
        case "-F": t.rules.removeAll { $0.chain == chain }
        case "-A": if let r = IPTablesRule(line: line) { t.rules.append(r) }
        case "-D":
            guard let r = IPTablesRule(line: "-A" + line.dropFirst(2)), let i = t.rules.firstIndex(of: r) else {
                return
            }
            t.rules.remove(at: i)
        case "-I":
            // -I CHAIN 1 args: at the top of the chain.
            guard var r = IPTablesRule(line: "-A" + line.dropFirst(2)) else { return }
            r.arguments.removeFirst()
            t.rules.insert(r, at: t.rules.firstIndex { $0.chain == chain } ?? t.rules.endIndex)
        default:
            // ":CHAIN - [0:0]" declares a user chain; with --noflush it is created or flushed.
            guard words[0].hasPrefix(":") else { return }
            let name = String(words[0].dropFirst())
            if !t.chains.contains(name) { t.chains.append(name) }
            t.rules.removeAll { $0.chain == name }
        }
    }
}
