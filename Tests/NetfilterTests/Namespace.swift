// A network namespace per privileged test. Every command the library runs goes through
// `ip netns exec <name>` (a decorating CommandRunner), so the library itself stays unaware of
// namespaces, nothing depends on which thread a test runs on, and a command can never reach the
// root namespace's tables: if the namespace is gone, `ip netns exec` fails.
// (TestSupport is growing a similar fixture; this one needs only Netfilter.)

import Testing

@testable import Netfilter

#if canImport(Glibc)
    import Spawn
    import Glibc
#endif

/// Runs every command inside the named network namespace.
struct NamespacedRunner: CommandRunner {
    let netns: String
    let base = SystemCommandRunner(timeout: 30)

    func run(_ command: Command) throws(NetfilterError) -> CommandOutput {
        try base.run(
            Command(
                "ip", ["netns", "exec", netns, command.executable] + command.arguments,
                stdin: command.stdin))
    }
}

struct TestNamespace {
    let name: String
    var runner: NamespacedRunner { NamespacedRunner(netns: name) }
    var path: String { "/run/netns/\(name)" }

    /// Root, and iproute2 to make namespaces: without them the privileged suites are skipped.
    static let available = getuid() == 0 && Spawn.lookPath("ip") != nil

    /// Creates `count` namespaces `podnet-nf-<random>[-i]`, runs `body`, and deletes them
    /// whatever happens.
    static func with<T>(_ count: Int = 1, _ body: ([TestNamespace]) throws -> T) throws -> T {
        let base = "podnet-nf-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        var made: [TestNamespace] = []
        defer {
            for ns in made {
                if let out = try? SystemCommandRunner().run(Command("ip", ["netns", "del", ns.name])), out.status != 0 {
                    Issue.record("could not delete network namespace \(ns.name): \(out.stderr)")
                }
            }
        }
        for i in 0..<count {
            let ns = TestNamespace(name: i == 0 ? base : "\(base)-\(i)")
            _ = try SystemCommandRunner().succeed(Command("ip", ["netns", "add", ns.name]))
            made.append(ns)
        }
        return try body(made)
    }

    /// Runs a command in the namespace and returns its stdout; throws unless it exits 0.
    @discardableResult
    func run(_ executable: String, _ arguments: String...) throws -> String {
        try runner.succeed(Command(executable, arguments))
    }

    /// `iptables -t nat -S` and `ip6tables -t nat -S`, one line each rule.
    func natRules() throws -> [String] {
        try (run("iptables", "-w", "-t", "nat", "-S") + run("ip6tables", "-w", "-t", "nat", "-S"))
            .split(separator: "\n").map(String.init).filter { !$0.hasPrefix("-P ") }
    }
}
