// The flannel plugin's verbs in-process (CNIMain.dispatch), against a fake delegate that records
// what it was sent: no root, no namespaces. FlannelEndToEndTests runs the real bridge.

import CNI
import Flannel
import Foundation
import TestSupport
import Testing

@Suite struct FlannelPluginTests {
    @Test(arguments: ["0.3.1", "1.0.0", "1.1.0"])
    func addSavesTheDelegateConfigFirstAndReturnsTheDelegateResult(version: String) throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        let add = node.run("ADD", node.config(version: version, extra: #","delegate":{"hairpinMode":true}"#))
        #expect(add.exitCode == 0, "\(add.stdoutText)")
        let result = jsonObject(add.stdoutText)
        #expect(result["cniVersion"] as? String == version)
        #expect((result["ips"] as? [[String: Any]])?.first?["address"] as? String == "10.244.1.2/24")

        // The delegate got exactly the saved bytes, and they were on disk before it ran.
        #expect(node.calls.map(\.command) == ["ADD"])
        #expect(node.savedBeforeAdd)
        let saved = try #require(node.saved())
        #expect(node.calls.first?.stdin == saved)
        #expect(
            saved
                == #"{"cniVersion":"\#(version)","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}"#
        )

        let fm = FileManager.default
        #expect(try fm.attributesOfItem(atPath: node.dataDir)[.posixPermissions] as? Int == 0o700)
        #expect(try fm.attributesOfItem(atPath: node.dataDir + "/c1")[.posixPermissions] as? Int == 0o600)
        #expect(files(in: node.dataDir) == ["c1"])  // no temporary file left
    }

