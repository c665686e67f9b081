// flannel end to end: the built flannel binary delegating to the built bridge and host-local, run
// as a runtime runs them inside a namespace that plays the node (`ip netns exec`), with pods in
// other namespaces. subnet.env, flannel's dataDir and host-local's store live in a temp dir.
// Everything is deleted afterwards, whatever happens.

import Foundation
import TestSupport
import Testing

private let allVersions = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

/// This node's subnet.env: a /24 of a /16 overlay, an MTU the kernel would not pick by itself.
private func subnetEnv(ipMasq: Bool = true) -> String {
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1410\nFLANNEL_IPMASQ=\(ipMasq)\n"
}

/// A node: the namespace playing the host and the temp dir holding flannel's files.
struct FlannelNode {
    let host: TestNamespace
    let root: String
    var subnetFile: String { root + "/subnet.env" }
    var dataDir: String { root + "/flannel" }
    var ipamDir: String { root + "/ipam" }
    /// host-local's reservations of network cbr0 (the conflist's name).
    var store: String { ipamDir + "/cbr0" }

    /// netconf/40-flannel.conflist's flannel entry, pointed at this node's files.
    func config(version: String = "1.1.0", extra: [String: Any] = [:]) throws -> String {
        var set: [String: Any] = [
            "cniVersion": version, "subnetFile": subnetFile, "dataDir": dataDir,
            "ipam": ["dataDir": ipamDir],
        ]
        set.merge(extra) { $1 }
        return try conflistFlannelConfig(set)
    }

    func writeSubnetEnv(ipMasq: Bool = true) throws {
        try writeSubnetEnv(subnetEnv(ipMasq: ipMasq))
    }

    func writeSubnetEnv(_ text: String) throws {
        try text.write(toFile: subnetFile, atomically: false, encoding: .utf8)
    }

    func run(_ command: String, _ call: PluginCall, _ config: String) throws -> PluginResult {
        try runPlugin("flannel", command, call, config: config, host: host)
    }

    func saved(_ id: String) -> Bool { FileManager.default.fileExists(atPath: dataDir + "/" + id) }
}

func withFlannelNode<T>(pods: Int, _ body: (FlannelNode, [TestNamespace]) throws -> T) throws -> T {
    let root = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: root) }
    return try withNamespaces(pods + 1) { ns in try body(FlannelNode(host: ns[0], root: root), Array(ns.dropFirst())) }
}

/// The first IPv4 address of a result, in any version's layout.
private func firstAddress(_ r: PluginResult) -> String? {
    let j = r.json
    if let ip4 = j["ip4"] as? [String: Any] { return ip4["ip"] as? String }
    return (j["ips"] as? [[String: Any]])?.first?["address"] as? String
}

private func addresses(_ ns: TestNamespace, _ ifname: String = "eth0") throws -> [String] {
    try ns.sh("ip -o -4 addr show dev \(ifname)").split(separator: "\n").compactMap { line in
        let words = line.split(separator: " ")
        return words.firstIndex(of: "inet").map { String(words[$0 + 1]) }
    }
}

