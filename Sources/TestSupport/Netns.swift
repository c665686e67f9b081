// Network namespaces for privileged tests. Each test makes its own and always deletes it.

import Foundation

/// A named network namespace (`ip netns add`), deleted by `withNamespaces` even when the body throws.
public struct TestNamespace: Sendable {
    public let name: String
    public var path: String { "/run/netns/\(name)" }

    /// The namespace of this name; `ip netns add` makes it (see `withNamespaces`).
    public init(name: String) { self.name = name }

    /// Runs a command line inside the namespace.
    @discardableResult
    public func sh(_ line: String) throws -> String {
        try TestSupport.sh("ip netns exec \(name) sh -c '\(line.replacingOccurrences(of: "'", with: "'\\''"))'")
    }
}

/// Creates `count` fresh namespaces with loopback up, runs `body`, and deletes them afterwards
/// whatever happens. Names are `podnet-t-<random>` so a leftover is recognisable.
public func withNamespaces<T>(_ count: Int, _ body: ([TestNamespace]) throws -> T) throws -> T {
    var made: [TestNamespace] = []
    defer { for ns in made { _ = try? sh("ip netns delete \(ns.name)") } }
    for _ in 0..<count {
        let ns = TestNamespace(name: "podnet-t-\(UInt32.random(in: 0...UInt32.max))")
        try sh("ip netns add \(ns.name)")
        made.append(ns)
        try ns.sh("ip link set lo up")
    }
    return try body(made)
}

/// True when running as root: privileged tests need it. Callers record a visible skip otherwise.
public var isRoot: Bool { getuid() == 0 }