    @Test func addWithoutSubnetEnvAsksToTryAgainLater() throws {
        let node = try FakeNode()
        let add = node.run("ADD", node.config())
        #expect(add.code == 11)
        #expect(
            add.msg == "failed to load flannel 'subnet.env' file: open \(node.subnetFile): no such file or directory. "
                + "Check the flannel pod log for this node.")
        #expect(node.calls.isEmpty)
        #expect(files(in: node.dataDir).isEmpty)
        // An incomplete file is not transient: code 999, naming the missing key.
        try node.writeSubnetEnv("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPMASQ=true\n")
        let incomplete = node.run("ADD", node.config())
        #expect(incomplete.code == 999)
        #expect(incomplete.msg.contains("is missing FLANNEL_MTU"))
    }

    /// A failed delegate ADD keeps the saved config: the runtime's DEL replays it to undo
    /// whatever the delegate did before failing (plugins#426).
    @Test func failedDelegateAddKeepsTheSavedConfigForDel() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        try node.failNext("ADD")
        let add = node.run("ADD", node.config())
        #expect(add.code == 11)
        #expect(add.msg == "failed to delegate add: injected ADD failure")
        #expect(node.saved() != nil)
        #expect(node.run("DEL", node.config()).exitCode == 0)
        #expect(node.calls.map(\.command) == ["ADD", "DEL"])
        #expect(node.saved() == nil)
    }

    @Test func delReplaysTheSavedConfigEvenAfterSubnetEnvChanged() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        #expect(node.run("ADD", node.config()).exitCode == 0)
        let saved = try #require(node.saved())
        try FileManager.default.removeItem(atPath: node.subnetFile)
        let del = node.run("DEL", node.config())
        #expect(del.exitCode == 0, "\(del.stdoutText)")
        #expect(node.calls.map(\.command) == ["ADD", "DEL"])
        #expect(node.calls.last?.stdin == saved)
        #expect(node.saved() == nil)
        // Again: nothing saved any more, so success without calling the delegate.
        #expect(node.run("DEL", node.config()).exitCode == 0)
        #expect(node.calls.count == 2)
    }

    @Test func delOfAnUnknownContainerSucceedsWithoutTheDelegate() throws {
        let node = try FakeNode()
        let del = node.run("DEL", node.config(), containerID: "never-added")
        #expect(del.exitCode == 0)
        #expect(node.calls.isEmpty)
    }

    /// The reference removes the saved config even when the delegate's DEL failed, so the retry
    /// never reaches host-local and the IP leaks. Here the file stays until a DEL succeeds.
    @Test func failedDelegateDelKeepsTheSavedConfigUntilARetrySucceeds() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        #expect(node.run("ADD", node.config()).exitCode == 0)
        let saved = try #require(node.saved())
        try node.failNext("DEL")
        let del = node.run("DEL", node.config())
        #expect(del.code == 11)
        #expect(del.msg == "failed to delegate del: injected DEL failure")
        #expect(node.saved() == saved)
        let retry = node.run("DEL", node.config())
        #expect(retry.exitCode == 0, "\(retry.stdoutText)")
        #expect(node.calls.map(\.command) == ["ADD", "DEL", "DEL"])
        #expect(node.calls.last?.stdin == saved)
        #expect(node.saved() == nil)
    }

    /// A damaged saved config is deleted through the config rebuilt from the flannel config,
    /// then removed (the reference logs, keeps the file and leaks everything).
    @Test(arguments: [true, false])
    func delOfADamagedSaveDeletesThroughTheRebuiltConfig(subnetEnvPresent: Bool) throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        let conf = node.config(extra: #","ipam":{"dataDir":"/tmp/ipam-x"}"#)
        #expect(node.run("ADD", conf).exitCode == 0)
        try node.write(node.dataDir + "/c1", #"{"cniVersion":"1.1.0","na"#)
        if !subnetEnvPresent { try FileManager.default.removeItem(atPath: node.subnetFile) }
        let del = node.run("DEL", conf)
        #expect(del.exitCode == 0, "\(del.stdoutText)")
        let sent = jsonObject(try #require(node.calls.last?.stdin))
        #expect(node.calls.last?.command == "DEL")
        #expect(sent["name"] as? String == "cbr0")
        #expect((sent["ipam"] as? [String: Any])?["dataDir"] as? String == "/tmp/ipam-x")
        // Without subnet.env the masquerade rules are removed if there are any.
        #expect(sent["ipMasq"] as? Bool == !subnetEnvPresent)
        #expect(node.saved() == nil)
    }

    @Test func checkSendsTheSavedConfigWithThePrevResult() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        let add = node.run("ADD", node.config())
        #expect(add.exitCode == 0)
        let check = node.run("CHECK", String(node.config().dropLast()) + #","prevResult":"# + add.stdoutText + "}")
        #expect(check.exitCode == 0, "\(check.stdoutText)")
        let sent = jsonObject(try #require(node.calls.last?.stdin))
        #expect(node.calls.last?.command == "CHECK")
        #expect(sent["type"] as? String == "bridge")
        #expect(
            ((sent["prevResult"] as? [String: Any])?["ips"] as? [[String: Any]])?.first?["address"] as? String
                == "10.244.1.2/24")
        // A container flannel never added fails CHECK without calling the delegate.
        let unknown = node.run("CHECK", node.config(), containerID: "other")
        #expect(unknown.exitCode != 0)
        #expect(unknown.msg.contains("no saved delegate config for container other"))
        #expect(node.calls.count == 2)
    }

    @Test func statusIsNotAvailableUntilSubnetEnvExists() throws {
        let node = try FakeNode()
        let before = node.run("STATUS", node.config())
        #expect(before.code == 50)
        #expect(before.msg.contains("no such file or directory. Check the flannel pod log for this node."))
        #expect(node.calls.isEmpty)

        try node.writeSubnetEnv()
        let after = node.run("STATUS", node.config())
        #expect(after.exitCode == 0, "\(after.stdoutText)")
        // Forwarded to the delegate, with the config ADD would send.
        #expect(node.calls.map(\.command) == ["STATUS"])
        let sent = jsonObject(try #require(node.calls.first?.stdin))
        #expect((sent["ipam"] as? [String: Any])?["ranges"] as? [[[String: String]]] == [[["subnet": "10.244.1.0/24"]]])

        // The delegate's error is passed on with its code.
        try node.failAlways("STATUS")
        let delegateDown = node.run("STATUS", node.config())
        #expect(delegateDown.code == 11)
        #expect(delegateDown.msg.contains("injected STATUS failure"))
        // STATUS needs a 1.1.0 config.
        #expect(node.run("STATUS", node.config(version: "1.0.0")).code == 1)
    }

    @Test func statusIsNotAvailableWhenDataDirIsNotADirectory() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        try node.write(node.dataDir, "a file where the directory should be")
        #expect(node.run("STATUS", node.config()).code == 50)
        #expect(node.calls.isEmpty)
    }

    @Test func gcForwardsTheAttachmentsAndDropsStaleSavesOfThisNetworkOnly() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        for id in ["keep", "drop"] { #expect(node.run("ADD", node.config(), containerID: id).exitCode == 0) }
        #expect(node.run("ADD", node.config(name: "other-net"), containerID: "othernet").exitCode == 0)
        try node.write(node.dataDir + "/.crashed.tmp", "{")
        let valid =
            #","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"keep","ifname":"eth0"}]"#
        let gc = node.run("GC", node.config(extra: valid))
        #expect(gc.exitCode == 0, "\(gc.stdoutText)")
        let sent = jsonObject(try #require(node.calls.last?.stdin))
        #expect(node.calls.last?.command == "GC")
        #expect(
            (sent["cni.dev/valid-attachments"] as? [[String: String]]) == [["containerID": "keep", "ifname": "eth0"]])
        #expect((sent["cni.dev/attachments"] as? [[String: String]]) == [["containerID": "keep", "ifname": "eth0"]])
        #expect(sent["name"] as? String == "cbr0")
        #expect(files(in: node.dataDir) == ["keep", "othernet"])
    }

    @Test func gcWorksWithoutSubnetEnvAndKeepsSavesWhenTheDelegateFails() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        #expect(node.run("ADD", node.config(), containerID: "drop").exitCode == 0)
        try FileManager.default.removeItem(atPath: node.subnetFile)
        try node.failNext("GC")
        let valid = #","cni.dev/valid-attachments":[]"#
        #expect(node.run("GC", node.config(extra: valid)).code == 11)
        #expect(files(in: node.dataDir) == ["drop"])
        let gc = node.run("GC", node.config(extra: valid))
        #expect(gc.exitCode == 0, "\(gc.stdoutText)")
        let sent = jsonObject(try #require(node.calls.last?.stdin))
        #expect((sent["ipam"] as? [String: Any])?["ranges"] == nil)
        #expect(files(in: node.dataDir).isEmpty)
        // No list at all: nothing is known to be stale, so nothing is dropped.
        #expect(node.run("ADD", node.config(), containerID: "kept").exitCode != 0)  // no subnet.env
        try node.writeSubnetEnv()
        #expect(node.run("ADD", node.config(), containerID: "kept").exitCode == 0)
        #expect(node.run("GC", node.config()).exitCode == 0)
        #expect(files(in: node.dataDir) == ["kept"])
    }

    @Test func reAddReplacesTheSavedConfig() throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        #expect(node.run("ADD", node.config()).exitCode == 0)
        try node.writeSubnetEnv(exampleSubnetEnv.replacingOccurrences(of: "1450", with: "1400"))
        #expect(node.run("ADD", node.config()).exitCode == 0)
        #expect(node.saved()?.contains(#""mtu":1400"#) == true)
        #expect(files(in: node.dataDir) == ["c1"])
    }
}

