// The bridge plugin end to end: the built binaries, run as a runtime runs them, inside network
// namespaces the test creates (one plays the node, others the pods) and always deletes.

import Foundation
import TestSupport
import Testing

/// A node: a namespace that plays the host, and host-local's store in a temp dir.
struct Node {
    let host: TestNamespace
    let dataDir: String
    var name = "podnet-test"

    func run(
        _ command: String, _ call: PluginCall, _ config: String, type: String = "bridge",
        directory: String = pluginDirectory
    ) throws -> PluginResult {
        try runPlugin(type, command, call, config: config, host: host, directory: directory)
    }
    var store: String { dataDir + "/" + name }
    func links() throws -> [String] {
        try host.sh("ip -o link show").split(separator: "\n").map {
            String($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces))
        }
    }
    func iptablesNAT() throws -> String { try host.sh("iptables-save -t nat; ip6tables-save -t nat") }
    func nftRules() throws -> String { try host.sh("nft list ruleset") }
}

func withNode<T>(pods: Int, _ body: (Node, [TestNamespace]) throws -> T) throws -> T {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try withNamespaces(pods + 1) { ns in try body(Node(host: ns[0], dataDir: dir), Array(ns.dropFirst())) }
}

func json(_ s: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(s.utf8))) as? [String: Any] ?? [:]
}

/// The IPv4 addresses (with prefix) on `ifname` inside a namespace.
func addresses(_ ns: TestNamespace, _ ifname: String = "eth0") throws -> [String] {
    try ns.sh("ip -o -4 addr show dev \(ifname)").split(separator: "\n").compactMap { line in
        let words = line.split(separator: " ")
        return words.firstIndex(of: "inet").map { String(words[$0 + 1]) }
    }
}