func hasEth0(_ ns: TestNamespace) throws -> Bool { try ns.sh("ip -o link show").contains(" eth0@") }

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct FlannelEndToEndTests {
    @Test(arguments: allVersions)
    func podGetsAnAddressOfTheNodeSubnetAndDelFreesIt(version: String) throws {
        try withFlannelNode(pods: 1) { node, pods in
            try node.writeSubnetEnv()
            let call = PluginCall(containerID: "pod1", netns: pods[0].path)
            let conf = try node.config(version: version)
            let add = try node.run("ADD", call, conf)
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")
            #expect(add.json["cniVersion"] as? String == version)
            let ip = try #require(firstAddress(add))
            // Inside FLANNEL_SUBNET, on eth0 with FLANNEL_MTU, with a route to FLANNEL_NETWORK.
            #expect(ip.hasPrefix("10.244.7.") && ip.hasSuffix("/24"), "\(ip)")
            #expect(try addresses(pods[0]) == [ip])
            #expect(try pods[0].sh("ip -o link show eth0").contains("mtu 1410"))
            #expect(try pods[0].sh("ip route show 10.244.0.0/16").contains("via 10.244.7.1 dev eth0"))
            // The conflist's delegate keys: isDefaultGateway and hairpinMode.
            #expect(try pods[0].sh("ip route show default").contains("via 10.244.7.1"))
            let hostVeth = try node.host.sh("ip -o link show master cni0").split(separator: ":")[1]
                .split(separator: "@")[0].trimmingCharacters(in: .whitespaces)
            #expect(try node.host.sh("cat /sys/class/net/\(hostVeth)/brport/hairpin_mode").hasPrefix("1"))
            #expect(try addresses(node.host, "cni0") == ["10.244.7.1/24"])
            #expect(reservations(in: node.store) == [String(ip.split(separator: "/")[0])])
            #expect(node.saved("pod1"))

            let del = try node.run("DEL", call, conf)
            #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!node.saved("pod1"))
            #expect(try !hasEth0(pods[0]))
            // Repeated DEL: nothing saved, nothing to do, success.
            #expect(try node.run("DEL", call, conf).status == 0)
        }
    }

    /// The delegate's DEL is made to fail once by a wrapper `bridge` placed before the real one in
    /// CNI_PATH: it fails while a marker file exists (removing it), and otherwise execs the real
    /// bridge, which finds host-local further down CNI_PATH. (Making host-local's directory
    /// read-only would not do: root writes through permission bits.)
    @Test func failingDelegateDelKeepsTheSavedConfigAndARetryCleansUp() throws {
        try withFlannelNode(pods: 1) { node, pods in
            try node.writeSubnetEnv()
            let wrapDir = node.root + "/wrap", marker = node.root + "/fail-next-del"
            try FileManager.default.createDirectory(atPath: wrapDir, withIntermediateDirectories: true)
            try writeExecutable(
                wrapDir + "/bridge",
                """
                #!/bin/sh
                if [ "$CNI_COMMAND" = DEL ] && [ -e '\(marker)' ]; then
                  rm -f '\(marker)'
                  echo '{"code":11,"msg":"injected DEL failure"}'
                  exit 1
                fi
                exec '\(pluginDirectory)/bridge' "$@"

                """)
            let call = PluginCall(containerID: "pod1", netns: pods[0].path, path: wrapDir + ":" + pluginDirectory)
            let conf = try node.config()
            #expect(try node.run("ADD", call, conf).status == 0)
            #expect(reservations(in: node.store).count == 1)

            try Data().write(to: URL(fileURLWithPath: marker))
            let failed = try node.run("DEL", call, conf)
            #expect(failed.errorCode == 11, "\(failed.stdout)")
            #expect(node.saved("pod1"))
            #expect(reservations(in: node.store).count == 1)

            let retry = try node.run("DEL", call, conf)
            #expect(retry.status == 0, "\(retry.stdout) \(retry.stderr)")
            #expect(!FileManager.default.fileExists(atPath: marker))
            #expect(reservations(in: node.store).isEmpty)
            #expect(!node.saved("pod1"))
            #expect(try !hasEth0(pods[0]))
        }
    }

    @Test func statusIsNotAvailableUntilSubnetEnvExists() throws {
        try withFlannelNode(pods: 1) { node, pods in
            let conf = try node.config(version: "1.1.0")
            let noPod = PluginCall(containerID: "", netns: "", ifname: "")
            let before = try node.run("STATUS", noPod, conf)
            #expect(before.errorCode == 50, "\(before.stdout)")
            #expect((before.json["msg"] as? String)?.hasSuffix("Check the flannel pod log for this node.") == true)
            // ADD meanwhile: try again later, and nothing is left anywhere.
            let add = try node.run("ADD", PluginCall(containerID: "early", netns: pods[0].path), conf)
            #expect(add.errorCode == 11, "\(add.stdout)")
            #expect(files(in: node.dataDir).isEmpty)
            #expect(reservations(in: node.store).isEmpty)
            #expect(try !hasEth0(pods[0]))

            try node.writeSubnetEnv()
            let after = try node.run("STATUS", noPod, conf)
            #expect(after.status == 0, "\(after.stdout) \(after.stderr)")
        }
    }

    @Test func checkPassesThenFailsWhenTheAddressIsGone() throws {
        try withFlannelNode(pods: 1) { node, pods in
            try node.writeSubnetEnv()
            let call = PluginCall(containerID: "pod1", netns: pods[0].path)
            let conf = try node.config(version: "1.0.0")
            let add = try node.run("ADD", call, conf)
            #expect(add.status == 0, "\(add.stdout)")
            let checkConf = String(conf.dropLast()) + #","prevResult":"# + add.stdout + "}"
            let check = try node.run("CHECK", call, checkConf)
            #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
            try pods[0].sh("ip addr flush dev eth0")
            #expect(try node.run("CHECK", call, checkConf).status != 0)
        }
    }

    /// GC reaches bridge and host-local: the dropped pod's IP and masquerade rules go (ipMasq is
    /// on because FLANNEL_IPMASQ=false), and so does its saved config; the kept pod keeps all.
    @Test func gcReleasesOnlyInvalidAttachments() throws {
        try withFlannelNode(pods: 2) { node, pods in
            try node.writeSubnetEnv(ipMasq: false)
            let conf = try node.config(version: "1.1.0")
            for (id, pod) in [("keep", pods[0]), ("drop", pods[1])] {
                let add = try node.run("ADD", PluginCall(containerID: id, netns: pod.path), conf)
                #expect(add.status == 0, "\(add.stdout)")
            }
            #expect(reservations(in: node.store).count == 2)
            let valid = [["containerID": "keep", "ifname": "eth0"]]
            let gcConf = try node.config(version: "1.1.0", extra: ["cni.dev/valid-attachments": valid])
            let gc = try node.run("GC", PluginCall(containerID: "", netns: "", ifname: ""), gcConf)
            #expect(gc.status == 0, "\(gc.stdout) \(gc.stderr)")
            let left = reservations(in: node.store)
            #expect(left.count == 1)
            #expect(
                try String(contentsOfFile: node.store + "/" + (left.first ?? ""), encoding: .utf8) == "keep\r\neth0")
            #expect(files(in: node.dataDir) == ["keep"])
            let nat = try node.host.sh("iptables-save -t nat")
            #expect(nat.contains(#"id: \"keep\""#))
            #expect(!nat.contains(#"id: \"drop\""#))
        }
    }

    /// A damaged saved config (as a crash during the reference's in-place write leaves) is
    /// deleted through the rebuilt config: the IP and the veth go.
    @Test func delOfADamagedSavedConfigStillFreesTheIP() throws {
        try withFlannelNode(pods: 1) { node, pods in
            try node.writeSubnetEnv()
            let call = PluginCall(containerID: "pod1", netns: pods[0].path)
            let conf = try node.config()
            #expect(try node.run("ADD", call, conf).status == 0)
            try #"{"cniVersion":"1.1.0","hairpinMode":tr"#.write(
                toFile: node.dataDir + "/pod1", atomically: false, encoding: .utf8)
            let del = try node.run("DEL", call, conf)
            #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!node.saved("pod1"))
            #expect(try !hasEth0(pods[0]))
        }
    }

    /// "../x" as the container ID is refused before any file is written or removed.
    @Test func pathEscapeInTheContainerIDIsRefused() throws {
        try withFlannelNode(pods: 1) { node, pods in
            try node.writeSubnetEnv()
            let conf = try node.config()
            let add = try node.run("ADD", PluginCall(containerID: "../escape", netns: pods[0].path), conf)
            #expect(add.errorCode == 4, "\(add.stdout)")
            #expect(!FileManager.default.fileExists(atPath: node.root + "/escape"))
            #expect(files(in: node.dataDir).isEmpty)
            #expect(reservations(in: node.store).isEmpty)
            #expect(try !hasEth0(pods[0]))

            // A file next to dataDir that looks like a saved config is not replayed or removed.
            let victim = node.root + "/victim"
            try #"{"cniVersion":"1.1.0","name":"cbr0","type":"bridge"}"#.write(
                toFile: victim, atomically: false, encoding: .utf8)
            let del = try node.run("DEL", PluginCall(containerID: "../victim", netns: pods[0].path), conf)
            #expect(del.errorCode == 4, "\(del.stdout)")
            #expect(FileManager.default.fileExists(atPath: victim))
        }
    }
}
