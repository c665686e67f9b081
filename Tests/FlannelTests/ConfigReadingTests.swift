// flannel reads its config as the Go plugin's encoding/json does (issue 8 items 1 and 12), and
// saves the delegate config for any container ID a runtime may pass (item 14).

import CNI
import Flannel
import Foundation
import TestSupport
import Testing

@Suite struct FlannelConfigReadingTests {
    /// Its own keys as Go field names (NetConf's struct fields); the delegate's keys stay as they
    /// are, since the reference keeps `delegate` and `ipam` as Go maps.
    @Test func keysAreMatchedIgnoringCase() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        let conf = #"""
            {"CNIVersion":"1.0.0","Name":"cbr0","Type":"flannel","SubnetFile":"\#(node.subnetFile)","DataDir":"\#(node.dataDir)",
             "Delegate":{"hairpinMode":true},"IPAM":{"routes":[{"Dst":"10.96.0.0/12"}]},"RuntimeConfig":{"portMappings":[]}}
            """#
        let add = node.run("ADD", conf)
        #expect(add.exitCode == 0, "\(add.stdoutText)")
        #expect(
            node.saved()
                == #"{"cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.96.0.0/12"},{"dst":"10.244.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1450,"name":"cbr0","runtimeConfig":{"portMappings":[]},"type":"bridge"}"#
        )
    }

    /// Item 12: known keys of the wrong type are code 7 naming the key, and nothing is saved.
    @Test(arguments: [
        (#","delegate":"bridge""#, "delegate"),
        (#","ipam":"host-local""#, "ipam"),
        (#","ipam":{"routes":"10.96.0.0/12"}"#, "ipam.routes"),
        (#","subnetFile":5"#, "subnetFile"),
        (#","runtimeConfig":[]"#, "runtimeConfig"),
    ])
    func wrongTypesAreCode7(extra: String, key: String) throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        let add = node.run("ADD", node.config(extra: extra))
        #expect(add.code == 7, "\(add.stdoutText)")
        #expect(add.msg.contains("\"\(key)\""), "\(add.msg)")
        #expect(node.calls.isEmpty)
        #expect(files(in: node.dataDir).isEmpty)
    }

    /// Item 14: container IDs of 251-254 bytes made the temporary name too long for a file name.
    /// The saved config keeps the reference's name, `<dataDir>/<containerID>`, and DEL replays it.
    @Test(arguments: [64, 250, 251, 252, 254, 255])
    func longContainerIDsAreSavedUnderTheirOwnName(length: Int) throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        let id = "c" + String(repeating: "0123456789abcdef", count: 16).prefix(length - 1)
        let add = node.run("ADD", node.config(), containerID: id)
        #expect(add.exitCode == 0, "\(add.stdoutText)")
        #expect(files(in: node.dataDir) == [id])  // no temporary file left
        #expect(node.saved(id) == node.calls.first?.stdin)
        let del = node.run("DEL", node.config(), containerID: id)
        #expect(del.exitCode == 0, "\(del.stdoutText)")
        #expect(node.calls.map(\.command) == ["ADD", "DEL"])
        #expect(files(in: node.dataDir).isEmpty)
    }

    @Test func longTemporaryNamesStayWithinNameMaxAndDiffer() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SavedConfigStore(directory: dir)
        let a = String(repeating: "a", count: 254), b = String(repeating: "a", count: 253) + "b"
        for id in [a, b] {
            try store.save(Array(#"{"type":"bridge"}"#.utf8), for: id)
            #expect(try store.load(id) == Array(#"{"type":"bridge"}"#.utf8))
        }
        #expect(files(in: dir) == [a, b].sorted())
    }
}
