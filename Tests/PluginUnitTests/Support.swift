// The plugins in-process: CNIMain.dispatch with the environment a runtime sets, against
// TestSupport's in-memory kernel, fake IPAM and a recording command runner.

import Addressing
import Bridge
import CNI
import Foundation
import Netfilter
import Netlink
import TestSupport

let podPath = "/run/netns/pod"
let allVersions = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

/// What host-local returns for the bridge's default network: 10.88.0.5/24 with the range's gateway.
let ipamResult = Result(ips: [.init(address: IPNetwork("10.88.0.5/24")!, gateway: IPAddress("10.88.0.1"))])

/// The environment of one invocation.
func cniEnv(
    _ command: String, containerID: String = "ctr1", netns: String = podPath,
    ifname: String = "eth0"
) -> [String: String] {
    [
        "CNI_COMMAND": command, "CNI_CONTAINERID": containerID, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
        "CNI_PATH": "/opt/cni/bin",
    ]
}

/// One invocation's outcome as a runtime reads it.
struct Reply {
    var exitCode: Int32
    var text: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:] }
    var code: Int? { exitCode == 0 ? nil : json["code"] as? Int }
    var message: String? { json["msg"] as? String }
}

func dispatch(_ plugin: some CNIPlugin, _ env: [String: String], _ config: String) -> Reply {
    let out = CNIMain.dispatch(plugin, env: env, stdin: Array(config.utf8))
    return Reply(exitCode: out.exitCode, text: out.stdoutText)
}

/// Two JSON texts that encode the same value (key order and white space aside). With
/// `ignoringEmptyDNS`, a top-level `"dns":{}` counts as absent (it decodes to the same result).
func sameJSON(_ a: String, _ b: String, ignoringEmptyDNS: Bool = false) -> Bool {
    func parse(_ s: String) -> Any? {
        guard var o = try? JSONSerialization.jsonObject(with: Data(s.utf8)) else { return nil }
        if ignoringEmptyDNS, var d = o as? [String: Any], (d["dns"] as? [String: Any])?.isEmpty == true {
            d["dns"] = nil
            o = d
        }
        return o
    }
    func canonical(_ v: Any) -> Data? { try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys]) }
    guard let x = parse(a).flatMap(canonical), let y = parse(b).flatMap(canonical) else { return false }
    return x == y
}

/// The bridge config of the end-to-end suites (isGateway, host-local on 10.88.0.0/24), in
/// `version`, with `extra` spliced into the bridge object.
func bridgeConf(_ version: String = "1.0.0", _ extra: String = "") -> String {
    bridgeConfig(version: version, dataDir: "/unused", extra: extra)
}

/// A node: the in-memory kernel with a pod namespace, the fake IPAM and the recording runner
/// behind one bridge plugin.
struct Node {
    let kernel = InMemoryKernel()
    let ipam: FakeDelegate
    let runner: RecordingCommandRunner

    init(ipam result: Result = ipamResult, runner: RecordingCommandRunner = RecordingCommandRunner()) {
        kernel.addNamespace(podPath)
        ipam = FakeDelegate(result: result)
        self.runner = runner
    }

    var bridge: Bridge { Bridge(kernel: kernel, netfilter: Masquerade(runner: runner), ipam: ipam) }

    func run(_ command: String, _ config: String, containerID: String = "ctr1", netns: String = podPath) -> Reply {
        dispatch(bridge, cniEnv(command, containerID: containerID, netns: netns), config)
    }

    var pod: InMemoryKernel.Namespace { kernel.namespace(at: podPath)! }
    /// The host ends of pod interfaces.
    var hostVeths: [Link] { kernel.host.links.filter { $0.kind == "veth" } }
}

/// `config` with `result` as its prevResult, as a runtime sends CHECK and DEL.
func withPrevResult(_ config: String, _ result: String) -> String {
    String(config.trimmingCharacters(in: .whitespacesAndNewlines).dropLast()) + #","prevResult":"# + result + "}"
}
