// Delegation: finding the plugin in CNI_PATH, passing its result or error through, the time limit.

import FoundationEssentials
import Glibc
import TestSupport
import Testing

@testable import CNI

@Suite struct DelegateTests {
    /// A CNI_PATH folder holding one shell-script plugin `fake`.
    func withFakePlugin(_ script: String, _ body: (String) throws -> Void) throws {
        let dir = "/tmp/podnet-delegate-\(UInt32.random(in: 0...UInt32.max))"
        mkdir(dir, 0o755)
        defer { unlink(dir + "/fake"); rmdir(dir) }
        let text = "#!/bin/sh\n" + script + "\n"
        try writeExecutable(dir + "/fake", text)
        try body(dir)
    }

    func request(_ path: String, _ extra: [String: String] = [:]) throws -> Request {
        var e = [
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
            "CNI_PATH": "/nonexistent:" + path,
        ]
        e.merge(extra) { $1 }
        return try Request(
            env: CNIEnvironment(e), stdin: Array(#"{"cniVersion":"1.0.0","name":"n"}"#.utf8),
            supported: SpecVersion.allCases)
    }

    @Test func resultAndEnvironmentPassThrough() throws {
        // The delegate echoes what it was given: CNI_COMMAND overridden, stdin unchanged.
        try withFakePlugin(
            #"read -r conf; echo "{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.0.0.9/24\"}],\"dns\":{\"domain\":\"$CNI_COMMAND-$CNI_CONTAINERID\"}}""#
        ) { dir in
            let r = try Delegate.add("fake", request: try request(dir))
            #expect(r.ips.first?.address.description == "10.0.0.9/24")
            #expect(r.dns.domain == "ADD-c1")
        }
    }

    @Test func delegateErrorKeepsItsCode() throws {
        try withFakePlugin(#"echo '{"code":11,"msg":"busy","details":"later"}'; exit 1"#) { dir in
            #expect(throws: CNIError(code: 11, msg: "busy", details: "later")) {
                try Delegate.run("fake", command: .del, request: try request(dir))
            }
        }
        try withFakePlugin("echo boom >&2; exit 3") { dir in
            #expect(throws: CNIError(.internal, "plugin fake failed (exit status 3): boom")) {
                try Delegate.run("fake", command: .del, request: try request(dir))
            }
        }
    }

    @Test func slowDelegateIsKilledWithCode11() throws {
        try withFakePlugin("sleep 5") { dir in
            let started = Date()
            do {
                try Delegate.run("fake", command: .del, request: try request(dir, ["PODNET_DELEGATE_TIMEOUT": "0.3"]))
                Issue.record("a delegate that sleeps past the limit must fail")
            } catch {
                #expect((error as? CNIError)?.code == CNIError.Code.tryAgainLater.rawValue)
            }
            #expect(Date().timeIntervalSince(started) < 3)
        }
    }

    @Test func missingPluginIsNamed() throws {
        #expect(throws: CNIError.self) { try Delegate.find("nope", in: ["/tmp"]) }
        #expect(throws: CNIError(.invalidNetworkConfig, "invalid plugin name \"../bin/sh\"")) {
            try Delegate.find("../bin/sh", in: ["/tmp"])
        }
    }
}
