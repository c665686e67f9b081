// The plugins as a runtime that entered the node's namespace with setns runs them (podman,
// containerd in a container, CRI-O): `nsenter --net` switches the network namespace but, unlike
// `ip netns exec`, does not remount /sys, so /sys/class/net shows another namespace's devices.
// Nothing may configure the node through it. The full runtimes are in scripts/runtimes/.

import Foundation
import TestSupport
import Testing

/// Runs `type` from the built plugins inside `node` entered with `nsenter --net` (no /sys remount).
private func runEnteredWithSetns(
    _ type: String, _ command: String, _ call: PluginCall, config: String,
    node: TestNamespace
) throws -> CommandResult {
    let bin = pluginDirectory + "/" + type
    guard FileManager.default.isExecutableFile(atPath: bin) else {
        throw TestFailure("plugin binary \(bin) not found: build it first (scripts/test.sh does)")
    }
    var env = call.environment
    env["CNI_COMMAND"] = command
    return try run(["/usr/bin/nsenter", "--net=\(node.path)", bin], env: env, stdin: config)
}

/// The host end of the veth pair (interfaces[1]) in an ADD result.
private func hostVeth(_ r: CommandResult) -> String? {
    let json = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any]
    return ((json?["interfaces"] as? [[String: Any]])?[1])?["name"] as? String
}

private func bridgeConfig(dataDir: String, extra: String) -> String {
    """
    {"cniVersion":"1.0.0","name":"podnet-setns","type":"bridge","bridge":"cni-setns","isGateway":true,\(extra)
     "ipam":{"type":"host-local","dataDir":"\(dataDir)","ranges":[[{"subnet":"10.99.0.0/24"}]]}}
    """
}

/// `bridge -d link show dev <port>` inside `ns`, as one line.
private func portDetails(_ ns: TestNamespace, _ port: String) throws -> String {
    try ns.sh("bridge -d link show dev \(port)").split(separator: "\n").joined(separator: " ")
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct SetnsRuntimeTests {
    @Test func hairpinAndPortIsolationWithoutSysfs() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try withNamespaces(3) { ns in
            let (node, pods) = (ns[0], Array(ns.dropFirst()))
            // The precondition of the test: this process's /sys is not the node's.
            #expect(
                try node.sh(
                    "ip link add sys-probe type dummy 2>/dev/null || ip link add sys-probe type bridge; echo ok")
                    == "ok\n")
            #expect(
                try run(["/usr/bin/nsenter", "--net=\(node.path)", "/bin/sh", "-c", "test -e /sys/class/net/sys-probe"])
                    .status != 0)

            let flagged = bridgeConfig(dataDir: dir, extra: #""hairpinMode":true,"portIsolation":true,"#)
            let call = PluginCall(netns: pods[0].path)
            let r = try runEnteredWithSetns("bridge", "ADD", call, config: flagged, node: node)
            #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
            let port = try #require(hostVeth(r))
            let details = try portDetails(node, port)
            #expect(details.contains("master cni-setns"), "\(details)")
            #expect(details.contains("hairpin on"), "\(details)")
            #expect(details.contains("isolated on"), "\(details)")

            // Without the options the port keeps the kernel's defaults.
            let plain = bridgeConfig(dataDir: dir, extra: "")
            let call2 = PluginCall(netns: pods[1].path)
            let r2 = try runEnteredWithSetns("bridge", "ADD", call2, config: plain, node: node)
            #expect(r2.status == 0, "\(r2.stdout) \(r2.stderr)")
            let port2 = try #require(hostVeth(r2))
            let details2 = try portDetails(node, port2)
            #expect(details2.contains("hairpin off"), "\(details2)")
            #expect(details2.contains("isolated off"), "\(details2)")

            // DEL, entered the same way, leaves no port and no reservation.
            #expect(try runEnteredWithSetns("bridge", "DEL", call, config: flagged, node: node).status == 0)
            #expect(try runEnteredWithSetns("bridge", "DEL", call2, config: plain, node: node).status == 0)
            #expect(try node.sh("ip -o link show master cni-setns") == "")
            #expect(files(in: dir + "/podnet-setns").filter { $0.hasPrefix("10.") }.isEmpty)
        }
    }
}
