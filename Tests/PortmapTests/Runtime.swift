// A node for the privileged portmap tests, and a small stand-in for libcni that runs a conflist
// from netconf/ through the built binaries: ADD in plugin order with each result as the next
// plugin's prevResult, DEL in reverse order with the final result, `runtimeConfig.portMappings`
// only for plugins that declare the capability, GC with `cni.dev/valid-attachments`.

import Foundation
import Netfilter
import TestSupport
import Testing

/// The node: a namespace that plays the host (with a second address on `ext0`, 192.0.2.10 and
/// fd00:192::10, standing for its external interface), and host-local's store in a temp dir.
struct Node {
    let host: TestNamespace
    let dataDir: String
    static let address = "192.0.2.10"
    static let address6 = "fd00:192::10"

    func iptables() throws -> String { try host.sh("iptables-save -t nat; ip6tables-save -t nat") }
    func nft() throws -> String { try host.sh("nft list ruleset") }

    /// Lines of both nat tables, or of both cni_hostport tables, that mention `text`.
    func rules(_ backend: String, mentioning text: String) throws -> [String] {
        let all = backend == "iptables" ? try iptables() : try nft()
        return all.split(separator: "\n").map(String.init).filter { $0.contains(text) }
    }

    /// The portmap rules of one container: iptables entry rules (by comment) and its chain's
    /// rules, in both families; or the nft rules whose comment is the container ID.
    func portmapRules(_ backend: String, of id: String, network: String = "podnet") throws -> [String] {
        if backend == "iptables" {
            let chain = PortmapNames.containerChain(network: network, containerID: id)
            return try iptables().split(separator: "\n").map(String.init).filter {
                $0.hasPrefix("-A ")
                    && ($0.contains(chain) || ($0.contains("dnat name") && $0.contains("id: \\\"\(id)\\\"")))
            }
        }
        return try nft().split(separator: "\n").map(String.init).filter { $0.contains("comment \"\(id)\"") }
    }

    /// UDP conntrack entries in the node namespace with original destination port `port`.
    func conntrackUDP(port: Int) throws -> [String] {
        let r = try run([
            "/usr/sbin/ip", "netns", "exec", host.name, "conntrack", "-L", "-p", "udp", "--orig-port-dst", String(port),
        ])
        return r.stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("udp") }
    }
}

/// Creates the node and `pods` pod namespaces, runs `body`, and deletes everything.
func withNode<T>(pods: Int, _ body: (Node, [TestNamespace]) throws -> T) throws -> T {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try withNamespaces(pods + 1) { ns in
        let node = Node(host: ns[0], dataDir: dir)
        // No duplicate address detection: addresses are usable at once (the bridge's gateway too).
        try node.host.sh(
            """
            sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
            ip link add ext0 type veth peer name ext0-peer && ip link set ext0-peer up && ip link set ext0 up
            ip addr add \(Node.address)/24 dev ext0 && ip addr add \(Node.address6)/64 dev ext0 nodad
            """)
        return try body(node, Array(ns.dropFirst()))
    }
}

/// One `portMappings` entry.
struct Port {
    var hostPort: Int
    var containerPort: Int
    var proto = "tcp"
    var hostIP: String?

    var json: [String: Any] {
        var o: [String: Any] = ["hostPort": hostPort, "containerPort": containerPort, "protocol": proto]
        if let hostIP { o["hostIP"] = hostIP }
        return o
    }
}

enum RuntimeError: Error, CustomStringConvertible {
    case pluginFailed(type: String, command: String, PluginResult)
    var description: String {
        switch self {
        case .pluginFailed(let t, let c, let r): "\(t) \(c) failed (\(r.status)): \(r.stdout) \(r.stderr)"
        }
    }
}

/// A network configuration list, run against a node as libcni would.
struct Network {
    var conflist: [String: Any]
    let node: Node
    /// Where each plugin type's binary comes from (default: this build).
    var directories: [String: String] = [:]

