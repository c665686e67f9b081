// The dispatcher in-process: environment validation, config validation, verb gating by version,
// result printing per version, and the error JSON with the spec's codes.

import Addressing
import FoundationEssentials
import Testing

@testable import CNI

/// A plugin that returns one fixed result and records nothing: enough to exercise the dispatcher.
struct FixedPlugin: CNIPlugin {
    var result = Result(
        interfaces: [.init(name: "eth0", mac: "0a:00:00:00:00:01", sandbox: "/run/netns/x")],
        ips: [.init(address: IPNetwork("10.1.0.5/24")!, gateway: IPAddress("10.1.0.1"), interface: 0)],
        routes: [.init(dst: IPNetwork("0.0.0.0/0")!)])
    var failWith: CNIError?
    func add(_ r: Request) throws -> Result { if let failWith { throw failWith }; return result }
    func del(_ r: Request) throws {}
    func check(_ r: Request) throws {}
    func gc(_ r: Request) throws {}
    func status(_ r: Request) throws { if let failWith { throw failWith } }
}

func env(_ command: String, _ overrides: [String: String] = [:]) -> [String: String] {
    var e = [
        "CNI_COMMAND": command, "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
    ]
    e.merge(overrides) { $1 }
    return e.filter { !$0.value.isEmpty }
}

