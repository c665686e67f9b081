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

    /// flannel with flanneld's dual-stack subnet.env, entered with setns: the sysctls (the bridge's
    /// accept_dad, forwarding) land in the node's namespace, the pod gets both families and reaches
    /// the gateway over IPv6 at once, and DEL releases both addresses.
    @Test func dualStackFlannelEnteredWithSetns() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        try Data(contentsOf: root.appendingPathComponent("netconf/subnet-dualstack.env"))
            .write(to: URL(fileURLWithPath: dir + "/subnet.env"))
        let conf = """
            {"cniVersion":"1.0.0","name":"cbr0","type":"flannel","subnetFile":"\(dir)/subnet.env",
             "dataDir":"\(dir)/flannel","ipam":{"dataDir":"\(dir)/ipam"},
             "delegate":{"hairpinMode":true,"isDefaultGateway":true}}
            """
        try withNamespaces(2) { ns in
            let (node, pod) = (ns[0], ns[1])
            let call = PluginCall(netns: pod.path)
            let add = try runEnteredWithSetns("flannel", "ADD", call, config: conf, node: node)
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")
            #expect(try node.sh("sysctl -n net.ipv6.conf.cni0.accept_dad") == "0\n")
            #expect(try node.sh("sysctl -n net.ipv6.conf.all.forwarding") == "1\n")
            let v6 = try pod.sh("ip -o -6 addr show dev eth0 scope global")
            #expect(v6.contains("inet6 fd00:10:244:7::") && !v6.contains("tentative"), "\(v6)")
            #expect(try pod.sh("ip -o -4 addr show dev eth0").contains("inet 10.244.7."))
            #expect(try pod.sh("ip -6 route show default").contains("via fd00:10:244:7::1 dev eth0"))
            let ping = try run([
                "/usr/sbin/ip", "netns", "exec", pod.name, "ping", "-n", "-c", "1", "-W", "2", "fd00:10:244:7::1",
            ])
            #expect(ping.status == 0, "\(ping.stdout)")
            #expect(files(in: dir + "/ipam/cbr0").filter { $0.contains(":") || $0.hasPrefix("10.") }.count == 2)

            let del = try runEnteredWithSetns("flannel", "DEL", call, config: conf, node: node)
            #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            #expect(files(in: dir + "/ipam/cbr0").filter { $0.contains(":") || $0.hasPrefix("10.") }.isEmpty)
            #expect(try !pod.sh("ip -o link show").contains(" eth0@"))
        }
    }
}
