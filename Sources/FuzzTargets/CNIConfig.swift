// Fuzz target `cni-config`: a network config or conflist from stdin, read the way each plugin
// reads its config, up to validation, with no side effects (no file, no netlink, no process).

import Bridge
import CNI
import Flannel
import HostLocal
import Portmap

public enum CNIConfigFuzz {
    /// Every verb whose config checks differ (CHECK and GC need newer versions; GC reads the
    /// valid attachments).
    static let commands: [Command] = [.add, .del, .check, .gc, .status]

    static let subnetEnv = try? SubnetEnv.parse(Array("""
        FLANNEL_NETWORK=10.244.0.0/16
        FLANNEL_SUBNET=10.244.7.1/24
        FLANNEL_IPV6_NETWORK=fd00:10:244::/56
        FLANNEL_IPV6_SUBNET=fd00:10:244:7::1/64
        FLANNEL_MTU=1450
        FLANNEL_IPMASQ=true

        """.utf8), path: "subnet.env")

    public static func run(_ bytes: [UInt8]) {
        guard let json = try? JSON.parse(bytes) else { return }
        checkRoundTrip(json)
        parseAsEveryPlugin(bytes)
        // A conflist: libcni gives each plugin its entry with the list's name and cniVersion.
        guard let list = json.objectValue, let plugins = list["plugins"]?.arrayValue else { return }
        for plugin in plugins {
            guard var entry = plugin.objectValue else { parseAsEveryPlugin(plugin.encoded()); continue }
            entry["name"] = list["name"]
            entry["cniVersion"] = list["cniVersion"]
            parseAsEveryPlugin(JSON.object(entry).encoded())
        }
    }

    /// What JSONValue prints, it reads back as the same value (delegates get printed configs).
    /// A whole double prints without a fraction (`1.5e3` as `1500`, as Go and JSONEncoder print
    /// it) and reads back as an integer: the same number.
    static func checkRoundTrip(_ json: JSON) {
        let printed = json.encoded()
        guard let again = try? JSON(parsing: printed) else {
            fatalError("printed JSON does not parse: \(String(decoding: printed, as: UTF8.self))")
        }
        guard sameValue(again, json) else {
            fatalError("JSON changed in a print/parse round trip: \(String(decoding: printed, as: UTF8.self))")
        }
    }

    static func sameValue(_ a: JSON, _ b: JSON) -> Bool {
        switch (a, b) {
        case (.int(let i), .double(let d)), (.double(let d), .int(let i)): Double(exactly: i) == d
        case (.array(let x), .array(let y)): x.count == y.count && zip(x, y).allSatisfy { sameValue($0, $1) }
        case (.object(let x), .object(let y)):
            x.count == y.count && x.allSatisfy { key, value in y[key].map { sameValue(value, $0) } ?? false }
        default: a == b
        }
    }

    static func parseAsEveryPlugin(_ stdin: [UInt8]) {
        for command in commands {
            let environment: [String: String] = [
                "CNI_COMMAND": command.rawValue, "CNI_CONTAINERID": "fuzz", "CNI_NETNS": "/run/netns/fuzz",
                "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "IgnoreUnknown=1;IP=10.244.7.9",
            ]
            guard let env = try? CNIEnvironment(environment),
                  let request = try? Request(env: env, stdin: stdin, supported: SpecVersion.allCases) else { continue }
            _ = try? request.validAttachments
            _ = try? BridgeConfig(request)
            _ = try? HostLocalConfig(request)
            _ = try? HostLocalConfig.store(request)
            _ = try? PortmapConfig(request)
            if let flannel = try? FlannelConfig(request) {
                _ = try? flannel.delegateConfig(nil)
                _ = try? flannel.delegateConfig(subnetEnv)
            }
            if let previous = request.prevResult {
                for version in SpecVersion.allCases { _ = try? previous.json(version: version) }
            }
        }
    }
}