let allVersions = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct BridgeTests {
    @Test(arguments: allVersions)
    func addCheckDelForEveryVersion(version: String) throws {
        try withNode(pods: 1) { node, pods in
            let call = PluginCall(netns: pods[0].path)
            let conf = bridgeConfig(version: version, dataDir: node.dataDir)
            let add = try node.run("ADD", call, conf)
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")
            let r = add.json
            #expect(r["cniVersion"] as? String == version)
            let ip: String
            if version < "0.3.0" {
                ip = try #require((r["ip4"] as? [String: Any])?["ip"] as? String)
                #expect((r["ip4"] as? [String: Any])?["gateway"] as? String == "10.88.0.1")
            } else {
                let ifs = try #require(r["interfaces"] as? [[String: Any]])
                #expect(ifs.count == 3)
                #expect(ifs[0]["name"] as? String == "cni0")
                #expect((ifs[1]["name"] as? String)?.hasPrefix("veth") == true)
                #expect(ifs[2]["name"] as? String == "eth0")
                #expect(ifs[2]["sandbox"] as? String == pods[0].path)
                let ips = try #require(r["ips"] as? [[String: Any]])
                #expect(ips.first?["interface"] as? Int == 2)
                #expect(ips.first?["gateway"] as? String == "10.88.0.1")
                ip = try #require(ips.first?["address"] as? String)
                // The host end is a port of cni0, and cni0 holds the gateway.
                let hostVeth = try #require(ifs[1]["name"] as? String)
                #expect(try node.host.sh("ip -o link show \(hostVeth)").contains("master cni0"))
            }
            #expect(ip.hasPrefix("10.88.0."))
            #expect(try addresses(pods[0]) == [ip])
            #expect(try addresses(node.host, "cni0") == ["10.88.0.1/24"])
            #expect(try pods[0].sh("ip route show default").contains("via 10.88.0.1"))
            #expect(reservations(in: node.store) == [String(ip.split(separator: "/")[0])])

            if version >= "0.4.0" {
                let prev = "\"prevResult\":" + add.stdout
                let checkConf = String(conf.dropLast(1)) + "," + prev + "}"
                let check = try node.run("CHECK", call, checkConf)
                #expect(check.status == 0, "\(check.stdout)")
                // CHECK notices a missing address.
                try pods[0].sh("ip addr flush dev eth0")
                #expect(try node.run("CHECK", call, checkConf).status != 0)
            }
            let del = try node.run("DEL", call, conf)
            #expect(del.status == 0, "\(del.stdout)")
            // eth0 is gone from the pod at once; the kernel's unregister finishes in the background.
            #expect(try pods[0].sh("ip -o link show").contains("eth0") == false)
            #expect(reservations(in: node.store).isEmpty)
            #expect(try eventually { try node.links().filter { $0.hasPrefix("veth") }.isEmpty })
            #expect(try eventually { try pods[0].sh("ip -o link show").contains("pdel") == false })
            // DEL again: still success.
            #expect(try node.run("DEL", call, conf).status == 0)
        }
    }

    /// DEL frees CNI_IFNAME at once: an ADD into the same namespace right after it succeeds.
    @Test func addRightAfterDelInTheSameNamespace() throws {
        try withNode(pods: 1) { node, pods in
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
            let call = PluginCall(containerID: "again", netns: pods[0].path)
            for round in 0..<5 {
                let add = try node.run("ADD", call, conf)
                #expect(add.status == 0, "round \(round): \(add.stdout)")
                #expect(try addresses(pods[0]).count == 1)
                #expect(try node.run("DEL", call, conf).status == 0)
                #expect(try pods[0].sh("ip -o -4 addr show").contains("10.88.") == false)
            }
            #expect(try eventually { try node.links().filter { $0.hasPrefix("veth") }.isEmpty })
        }
    }

    /// A host-local that is not from this build (here the Go reference) is executed, not run
    /// in-process, and works the same.
    @Test func delegatesToAForeignHostLocal() throws {
        let ref = "/usr/lib/cni/host-local"
        guard FileManager.default.isExecutableFile(atPath: ref) else {
            Issue.record("reference plugins missing: run scripts/deps.sh bench"); return
        }
        try withNode(pods: 1) { node, pods in
            let dir = node.dataDir + "/bin"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(
                atPath: dir + "/bridge", withDestinationPath: pluginDirectory + "/bridge")
            try FileManager.default.createSymbolicLink(atPath: dir + "/host-local", withDestinationPath: ref)
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
            let call = PluginCall(containerID: "foreign", netns: pods[0].path, path: dir)
            let add = try node.run("ADD", call, conf, directory: dir)
            #expect(add.status == 0, "\(add.stdout)")
            #expect(reservations(in: node.store).count == 1)
            #expect(try node.run("DEL", call, conf, directory: dir).status == 0)
            #expect(reservations(in: node.store).isEmpty)
        }
    }

    @Test func gcReleasesOnlyInvalidAttachments() throws {
        try withNode(pods: 2) { node, pods in
            let conf = bridgeConfig(version: "1.1.0", dataDir: node.dataDir, extra: #""ipMasq":true"#)
            let keep = PluginCall(containerID: "keep", netns: pods[0].path)
            let drop = PluginCall(containerID: "drop", netns: pods[1].path)
            for c in [keep, drop] { #expect(try node.run("ADD", c, conf).status == 0) }
            #expect(reservations(in: node.store).count == 2)
            let gcConf =
                String(conf.dropLast(1)) + #","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}"#
            let gc = try node.run("GC", PluginCall(containerID: "", netns: "", ifname: ""), gcConf)
            #expect(gc.status == 0, "\(gc.stdout)")
            let left = reservations(in: node.store)
            #expect(left.count == 1)
            #expect(try String(contentsOfFile: node.store + "/" + left[0], encoding: .utf8) == "keep\r\neth0")
            let nat = try node.iptablesNAT()
            #expect(nat.contains(#"id: \"keep\""#))
            #expect(!nat.contains(#"id: \"drop\""#))
        }
    }

    @Test func thirtyConcurrentAddsGetDistinctAddresses() throws {
        try withNode(pods: 30) { node, pods in
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
            let results = ConcurrentBox<PluginResult>(count: pods.count)
            DispatchQueue.concurrentPerform(iterations: pods.count) { i in
                results[i] = try? node.run("ADD", PluginCall(containerID: "pod\(i)", netns: pods[i].path), conf)
            }
            var ips = Set<String>()
            for (i, r) in results.values.enumerated() {
                let r = try #require(r, "ADD \(i) did not run")
                #expect(r.status == 0, "ADD \(i): \(r.stdout)")
                let ip = ((r.json["ips"] as? [[String: Any]])?.first?["address"] as? String) ?? ""
                ips.insert(ip)
                #expect(try addresses(pods[i]) == [ip])
            }
            #expect(ips.count == 30)
            #expect(reservations(in: node.store).count == 30)
        }
    }

    @Test func podsPingGatewayAndEachOther() throws {
        try withNode(pods: 2) { node, pods in
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
            var ips: [String] = []
            for (i, p) in pods.enumerated() {
                let r = try node.run("ADD", PluginCall(containerID: "p\(i)", netns: p.path), conf)
                #expect(r.status == 0, "\(r.stdout)")
                ips.append(
                    String(
                        ((r.json["ips"] as? [[String: Any]])?.first?["address"] as? String ?? "").split(separator: "/")[
                            0]))
            }
            #expect(try pods[0].sh("ping -c 2 -W 2 -i 0.2 10.88.0.1").contains("2 received"))
            #expect(try pods[0].sh("ping -c 2 -W 2 -i 0.2 \(ips[1])").contains("2 received"))
            #expect(try pods[1].sh("ping -c 2 -W 2 -i 0.2 \(ips[0])").contains("2 received"))
        }
    }

    @Test(arguments: ["iptables", "nftables"])
    func masqueradeRulesFollowTheAttachment(backend: String) throws {
        try withNode(pods: 1) { node, pods in
            let conf = bridgeConfig(
                version: "1.0.0", dataDir: node.dataDir,
                extra: #""ipMasq":true,"ipMasqBackend":"\#(backend)""#)
            let call = PluginCall(containerID: "masq1", netns: pods[0].path)
            #expect(try node.run("ADD", call, conf).status == 0)
            if backend == "iptables" {
                let nat = try node.iptablesNAT()
                #expect(nat.contains("-A POSTROUTING -s 10.88.0.2/32"))
                #expect(nat.contains("-j MASQUERADE"))
            } else {
                let nft = try node.nftRules()
                #expect(nft.contains("table inet cni_plugins_masquerade"))
                #expect(nft.contains("ip saddr 10.88.0.2 ip daddr != 10.88.0.0/24 masquerade"))
            }
            #expect(try node.run("DEL", call, conf).status == 0)
            #expect(!(try node.iptablesNAT()).contains("masq1"))
            #expect(!(try node.nftRules()).contains("masq1"))
        }
    }

    /// The reference leaks the IP or the rules in each of these cases; podnet must not.
    @Test(arguments: ["deleted", "empty", "not-a-namespace"])
    func delWithoutNamespaceFreesEverything(netnsCase: String) throws {
        try withNode(pods: 1) { node, pods in
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""ipMasq":true"#)
            let call = PluginCall(containerID: "gone1", netns: pods[0].path)
            #expect(try node.run("ADD", call, conf).status == 0)
            #expect(reservations(in: node.store).count == 1)
            var delCall = call
            switch netnsCase {
            case "deleted":
                try sh("ip netns delete \(pods[0].name)")
                try sh("ip netns add \(pods[0].name)")  // recreated empty so cleanup still works
                try sh("ip netns delete \(pods[0].name)")
            case "empty": delCall.netns = ""
            default:
                let f = node.dataDir + "/plainfile"
                #expect(FileManager.default.createFile(atPath: f, contents: Data()))
                delCall.netns = f
            }
            let del = try node.run("DEL", delCall, conf)
            #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!(try node.iptablesNAT()).contains("gone1"))
        }
    }

    @Test func badInputLeavesNothingBehind() throws {
        try withNode(pods: 1) { node, pods in
            let good = bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""ipMasq":true"#)
            let before = try node.links()
            let cases: [(String, PluginCall, Int)] = [
                ("not json", PluginCall(netns: pods[0].path), 6),
                (#"{"cniVersion":"1.0.0","type":"bridge"}"#, PluginCall(netns: pods[0].path), 7),
                (bridgeConfig(version: "9.9.9", dataDir: node.dataDir), PluginCall(netns: pods[0].path), 1),
                (good, PluginCall(netns: pods[0].path, ifname: "a/b"), 4),
                (good, PluginCall(netns: pods[0].path, ifname: "waytoolonginterface"), 4),
                (good, PluginCall(containerID: "bad id!", netns: pods[0].path), 4),
                (
                    bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""vlan":100"#),
                    PluginCall(netns: pods[0].path), 2
                ),
                (
                    bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""mtu":"big""#),
                    PluginCall(netns: pods[0].path), 7
                ),
                (
                    bridgeConfig(
                        version: "1.0.0", dataDir: node.dataDir, extra: #""hairpinMode":true,"promiscMode":true"#),
                    PluginCall(netns: pods[0].path), 7
                ),
                (
                    good.replacingOccurrences(of: #""ranges":[[{"subnet":"10.88.0.0/24"}]],"#, with: ""),
                    PluginCall(netns: pods[0].path), 7
                ),
                (good, PluginCall(netns: "/run/netns/does-not-exist"), 4),
            ]
            for (conf, call, code) in cases {
                let r = try node.run("ADD", call, conf)
                #expect(r.status != 0)
                #expect(r.errorCode == code, "\(conf) -> \(r.stdout)")
            }
            #expect(try node.links() == before)
            #expect(reservations(in: node.store).isEmpty)
            #expect(!(try node.iptablesNAT()).contains("CNI-"))
            #expect(try pods[0].sh("ip -o link show").contains("eth0") == false)
        }
    }

    /// A failure after the veth and the IP exist (the bridge holds another address) undoes both.
    @Test func failedAddRollsBack() throws {
        try withNode(pods: 1) { node, pods in
            try node.host.sh("ip link add cni0 type bridge && ip addr add 192.0.2.1/24 dev cni0")
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""ipMasq":true"#)
            let r = try node.run("ADD", PluginCall(netns: pods[0].path), conf)
            #expect(r.status != 0)
            #expect((r.json["msg"] as? String)?.contains("already has an IP address different from") == true)
            #expect(reservations(in: node.store).isEmpty)
            #expect(try node.links().filter { $0.hasPrefix("veth") }.isEmpty)
            #expect(try pods[0].sh("ip -o link show").contains("eth0") == false)
            // forceAddress replaces the stale address instead.
            let forced = bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""forceAddress":true"#)
            #expect(try node.run("ADD", PluginCall(netns: pods[0].path), forced).status == 0)
            #expect(try addresses(node.host, "cni0") == ["10.88.0.1/24"])
        }
    }

    @Test func optionsReachTheKernel() throws {
        try withNode(pods: 1) { node, pods in
            let conf = bridgeConfig(
                version: "1.0.0", bridge: "br-opt", dataDir: node.dataDir,
                extra:
                    #""mtu":1400,"hairpinMode":true,"isDefaultGateway":true,"runtimeConfig":{"mac":"0a:58:0a:58:00:99"}"#
            )
            let r = try node.run("ADD", PluginCall(netns: pods[0].path), conf)
            #expect(r.status == 0, "\(r.stdout)")
            let ifs = try #require(r.json["interfaces"] as? [[String: Any]])
            #expect(ifs[2]["mac"] as? String == "0a:58:0a:58:00:99")
            #expect(try pods[0].sh("ip -o link show eth0").contains("mtu 1400"))
            #expect(try pods[0].sh("ip -o link show eth0").contains("0a:58:0a:58:00:99"))
            let hostVeth = try #require(ifs[1]["name"] as? String)
            #expect(try node.host.sh("cat /sys/class/net/\(hostVeth)/brport/hairpin_mode").hasPrefix("1"))
            #expect(try node.host.sh("ip -o link show br-opt").contains("mtu 1400"))
            #expect(try node.host.sh("cat /proc/sys/net/ipv4/ip_forward").hasPrefix("1"))
            // isDefaultGateway with an IPAM default route: one default route, not two.
            #expect(try pods[0].sh("ip route show default").split(separator: "\n").count == 1)
        }
    }

    /// The reference binaries and ours share the store and the rule names: either can DEL what
    /// the other added.
    @Test func interoperatesWithReferencePlugins() throws {
        let ref = "/usr/lib/cni"
        guard FileManager.default.isExecutableFile(atPath: ref + "/bridge") else {
            Issue.record("reference plugins missing in \(ref): run scripts/deps.sh bench"); return
        }
        try withNode(pods: 2) { node, pods in
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""ipMasq":true"#)
            let goCall = PluginCall(containerID: "fromgo", netns: pods[0].path, path: ref)
            #expect(try node.run("ADD", goCall, conf, directory: ref).status == 0)
            #expect(try node.iptablesNAT().contains("fromgo"))
            let ours = try node.run("DEL", PluginCall(containerID: "fromgo", netns: "", path: pluginDirectory), conf)
            #expect(ours.status == 0, "\(ours.stdout)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!(try node.iptablesNAT()).contains("fromgo"))

            let swiftCall = PluginCall(containerID: "fromswift", netns: pods[1].path)
            #expect(try node.run("ADD", swiftCall, conf).status == 0)
            let goDel = try node.run(
                "DEL", PluginCall(containerID: "fromswift", netns: pods[1].path, path: ref), conf, directory: ref)
            #expect(goDel.status == 0, "\(goDel.stdout)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!(try node.iptablesNAT()).contains("fromswift"))
        }
    }
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct LoopbackTests {
    @Test(arguments: allVersions)
    func bringsLoopbackUp(version: String) throws {
        try withNamespaces(1) { ns in
            try ns[0].sh("ip link set lo down")
            let call = PluginCall(netns: ns[0].path, ifname: "lo")
            let conf = #"{"cniVersion":"\#(version)","name":"lo","type":"loopback"}"#
            let r = try runPlugin("loopback", "ADD", call, config: conf)
            #expect(r.status == 0, "\(r.stdout)")
            #expect(try ns[0].sh("ip -o link show lo").contains("UP"))
            #expect(try ns[0].sh("ping -c 1 -W 1 127.0.0.1").contains("1 received"))
            #expect(try runPlugin("loopback", "DEL", call, config: conf).status == 0)
        }
    }
}

/// Results written from concurrent closures.
final class ConcurrentBox<T>: @unchecked Sendable {
    private var items: [T?]
    private let lock = NSLock()
    init(count: Int) { items = Array(repeating: nil, count: count) }
    subscript(i: Int) -> T? {
        get { lock.withLock { items[i] } }
        set { lock.withLock { items[i] = newValue } }
    }
    var values: [T?] { lock.withLock { items } }
}
