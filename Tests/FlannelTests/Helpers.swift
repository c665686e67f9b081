// Fixtures for the flannel tests: subnet.env files, flannel configs, and a fake delegate that
// records what flannel sent it, for the in-process tests that need no root.

import CNI
import Flannel
import Foundation
import TestSupport
import Testing

/// The subnet.env of §5.3's example (flanneld with --ip-masq on a vxlan overlay).
let exampleSubnetEnv = """
    FLANNEL_NETWORK=10.244.0.0/16
    FLANNEL_SUBNET=10.244.1.1/24
    FLANNEL_MTU=1450
    FLANNEL_IPMASQ=true

    """

/// The conflist shipped in netconf/, read as a fixture.
func netconfFile(_ name: String) throws -> String {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    return try String(contentsOf: root.appendingPathComponent("netconf/\(name)"), encoding: .utf8)
}

/// The flannel entry of netconf/40-flannel.conflist as the runtime hands it to the plugin (name and
/// cniVersion copied in), with `set` merged on top (test paths, another cniVersion).
func conflistFlannelConfig(_ set: [String: Any] = [:]) throws -> String {
    let list = try #require(
        try JSONSerialization.jsonObject(with: Data(netconfFile("40-flannel.conflist").utf8)) as? [String: Any])
    let plugins = try #require(list["plugins"] as? [[String: Any]])
    var conf = try #require(plugins.first { $0["type"] as? String == "flannel" })
    conf["name"] = list["name"]
    conf["cniVersion"] = list["cniVersion"]
    conf.merge(set) { $1 }
    return String(decoding: try JSONSerialization.data(withJSONObject: conf, options: [.sortedKeys]), as: UTF8.self)
}

/// A request as the dispatcher would build it, for testing FlannelConfig directly.
func request(_ config: String, command: String = "ADD", containerID: String = "c1") throws -> Request {
    let env = try CNIEnvironment([
        "CNI_COMMAND": command, "CNI_CONTAINERID": containerID, "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent",
    ])
    return try Request(env: env, stdin: Array(config.utf8), supported: SpecVersion.allCases)
}

func jsonObject(_ s: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(s.utf8))) as? [String: Any] ?? [:]
}

/// A temporary node directory with subnet.env, dataDir and a fake `bridge` delegate in bin/.
///
/// The fake delegate stores each invocation's stdin as calls/<n>-<COMMAND>.json, notes on ADD
/// whether flannel's saved config already existed (calls/<n>-saved-before-add), fails a command
/// with code 11 while a file fail-<COMMAND> exists (fail-<COMMAND>-once: only the next time), and
/// answers ADD with a one-address result.
final class FakeNode {
    let root: String
    var subnetFile: String { root + "/subnet.env" }
    var dataDir: String { root + "/data" }
    var bin: String { root + "/bin" }

    init() throws {
        root = try temporaryDirectory()
        try FileManager.default.createDirectory(atPath: root + "/calls", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let script = """
            #!/bin/sh
            d='\(root)'
            n=$(ls "$d/calls" | wc -l)
            n=$(printf '%03d' "$n")
            cat > "$d/calls/$n-$CNI_COMMAND.json"
            if [ "$CNI_COMMAND" = ADD ] && [ -f '\(dataDir)'/"$CNI_CONTAINERID" ]; then : > "$d/calls/$n-saved-before-add"; fi
            if [ -e "$d/fail-$CNI_COMMAND-once" ]; then rm -f "$d/fail-$CNI_COMMAND-once"; fail=1; fi
            if [ -e "$d/fail-$CNI_COMMAND" ] || [ -n "$fail" ]; then
              echo '{"code":11,"msg":"injected '"$CNI_COMMAND"' failure"}'; exit 1
            fi
            if [ "$CNI_COMMAND" = ADD ]; then
              echo '{"ips":[{"address":"10.244.1.2/24","gateway":"10.244.1.1"}],"routes":[{"dst":"10.244.0.0/16"}]}'
            fi
            exit 0

            """
        try writeExecutable(bin + "/bridge", script)
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func write(_ path: String, _ text: String) throws {
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    func writeSubnetEnv(_ text: String = exampleSubnetEnv) throws { try write(subnetFile, text) }
    func failNext(_ command: String) throws { try write(root + "/fail-\(command)-once", "") }
    func failAlways(_ command: String) throws { try write(root + "/fail-\(command)", "") }

    /// A flannel config pointing at this node's files; `extra` is spliced in (",..." keys).
    func config(version: String = "1.1.0", name: String = "cbr0", extra: String = "") -> String {
        #"{"cniVersion":"\#(version)","name":"\#(name)","type":"flannel","subnetFile":"\#(subnetFile)","dataDir":"\#(dataDir)"\#(extra)}"#
    }

    func env(_ command: String, containerID: String = "c1") -> [String: String] {
        var e = ["CNI_COMMAND": command, "CNI_PATH": bin, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        if command != "GC" && command != "STATUS" {
            e["CNI_CONTAINERID"] = containerID
            e["CNI_NETNS"] = "/run/netns/x"
            e["CNI_IFNAME"] = "eth0"
        }
        return e
    }

    /// Runs flannel in-process, as the dispatcher does for the binary.
    func run(_ command: String, _ config: String, containerID: String = "c1") -> Outcome {
        CNIMain.dispatch(Flannel(), env: env(command, containerID: containerID), stdin: Array(config.utf8))
    }

    /// The delegate's invocations: command and stdin, in order.
    var calls: [(command: String, stdin: String)] {
        files(in: root + "/calls").filter { $0.hasSuffix(".json") }.map { f in
            let command = String(f.dropFirst(4).dropLast(5))
            let stdin = (try? String(contentsOfFile: root + "/calls/" + f, encoding: .utf8)) ?? ""
            return (command, stdin)
        }
    }

    var savedBeforeAdd: Bool { files(in: root + "/calls").contains { $0.hasSuffix("saved-before-add") } }

    func saved(_ containerID: String = "c1") -> String? {
        try? String(contentsOfFile: dataDir + "/" + containerID, encoding: .utf8)
    }
}

extension Outcome {
    var code: Int? { exitCode == 0 ? nil : jsonObject(stdoutText)["code"] as? Int }
    var msg: String { jsonObject(stdoutText)["msg"] as? String ?? "" }
}
