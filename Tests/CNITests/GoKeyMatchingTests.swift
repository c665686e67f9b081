// Config keys are read as Go's encoding/json reads them (issue 8 items 1, 12 and 14): an exact key
// first, else a key equal to it ignoring case; a known key of the wrong type is code 7 naming the
// key; and the dispatcher's own errors carry Go's codes and details.

import Addressing
import Testing

@testable import CNI

/// Runs `stdin` through the dispatcher and returns the error's (code, msg, details).
private func failure(_ stdin: String, command: String = "ADD") throws -> (code: Int, msg: String, details: String?) {
    let o = CNIMain.dispatch(FixedPlugin(), env: env(command), stdin: Array(stdin.utf8))
    #expect(o.exitCode == 1, "expected a failure, got \(o.stdoutText)")
    let e = try #require(CNIError(json: try JSON.parse(o.stdout)), "\(o.stdoutText)")
    return (e.code, e.msg, e.details)
}

private func request(_ stdin: String, command: String = "ADD") throws -> Request {
    try Request(env: CNIEnvironment(env(command)), stdin: Array(stdin.utf8), supported: SpecVersion.allCases)
}

@Suite struct GoKeyMatchingTests {
    @Test func wrongTypeNamesTheKeyAsWritten() throws {
        let o: [String: JSON] = ["HostPort": .string("80")]
        #expect(
            throws: CNIError(
                .invalidNetworkConfig,
                #"invalid config: "runtimeConfig.portMappings[0].HostPort" must be an integer, got "80""#)
        ) {
            try o.value("hostPort", as: Int.self, path: "runtimeConfig.portMappings[0].hostPort")
        }
    }