func conf(_ version: String = "1.0.0", _ extra: String = "") -> [UInt8] {
    Array(#"{"cniVersion":"\#(version)","name":"net1","type":"fixed"\#(extra)}"#.utf8)
}

func decode(_ o: Outcome) throws -> [String: JSON] {
    try #require(try JSON.parse(o.stdout).objectValue)
}

@Suite struct DispatcherTests {
    @Test func versionPrintsSupportedVersions() throws {
        let o = CNIMain.dispatch(FixedPlugin(), env: ["CNI_COMMAND": "VERSION"], stdin: [])
        #expect(o.exitCode == 0)
        let j = try decode(o)
        #expect(j["cniVersion"] == .string("1.1.0"))
        #expect(j["supportedVersions"]?.arrayValue?.count == 7)
    }

    @Test(arguments: SpecVersion.allCases)
    func addPrintsResultInConfigVersion(version: SpecVersion) throws {
        let o = CNIMain.dispatch(FixedPlugin(), env: env("ADD"), stdin: conf(version.rawValue))
        #expect(o.exitCode == 0, "\(o.stdoutText)")
        let j = try decode(o)
        #expect(j["cniVersion"] == .string(version.rawValue))
        switch version.layout {
        case .legacy:
            #expect(j["ip4"]?["ip"] == .string("10.1.0.5/24"))
            #expect(j["interfaces"] == nil)
        case .v04:
            #expect(j["ips"]?.arrayValue?.first?["version"] == .string("4"))
            #expect(j["dns"] == .object([:]))
        case .v1:
            #expect(j["ips"]?.arrayValue?.first?["version"] == nil)
            #expect(j["ips"]?.arrayValue?.first?["interface"] == .int(0))
            #expect(j["dns"] == nil)
        }
    }

    @Test func errorCodes() throws {
        let p = FixedPlugin()
        func code(_ e: [String: String], _ stdin: [UInt8]) throws -> (Int64, String) {
            let o = CNIMain.dispatch(p, env: e, stdin: stdin)
            #expect(o.exitCode != 0)
            let j = try decode(o)
            guard case .int(let c) = j["code"] else { throw CNIError(.internal, "no code in \(o.stdoutText)") }
            return (c, j["msg"]?.stringValue ?? "")
        }
        // 1: unknown version, CHECK below 0.4.0, GC and STATUS below 1.1.0
        #expect(try code(env("ADD"), conf("9.9.9")) == (1, "incompatible CNI versions"))
        #expect(try code(env("CHECK"), conf("0.3.1")) == (1, "config version does not allow CHECK"))
        #expect(try code(env("GC"), conf("1.0.0")) == (1, "config version does not allow GC"))
        #expect(try code(env("STATUS"), conf("0.4.0")) == (1, "config version does not allow STATUS"))
        // 4: missing variables (all named), bad container ID, bad ifname, unknown command, bad CNI_ARGS
        #expect(
            try code(["CNI_COMMAND": "ADD"], conf()) == (
                4, "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
            ))
        #expect(try code(env("ADD", ["CNI_CONTAINERID": "a b"]), conf()) == (4, "invalid characters in containerID"))
        #expect(try code(env("ADD", ["CNI_CONTAINERID": "../etc"]), conf()) == (4, "invalid characters in containerID"))
        #expect(try code(env("ADD", ["CNI_IFNAME": "0123456789abcdef"]), conf()) == (4, "interface name is too long"))
        #expect(try code(env("ADD", ["CNI_IFNAME": "eth/0"]), conf()).0 == 4)
        #expect(try code(env("ADD", ["CNI_IFNAME": "eth 0"]), conf()).0 == 4)
        #expect(try code(env("ADD", ["CNI_IFNAME": ".."]), conf()).0 == 4)
        #expect(try code(env("FOO"), conf()) == (4, "unknown CNI_COMMAND: FOO"))
        #expect(try code(env("ADD", ["CNI_NETNS": "relative/path"]), conf()).0 == 4)
        // 6: not JSON; 7: missing or invalid name, wrongly typed keys
        #expect(try code(env("ADD"), Array("not json".utf8)).0 == 6)
        #expect(try code(env("ADD"), Array(#"{"cniVersion":"1.0.0","type":"x"}"#.utf8)) == (7, "missing network name"))
        #expect(
            try code(env("ADD"), Array(#"{"cniVersion":"1.0.0","name":"a/b"}"#.utf8)) == (
                7, "invalid characters found in network name"
            ))
        // Plugin errors keep their own code (50 from STATUS) and anything else becomes 999.
        let unavailable = FixedPlugin(failWith: CNIError(.notAvailable, "no subnet yet"))
        let o = CNIMain.dispatch(unavailable, env: env("STATUS"), stdin: conf("1.1.0"))
        #expect(try decode(o)["code"] == .int(50))
        #expect(try decode(o)["cniVersion"] == .string("1.1.0"))
        struct Boom: Error {}
        struct Throwing: CNIPlugin {
            func add(_ r: Request) throws -> Result { throw Boom() }
            func del(_ r: Request) throws {}
            func check(_ r: Request) throws {}
            func gc(_ r: Request) throws {}
            func status(_ r: Request) throws {}
        }
        let t = CNIMain.dispatch(Throwing(), env: env("ADD"), stdin: conf())
        #expect(try decode(t)["code"] == .int(999))
    }

    @Test func emptyContainerIDIsCode3() {
        #expect(throws: CNIError(.unknownContainer, "missing containerID")) {
            try CNIEnvironment.validateContainerID("")
        }
    }

    @Test func gcAndStatusNeedOnlyPath() throws {
        let e = ["CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin", "CNI_CONTAINERID": "", "CNI_IFNAME": ""]
        #expect(CNIMain.dispatch(FixedPlugin(), env: e, stdin: conf("1.1.0")).exitCode == 0)
    }

    @Test func cniArgsUnknownKeysNeedIgnoreUnknown() throws {
        var e = try CNIEnvironment(env("ADD", ["CNI_ARGS": "IP=10.0.0.5;K8S_POD_NAME=x"]))
        #expect(throws: CNIError.self) { try e.arg("IP", known: ["IP"]) }
        e = try CNIEnvironment(env("ADD", ["CNI_ARGS": "IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=x"]))
        #expect(try e.arg("IP", known: ["IP"]) == "10.0.0.5")
        #expect(throws: CNIError.self) { try CNIEnvironment(env("ADD", ["CNI_ARGS": "IP"])) }
    }

    @Test func validAttachmentsAcceptsBothSpellings() throws {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let r = try Request(
                env: CNIEnvironment(["CNI_COMMAND": "GC", "CNI_PATH": "/x"]),
                stdin: conf("1.1.0", #","\#(key)":[{"containerID":"a","ifname":"eth0"}]"#),
                supported: SpecVersion.allCases)
            #expect(try r.validAttachments == [Attachment(containerID: "a", ifname: "eth0")])
        }
        let none = try Request(
            env: CNIEnvironment(["CNI_COMMAND": "GC", "CNI_PATH": "/x"]), stdin: conf("1.1.0"),
            supported: SpecVersion.allCases)
        #expect(try none.validAttachments == nil)
    }
}