/// No container ID can name a file outside dataDir.
@Suite struct PathEscapeTests {
    @Test(arguments: ["../x", "..", ".", "", "a/b", "/etc/passwd", "x\u{0}y", ".hidden", "-x", "a b"])
    func theStoreRefusesIDsThatAreNotPlainNames(id: String) throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = SavedConfigStore(directory: dir + "/data")
        #expect(throws: CNIError.self) { try store.path(for: id) }
        #expect(throws: CNIError.self) { try store.save(Array("{}".utf8), for: id) }
        #expect(throws: CNIError.self) { try store.load(id) }
        #expect(throws: CNIError.self) { try store.remove(id) }
        #expect(files(in: dir).isEmpty)
    }

    @Test func validIDsAreDirectChildren() throws {
        let store = SavedConfigStore(directory: "/var/lib/cni/flannel")
        #expect(try store.path(for: "4f3b2a1c") == "/var/lib/cni/flannel/4f3b2a1c")
        #expect(try store.path(for: "a..b") == "/var/lib/cni/flannel/a..b")
        #expect(try SavedConfigStore(directory: "/d/").path(for: "x_1-2.3") == "/d/x_1-2.3")
    }

    @Test(arguments: ["ADD", "DEL", "CHECK"])
    func theDispatcherRefusesAnEscapingIDBeforeTouchingFiles(command: String) throws {
        let node = try FakeNode()
        try node.writeSubnetEnv()
        let victim = node.root + "/victim"
        try node.write(victim, #"{"type":"bridge","name":"cbr0"}"#)
        for id in ["../victim", "../escape"] {
            let o = node.run(command, node.config(), containerID: id)
            #expect(o.code == 4, "\(o.stdoutText)")
            #expect(o.msg == "invalid characters in containerID")
        }
        #expect(FileManager.default.fileExists(atPath: victim))
        #expect(!FileManager.default.fileExists(atPath: node.root + "/escape"))
        #expect(files(in: node.dataDir).isEmpty)
        #expect(node.calls.isEmpty)
    }
}