    /// The keys every plugin reads through Request, spelled as Go field names.
    @Test func requestKeysAreMatchedIgnoringCase() throws {
        let r = try request(
            #"""
            {"CNIVersion":"1.0.0","Name":"net1","Type":"bridge","IPAM":{"Type":"host-local"},
             "RuntimeConfig":{"portMappings":[]},"Capabilities":{"portMappings":true},
             "PrevResult":{"CNIVersion":"1.0.0","IPs":[{"Address":"10.1.0.5/24","Gateway":"10.1.0.1","Interface":0}],
                           "Interfaces":[{"Name":"eth0","Mac":"0a:00:00:00:00:01","Sandbox":"/run/netns/x"}],
                           "Routes":[{"Dst":"0.0.0.0/0","GW":"10.1.0.1"}],"DNS":{"Nameservers":["10.1.0.1"]}}}
            """#)
        #expect(r.name == "net1")
        #expect(r.version == .v1_0_0)
        #expect(r.type == "bridge")
        #expect(r.ipamType == "host-local")
        #expect(r.runtimeConfig["portMappings"] == .array([]))
        let prev = try #require(r.prevResult)
        #expect(
            prev.ips == [
                Result.IPConfig(address: IPNetwork("10.1.0.5/24")!, gateway: IPAddress("10.1.0.1"), interface: 0)
            ])
        #expect(prev.interfaces == [Result.Interface(name: "eth0", mac: "0a:00:00:00:00:01", sandbox: "/run/netns/x")])
        #expect(prev.routes == [Result.Route(dst: IPNetwork("0.0.0.0/0")!, gw: IPAddress("10.1.0.1"))])
        #expect(prev.dns.nameservers == ["10.1.0.1"])

        let gc = try Request(
            env: CNIEnvironment(["CNI_COMMAND": "GC", "CNI_PATH": "/x"]),
            stdin: conf("1.1.0", #","CNI.dev/Valid-Attachments":[{"ContainerID":"a","IfName":"eth0"}]"#),
            supported: SpecVersion.allCases)
        #expect(try gc.validAttachments == [Attachment(containerID: "a", ifname: "eth0")])
    }

    /// A legacy (0.2.0) result with Go's field names.
    @Test func legacyResultKeysAreMatchedIgnoringCase() throws {
        let j = try JSON.parse(
            Array(
                #"{"CNIVersion":"0.2.0","IP4":{"IP":"10.1.0.5/24","Gateway":"10.1.0.1","Routes":[{"Dst":"10.0.0.0/8"}]}}"#
                    .utf8))
        let r = try Result(json: j, assumedVersion: .v0_2_0)
        #expect(r.ips == [Result.IPConfig(address: IPNetwork("10.1.0.5/24")!, gateway: IPAddress("10.1.0.1"))])
        #expect(r.routes == [Result.Route(dst: IPNetwork("10.0.0.0/8")!)])
    }

    /// A delegate's error object read with Go's field names keeps its code.
    @Test func delegateErrorKeysAreMatchedIgnoringCase() throws {
        let e = try #require(CNIError(json: try JSON.parse(Array(#"{"Code":11,"Msg":"busy","Details":"later"}"#.utf8))))
        #expect(e == CNIError(code: 11, msg: "busy", details: "later"))
    }

    /// Issue 8 item 12: each known key of the wrong type is code 7 naming the key, never ignored.
    @Test(arguments: [
        (#","ipam":"x""#, "ipam"),
        (#","ipam":{"type":5}"#, "ipam.type"),
        (#","IPAM":["host-local"]"#, "IPAM"),
        (#","runtimeConfig":5"#, "runtimeConfig"),
        (#","prevResult":"x""#, "prevResult"),
        (#","capabilities":{"portMappings":"yes"}"#, "capabilities.portMappings"),
        (#","args":[]"#, "args"),
        (#","dns":{"nameservers":"8.8.8.8"}"#, "dns.nameservers"),
    ])
    func wrongTypeIsCode7NamingTheKey(extra: String, key: String) throws {
        let f = try failure(String(decoding: conf("1.0.0", extra), as: UTF8.self))
        #expect(f.code == 7)
        #expect(f.msg.contains(key), "\(f.msg)")
    }

    @Test func wrongTypeOfTypeIsCode7() throws {
        let f = try failure(#"{"cniVersion":"1.0.0","name":"n","type":5}"#)
        #expect(f.code == 7)
        #expect(f.msg == #"invalid config: "type" must be a string, got 5"#)
    }

    /// Issue 8 item 14: `null` is Go's "missing network name" (7); a name or cniVersion that is not
    /// a string fails the skel's decode (6).
    @Test func nullConfigAndNumericNameHaveGoCodes() throws {
        let null = try failure("null")
        #expect(null.code == 7 && null.msg == "missing network name")
        #expect(try failure(" null ").code == 7)
        let name = try failure(#"{"cniVersion":"1.0.0","name":5}"#)
        #expect(name.code == 6)
        #expect(name.msg.contains("\"name\""), "\(name.msg)")
        #expect(try failure(#"{"cniVersion":1,"name":"n"}"#).code == 6)
        #expect(try failure(#"{"cniVersion":"1.0.0","Name":5}"#).code == 6)
        #expect(try failure("[]").code == 6)
        #expect(try failure(#""net""#).code == 6)
    }

    /// Issue 8 item 14: Go prints the details with %q: `config is "9.9.9", plugin supports ["0.1.0" ...]`.
    @Test func incompatibleVersionDetailsAreGos() throws {
        let f = try failure(#"{"cniVersion":"9.9.9","name":"n"}"#)
        #expect(f.code == 1)
        #expect(f.msg == "incompatible CNI versions")
        #expect(
            f.details
                == #"config is "9.9.9", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#)
        let odd = try failure(#"{"cniVersion":"1\"\n","name":"n"}"#)
        #expect(odd.details?.hasPrefix(#"config is "1\"\n", plugin supports ["#) == true, "\(odd.details ?? "")")
        // Printed once as JSON: the details string holds no backslash before its quotes.
        let o = CNIMain.dispatch(
            FixedPlugin(), env: env("ADD"), stdin: Array(#"{"cniVersion":"9.9.9","name":"n"}"#.utf8))
        #expect(
            o.stdoutText.contains(#""details" : "config is \"9.9.9\", plugin supports [\"0.1.0\" \"0.2.0\""#),
            "\(o.stdoutText)")
    }
}
