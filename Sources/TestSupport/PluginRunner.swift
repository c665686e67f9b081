// Runs a built CNI plugin binary with the environment and stdin a runtime would give it.

import Foundation

/// Where the built plugin binaries are: $PODNET_BIN_DIR (scripts/test.sh sets it to the release
/// build), else the folder scripts/build.sh fills (the plugin names are hard links it makes).
public var pluginDirectory: String {
    if let d = ProcessInfo.processInfo.environment["PODNET_BIN_DIR"], !d.isEmpty { return d }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    return root.appendingPathComponent(".build/podnet-bin").path
}

public struct PluginResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String

    /// stdout parsed as a JSON object (result or error).
    public var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any] ?? [:]
    }
    /// The CNI error code, when the plugin failed.
    public var errorCode: Int? { status == 0 ? nil : json["code"] as? Int }
}

/// One attachment's invocation parameters.
public struct PluginCall: Sendable {
    public var containerID: String
    public var netns: String
    public var ifname: String
    public var args: String
    public var path: String

    public init(
        containerID: String = "c" + String(UInt32.random(in: 0...UInt32.max), radix: 16),
        netns: String, ifname: String = "eth0", args: String = "", path: String = pluginDirectory
    ) {
        self.containerID = containerID; self.netns = netns; self.ifname = ifname; self.args = args; self.path = path
    }

    public var environment: [String: String] {
        ["CNI_CONTAINERID": containerID, "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": path]
    }
}

/// Runs plugin `type` from `directory` with `command` and `config` on stdin. With `host`, the
/// plugin runs inside that namespace (`ip netns exec`), which then plays the node's root namespace.
/// With `timeLimit`, under `timeout -s KILL <seconds>`: when the limit passes, the plugin and every
/// process it started are killed, and the result has status 137.
public func runPlugin(
    _ type: String, _ command: String, _ call: PluginCall, config: String,
    host: TestNamespace? = nil, directory: String = pluginDirectory,
    extraEnv: [String: String] = [:], timeLimit seconds: Int? = nil
) throws -> PluginResult {
    let bin = directory + "/" + type
    guard FileManager.default.isExecutableFile(atPath: bin) else {
        throw TestFailure("plugin binary \(bin) not found: build it first (scripts/test.sh does)")
    }
    var env = call.environment
    env["CNI_COMMAND"] = command
    env.merge(extraEnv) { $1 }
    let argv =
        (seconds.map { ["/usr/bin/timeout", "-s", "KILL", String($0)] } ?? [])
        + (host.map { ["/usr/sbin/ip", "netns", "exec", $0.name, bin] } ?? [bin])
    let r = try run(argv, env: env, stdin: config)
    return PluginResult(status: r.status, stdout: r.stdout, stderr: r.stderr)
}
