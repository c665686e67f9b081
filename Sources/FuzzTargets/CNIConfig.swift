// Fuzz target `cni-config`: a network config or conflist from stdin, read the way each plugin
// reads its config, up to validation, with no side effects (no file, no netlink, no process).
// An input with a NUL byte is `CNI_ARGS` NUL config, so the CNI_ARGS parser (and the IP and MAC
// it may request) is fuzzed too; without one, CNI_ARGS is "IgnoreUnknown=1;IP=10.244.7.9".

import Bridge
import CNI
import Flannel
import HostLocal
import Portmap

public enum CNIConfigFuzz {
    /// Every verb whose config checks differ (CHECK and GC need newer versions; GC reads the
    /// valid attachments).
    static let commands: [Command] = [.add, .del, .check, .gc, .status]

    static let subnetEnv = try? SubnetEnv.parse(
        Array(
            """
            FLANNEL_NETWORK=10.244.0.0/16
            FLANNEL_SUBNET=10.244.7.1/24
            FLANNEL_IPV6_NETWORK=fd00:10:244::/56
            FLANNEL_IPV6_SUBNET=fd00:10:244:7::1/64
            FLANNEL_MTU=1450
            FLANNEL_IPMASQ=true

            """.utf8), path: "subnet.env")

    public static func run(_ input: [UInt8]) {
        var args = "IgnoreUnknown=1;IP=10.244.7.9", bytes = input
        if let nul = input.firstIndex(of: 0) {
            args = String(decoding: input[..<nul], as: UTF8.self)
            bytes = Array(input[(nul + 1)...])
        }
        guard let json = try? JSON.parse(bytes) else { return }
        checkRoundTrip(json)
        parseAsEveryPlugin(bytes, args: args)
        // A conflist: libcni gives each plugin its entry with the list's name and cniVersion.
        guard let list = json.objectValue, let plugins = list["plugins"]?.arrayValue else { return }
        for plugin in plugins {
            guard var entry = plugin.objectValue else { parseAsEveryPlugin(plugin.encoded(), args: args); continue }
            entry["name"] = list["name"]
            entry["cniVersion"] = list["cniVersion"]
            parseAsEveryPlugin(JSON.object(entry).encoded(), args: args)
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

    /// The error a plugin prints for a bad config is JSON that the runtime reads back as the same
    /// error (its message quotes the bad input).
    static func checkPrintable(_ error: CNIError) {
        let printed = error.json(cniVersion: "1.0.0").encoded()
        guard let json = try? JSON.parse(printed), CNIError(json: json) == error else {
            fatalError("error JSON does not read back: \(String(decoding: printed, as: UTF8.self))")
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

    static func parseAsEveryPlugin(_ stdin: [UInt8], args: String) {
        for command in commands {
            let environment: [String: String] = [
                "CNI_COMMAND": command.rawValue, "CNI_CONTAINERID": "fuzz", "CNI_NETNS": "/run/netns/fuzz",
                "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": args,
            ]
            guard let env = try? CNIEnvironment(environment) else { continue }
            let request: Request
            do { request = try Request(env: env, stdin: stdin, supported: SpecVersion.allCases) } catch {
                checkPrintable(error)
                continue
            }
            _ = try? request.validAttachments
            do { _ = try BridgeConfig(request) } catch { checkPrintable(error) }
            do { _ = try HostLocalConfig(request) } catch { checkPrintable(error) }
            _ = try? HostLocalConfig.store(request)
            do { _ = try PortmapConfig(request) } catch { checkPrintable(error) }
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