    /// Loads netconf/`file`, points host-local at the node's store, and applies `edit` to each
    /// plugin object.
    init(_ file: String, node: Node, edit: (inout [String: Any]) -> Void = { _ in }) throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let data = try Data(contentsOf: root.appendingPathComponent("netconf/" + file))
        conflist = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        self.node = node
        var plugins = conflist["plugins"] as! [[String: Any]]
        for i in plugins.indices {
            if var ipam = plugins[i]["ipam"] as? [String: Any] {
                ipam["dataDir"] = node.dataDir
                plugins[i]["ipam"] = ipam
            }
            edit(&plugins[i])
        }
        conflist["plugins"] = plugins
    }

    var name: String { conflist["name"] as! String }
    /// libcni's choice: the highest of `cniVersions`, else `cniVersion`.
    var version: String {
        get { (conflist["cniVersions"] as? [String])?.max() ?? conflist["cniVersion"] as! String }
        set { conflist["cniVersion"] = newValue; conflist["cniVersions"] = nil }
    }
    var plugins: [[String: Any]] { conflist["plugins"] as! [[String: Any]] }
    var store: String { node.dataDir + "/" + name }

    /// The request config for plugin `i`.
    func config(_ i: Int, ports: [Port], prevResult: Any?, extra: [String: Any] = [:]) -> String {
        var c = plugins[i]
        c["name"] = name
        c["cniVersion"] = version
        if ((c["capabilities"] as? [String: Any])?["portMappings"] as? Bool) == true, !ports.isEmpty {
            c["runtimeConfig"] = ["portMappings": ports.map(\.json)]
        }
        if let prevResult { c["prevResult"] = prevResult }
        c.merge(extra) { $1 }
        return String(decoding: try! JSONSerialization.data(withJSONObject: c, options: [.sortedKeys]), as: UTF8.self)
    }

    func call(_ pod: TestNamespace?, _ id: String, type: String) -> PluginCall {
        PluginCall(containerID: id, netns: pod?.path ?? "", path: directories[type] ?? pluginDirectory)
    }

    func invoke(_ i: Int, _ command: String, _ call: PluginCall, _ config: String) throws -> PluginResult {
        let type = plugins[i]["type"] as! String
        return try runPlugin(
            type, command, call, config: config, host: node.host, directory: directories[type] ?? pluginDirectory)
    }

    /// ADD through every plugin; returns the final result.
    @discardableResult
    func add(_ pod: TestNamespace, id: String, ports: [Port] = []) throws -> [String: Any] {
        var prev: Any?
        for i in plugins.indices {
            let type = plugins[i]["type"] as! String
            let r = try invoke(i, "ADD", call(pod, id, type: type), config(i, ports: ports, prevResult: prev))
            guard r.status == 0 else { throw RuntimeError.pluginFailed(type: type, command: "ADD", r) }
            prev = r.json
        }
        return prev as? [String: Any] ?? [:]
    }

    /// CHECK through every plugin with the ADD result; returns the first failure.
    func check(_ pod: TestNamespace, id: String, ports: [Port], result: [String: Any]) throws -> PluginResult? {
        for i in plugins.indices {
            let type = plugins[i]["type"] as! String
            let r = try invoke(i, "CHECK", call(pod, id, type: type), config(i, ports: ports, prevResult: result))
            if r.status != 0 { return r }
        }
        return nil
    }

    /// DEL in reverse order; prevResult only when given and the version carries it (>= 0.4.0).
    func del(_ pod: TestNamespace?, id: String, ports: [Port] = [], result: [String: Any]? = nil) throws {
        let prev: Any? = version >= "0.4.0" ? result : nil
        for i in plugins.indices.reversed() {
            let type = plugins[i]["type"] as! String
            let r = try invoke(i, "DEL", call(pod, id, type: type), config(i, ports: ports, prevResult: prev))
            guard r.status == 0 else { throw RuntimeError.pluginFailed(type: type, command: "DEL", r) }
        }
    }

    /// GC through every plugin with the valid attachments (container IDs on eth0).
    func gc(valid: [String]) throws {
        let list = valid.map { ["containerID": $0, "ifname": "eth0"] }
        for i in plugins.indices {
            let type = plugins[i]["type"] as! String
            let conf = config(i, ports: [], prevResult: nil, extra: ["cni.dev/valid-attachments": list])
            let r = try invoke(
                i, "GC", PluginCall(containerID: "", netns: "", ifname: "", path: directories[type] ?? pluginDirectory),
                conf)
            guard r.status == 0 else { throw RuntimeError.pluginFailed(type: type, command: "GC", r) }
        }
    }
}

/// The first address of `family` (4 or 6) in a result, without its prefix.
func address(_ result: [String: Any], _ family: Int = 4) -> String? {
    let ips = (result["ips"] as? [[String: Any]]) ?? []
    for ip in ips {
        guard let a = ip["address"] as? String else { continue }
        if a.contains(":") == (family == 6) { return String(a.split(separator: "/")[0]) }
    }
    if let ip4 = (result["ip4"] as? [String: Any])?["ip"] as? String, family == 4 {
        return String(ip4.split(separator: "/")[0])
    }
    return nil
}

/// The binaries the privileged tests run; a test records a failure when one is missing.
func pluginsBuilt() -> Bool {
    for type in ["bridge", "host-local", "portmap"]
    where !FileManager.default.isExecutableFile(atPath: pluginDirectory + "/" + type) {
        Issue.record("plugin binary \(pluginDirectory)/\(type) not found: build the plugins and set PODNET_BIN_DIR")
        return false
    }
    return true
}

let referencePortmap = "/usr/lib/cni/portmap"

/// Whether the reference portmap is installed; records a failure when it is not.
func referenceInstalled() -> Bool {
    if FileManager.default.isExecutableFile(atPath: referencePortmap) { return true }
    Issue.record("reference portmap missing in /usr/lib/cni: run scripts/deps.sh bench")
    return false
}
