// Input that once crashed or hung a plugin (issue 8, items 8-11 and 13), run through the built
// binaries in namespaces the test creates. Each plugin runs under a hard time limit
// (runPluginBounded), so a regression fails instead of hanging the run; each case checks that the
// failure is a clear CNI error and that nothing is left behind: no bridge, veth, pod interface,
// reservation or masquerade rule.

import Foundation
import TestSupport
import Testing

/// A CNI_PATH whose first folder holds `fake-ipam`, a shell script in front of the real host-local
/// (so its reservations are real ones): ADD runs host-local with `$out` holding its result, then
/// `afterAdd`; every other command is host-local's own. `body` gets the CNI_PATH and the folder.
private func withFakeIPAM<T>(afterAdd: String, _ body: (_ path: String, _ dir: String) throws -> T) throws -> T {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let hostLocal = pluginDirectory + "/host-local"
    let script = """
        #!/bin/sh
        if [ "$CNI_COMMAND" != ADD ]; then exec '\(hostLocal)'; fi
        out=$('\(hostLocal)') || { echo "$out"; exit 1; }
        \(afterAdd)

        """
    try writeExecutable(dir + "/fake-ipam", script)
    return try body(dir + ":" + pluginDirectory, dir)
}

private func usingFakeIPAM(_ conf: String) -> String {
    conf.replacingOccurrences(of: #""type":"host-local""#, with: #""type":"fake-ipam""#)
}

/// The route fields of item 8, each with a value the kernel's field cannot hold.
private let badRouteFields = ["priority": "-1", "scope": "300", "table": "-1", "mtu": "5000000000", "advmss": "-1"]

/// A result as host-local would print it, with one route carrying `field: value`.
private func resultWithBadRoute(_ field: String) -> String {
    #"{"cniVersion":"1.0.0","ips":[{"address":"10.88.0.2/24","gateway":"10.88.0.1"}],"#
        + #""routes":[{"dst":"0.0.0.0/0","\#(field)":\#(badRouteFields[field]!)}]}"#
}

private func message(_ r: PluginResult) -> String { r.json["msg"] as? String ?? "" }

/// The node's links apart from the ones every namespace has.
private func nodeLinks(_ node: Node) throws -> [String] { try node.links().filter { $0 != "lo" } }

/// `r` is a refused ADD with CNI `code` and a message mentioning `mention`, and nothing is left:
/// no reservation, no link on the node.
private func expectRefused(
    _ r: PluginResult, code: Int, mentioning mention: String, node: Node,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    #expect(r.errorCode == code, "\(r.status) \(r.stdout) \(r.stderr)", sourceLocation: sourceLocation)
    #expect(message(r).contains(mention), "\(r.stdout)", sourceLocation: sourceLocation)
    #expect(reservations(in: node.store).isEmpty, sourceLocation: sourceLocation)
    #expect(try nodeLinks(node).isEmpty, sourceLocation: sourceLocation)
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct HostileInputTests {
    // MARK: Item 8: route fields out of range

    /// An IPAM result whose route the kernel cannot hold fails ADD with code 7 naming the field
    /// (it crashed bridge with SIGILL), and the IPAM DEL releases the address.
    @Test(arguments: badRouteFields.keys.sorted())
    func outOfRangeRouteFieldFromIPAMFailsBridgeAdd(field: String) throws {
        try withNode(pods: 1) { node, pods in
            try withFakeIPAM(afterAdd: "echo '\(resultWithBadRoute(field))'") { path, _ in
                let conf = usingFakeIPAM(
                    bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""ipMasq":true"#))
                let r = try runPluginBounded(
                    "bridge", "ADD", PluginCall(containerID: "route1", netns: pods[0].path, path: path),
                    config: conf, host: node.host)
                #expect(r.status == 1, "\(r.status) \(r.stdout) \(r.stderr)")
                try expectRefused(r, code: 7, mentioning: "routes[0].\(field)", node: node)
                #expect(try pods[0].sh("ip -o link show").contains("eth0") == false)
                #expect(!(try node.iptablesNAT()).contains("route1"))
            }
        }
    }

    /// The same through flannel, which runs bridge in-process: it crashed both.
    @Test(arguments: badRouteFields.keys.sorted())
    func outOfRangeRouteFieldFromIPAMFailsFlannelAdd(field: String) throws {
        try withNode(pods: 1) { node, pods in
            try withFakeIPAM(afterAdd: "echo '\(resultWithBadRoute(field))'") { path, dir in
                let subnetFile = dir + "/subnet.env"
                try "FLANNEL_NETWORK=10.88.0.0/16\nFLANNEL_SUBNET=10.88.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
                    .write(toFile: subnetFile, atomically: false, encoding: .utf8)
                let conf =
                    #"{"cniVersion":"1.0.0","name":"podnet-test","type":"flannel","subnetFile":"\#(subnetFile)","#
                    + #""dataDir":"\#(dir)/flannel","ipam":{"type":"fake-ipam","dataDir":"\#(node.dataDir)"}}"#
                let call = PluginCall(containerID: "route2", netns: pods[0].path, path: path)
                let r = try runPluginBounded("flannel", "ADD", call, config: conf, host: node.host)
                #expect(r.status == 1, "\(r.status) \(r.stdout) \(r.stderr)")
                try expectRefused(r, code: 7, mentioning: "routes[0].\(field)", node: node)
                #expect(try pods[0].sh("ip -o link show").contains("eth0") == false)
                // The runtime's DEL after the failed ADD succeeds and drops flannel's saved config.
                let del = try runPluginBounded("flannel", "DEL", call, config: conf, host: node.host)
                #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
                #expect(!FileManager.default.fileExists(atPath: dir + "/flannel/route2"))
            }
        }
    }

    /// host-local refuses such a route in its own config before it reserves anything.
    @Test func outOfRangeRouteInHostLocalConfigFailsBeforeReserving() throws {
        try withNode(pods: 1) { node, pods in
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
                .replacingOccurrences(
                    of: #""routes":[{"dst":"0.0.0.0/0"}]"#, with: #""routes":[{"dst":"0.0.0.0/0","scope":300}]"#)
            let r = try runPluginBounded(
                "bridge", "ADD", PluginCall(netns: pods[0].path), config: conf, host: node.host)
            try expectRefused(r, code: 7, mentioning: "ipam.routes[0].scope", node: node)
        }
    }

    /// A prevResult holding such a value (another implementation accepted it) does not stop DEL.
    @Test func delWithOutOfRangeRouteInPrevResultStillFrees() throws {
        try withNode(pods: 1) { node, pods in
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""ipMasq":true"#)
            let call = PluginCall(containerID: "prev1", netns: pods[0].path)
            #expect(try node.run("ADD", call, conf).status == 0)
            #expect(reservations(in: node.store).count == 1)
            let prev =
                #""prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.88.0.2/24"}],"#
                + #""routes":[{"dst":"0.0.0.0/0","priority":-1,"table":-1,"scope":300,"mtu":5000000000}]}"#
            let del = try runPluginBounded(
                "bridge", "DEL", call, config: String(conf.dropLast()) + "," + prev + "}",
                host: node.host)
            #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!(try node.iptablesNAT()).contains("prev1"))
        }
    }

    // MARK: Item 10: CNI_NETNS that is a FIFO

    /// ADD and CHECK fail at once with code 4 (they hung for ever), DEL frees the IP and the rules.
    @Test func netnsThatIsAFIFO() throws {
        try withNode(pods: 1) { node, pods in
            let fifo = node.dataDir + "/netns-fifo"
            #expect(mkfifo(fifo, 0o600) == 0)
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir, extra: #""ipMasq":true"#)
            let add = try runPluginBounded("bridge", "ADD", PluginCall(netns: fifo), config: conf, host: node.host)
            try expectRefused(add, code: 4, mentioning: "is not a network namespace", node: node)
            let lo = try runPluginBounded(
                "loopback", "ADD", PluginCall(netns: fifo, ifname: "lo"),
                config: #"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#, host: node.host)
            #expect(lo.errorCode == 4, "\(lo.status) \(lo.stdout)")

            let call = PluginCall(containerID: "fifo1", netns: pods[0].path)
            let ok = try node.run("ADD", call, conf)
            #expect(ok.status == 0, "\(ok.stdout)")
            var fifoCall = call
            fifoCall.netns = fifo
            let checkConf = String(conf.dropLast()) + ",\"prevResult\":" + ok.stdout + "}"
            let check = try runPluginBounded("bridge", "CHECK", fifoCall, config: checkConf, host: node.host)
            #expect(check.errorCode == 4, "\(check.status) \(check.stdout)")
            let del = try runPluginBounded("bridge", "DEL", fifoCall, config: conf, host: node.host)
            #expect(del.status == 0, "\(del.status) \(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!(try node.iptablesNAT()).contains("fifo1"))
        }
    }

    // MARK: Item 11: "%" in interface names

    /// "eth%d" as CNI_IFNAME (code 4) or "br%d" as the bridge (code 7) fail before anything is
    /// created: the kernel expanded them to eth0 and br0, which nothing removed.
    @Test func percentInInterfaceNames() throws {
        try withNode(pods: 1) { node, pods in
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
            let call = PluginCall(containerID: "pct1", netns: pods[0].path, ifname: "eth%d")
            let add = try runPluginBounded("bridge", "ADD", call, config: conf, host: node.host)
            #expect(add.errorCode == 4, "\(add.stdout)")
            #expect(message(add).contains("%"), "\(add.stdout)")
            let badBridge = try runPluginBounded(
                "bridge", "ADD", PluginCall(containerID: "pct2", netns: pods[0].path),
                config: bridgeConfig(version: "1.0.0", bridge: "br%d", dataDir: node.dataDir),
                host: node.host)
            #expect(badBridge.errorCode == 7, "\(badBridge.stdout)")
            #expect(try nodeLinks(node).isEmpty)
            #expect(try pods[0].sh("ip -o link show").contains("eth0") == false)
            #expect(reservations(in: node.store).isEmpty)
            // DEL of such a name is accepted, as in Go: it has nothing to remove.
            let del = try runPluginBounded("bridge", "DEL", call, config: conf, host: node.host)
            #expect(del.status == 0, "\(del.stdout)")
        }
    }

    // MARK: Item 13: delegate time-outs

    /// An IPAM delegate that hangs after reserving is killed at the time-out, ADD fails with code
    /// 11, and the IPAM DEL releases the reservation (it leaked).
    @Test func hungIPAMIsKilledAndReleased() throws {
        try withNode(pods: 1) { node, pods in
            try withFakeIPAM(afterAdd: "exec sleep 600") { path, _ in
                let conf = usingFakeIPAM(bridgeConfig(version: "1.0.0", dataDir: node.dataDir))
                let r = try runPluginBounded(
                    "bridge", "ADD", PluginCall(containerID: "hung1", netns: pods[0].path, path: path),
                    config: conf, host: node.host, extraEnv: ["PODNET_DELEGATE_TIMEOUT": "1"])
                #expect(r.errorCode == 11, "\(r.status) \(r.stdout)")
                #expect(reservations(in: node.store).isEmpty)
                #expect(try nodeLinks(node).isEmpty)
                #expect(try pods[0].sh("ip -o link show").contains("eth0") == false)
            }
        }
    }

    /// An IPAM delegate that leaves a process holding its stdout open and exits: its result is
    /// used at once (ADD waited for the whole time-out, failed and leaked the reservation).
    @Test func ipamWhoseChildKeepsStdoutOpen() throws {
        try withNode(pods: 1) { node, pods in
            // The child closes every descriptor but 0-2 first: one that the test runner's
            // Foundation.Process leaves open in its children would make the runner wait for it.
            let child =
                #"bash -c 'for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null; exec sleep 600'"#
            try withFakeIPAM(afterAdd: child + #" & echo $! > "$(dirname "$0")/child.pid"; echo "$out""#) { path, dir in
                defer {
                    if let pid = try? String(contentsOfFile: dir + "/child.pid", encoding: .utf8) {
                        _ = try? sh("kill \(pid)")
                    }
                }
                let conf = usingFakeIPAM(bridgeConfig(version: "1.0.0", dataDir: node.dataDir))
                let call = PluginCall(containerID: "child1", netns: pods[0].path, path: path)
                let r = try runPluginBounded(
                    "bridge", "ADD", call, config: conf, host: node.host,
                    extraEnv: ["PODNET_DELEGATE_TIMEOUT": "30"])
                #expect(r.status == 0, "\(r.status) \(r.stdout) \(r.stderr)")
                #expect(reservations(in: node.store).count == 1)
                #expect(try addresses(pods[0]).count == 1)
                let del = try runPluginBounded("bridge", "DEL", call, config: conf, host: node.host)
                #expect(del.status == 0, "\(del.stdout)")
                #expect(reservations(in: node.store).isEmpty)
            }
        }
    }

    // MARK: Item 9: files that are not what they should be

    /// subnetFile naming /dev/zero, a FIFO or a 100 MB file fails flannel ADD at once with a clear
    /// error (it grew to 1 GB and aborted, hung, or accepted the file), before anything is created.
    @Test(arguments: ["/dev/zero", "fifo", "huge"])
    func unusableSubnetFile(kind: String) throws {
        try withNode(pods: 1) { node, pods in
            let dir = node.dataDir
            var subnetFile = kind
            switch kind {
            case "fifo": subnetFile = dir + "/subnet.fifo"; #expect(mkfifo(subnetFile, 0o600) == 0)
            case "huge":
                subnetFile = dir + "/subnet.env"
                try "FLANNEL_NETWORK=10.88.0.0/16\nFLANNEL_SUBNET=10.88.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
                    .write(toFile: subnetFile, atomically: false, encoding: .utf8)
                #expect(truncate(subnetFile, 100 << 20) == 0)
            default: break
            }
            let conf =
                #"{"cniVersion":"1.0.0","name":"podnet-test","type":"flannel","subnetFile":"\#(subnetFile)","#
                + #""dataDir":"\#(dir)/flannel","ipam":{"dataDir":"\#(dir)"}}"#
            let r = try runPluginBounded(
                "flannel", "ADD", PluginCall(netns: pods[0].path), config: conf, host: node.host)
            #expect(r.status == 1, "\(r.status) \(r.stdout) \(r.stderr)")
            let expected = kind == "huge" ? "larger than 65536 bytes" : "not a regular file"
            #expect(message(r).contains(expected), "\(r.stdout)")
            #expect(try nodeLinks(node).isEmpty)
            #expect(reservations(in: node.store).isEmpty)
        }
    }

    /// resolvConf naming /dev/zero, a FIFO or a 100 MB file fails ADD with code 5, and no address
    /// is reserved.
    @Test(arguments: ["/dev/zero", "fifo", "huge"])
    func unusableResolvConf(kind: String) throws {
        try withNode(pods: 1) { node, pods in
            var path = kind
            switch kind {
            case "fifo": path = node.dataDir + "/resolv.fifo"; #expect(mkfifo(path, 0o600) == 0)
            case "huge":
                path = node.dataDir + "/resolv.conf"
                #expect(FileManager.default.createFile(atPath: path, contents: Data("nameserver 10.0.0.53\n".utf8)))
                #expect(truncate(path, 100 << 20) == 0)
            default: break
            }
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
                .replacingOccurrences(
                    of: #""type":"host-local","#, with: #""type":"host-local","resolvConf":"\#(path)","#)
            let r = try runPluginBounded(
                "bridge", "ADD", PluginCall(netns: pods[0].path), config: conf, host: node.host)
            try expectRefused(r, code: 5, mentioning: "resolvConf", node: node)
        }
    }

    /// A FIFO where flannel's saved config should be: DEL does not hang; it deletes through the
    /// config rebuilt from the current one (the IP is released) and removes the FIFO.
    @Test func savedFlannelConfigThatIsAFIFO() throws {
        try withNode(pods: 1) { node, pods in
            let dir = node.dataDir
            let subnetFile = dir + "/subnet.env"
            try "FLANNEL_NETWORK=10.88.0.0/16\nFLANNEL_SUBNET=10.88.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
                .write(toFile: subnetFile, atomically: false, encoding: .utf8)
            let conf =
                #"{"cniVersion":"1.0.0","name":"podnet-test","type":"flannel","subnetFile":"\#(subnetFile)","#
                + #""dataDir":"\#(dir)/flannel","ipam":{"dataDir":"\#(dir)"}}"#
            let call = PluginCall(containerID: "saved1", netns: pods[0].path)
            let add = try runPluginBounded("flannel", "ADD", call, config: conf, host: node.host)
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")
            #expect(reservations(in: node.store).count == 1)
            let saved = dir + "/flannel/saved1"
            #expect(unlink(saved) == 0 && mkfifo(saved, 0o600) == 0)
            let del = try runPluginBounded("flannel", "DEL", call, config: conf, host: node.host)
            #expect(del.status == 0, "\(del.status) \(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: saved))
        }
    }

    /// A FIFO at host-local's last_reserved_ip file: ADD fails with a clear error instead of
    /// blocking for ever in open, and keeps no reservation.
    @Test func lastReservedIPThatIsAFIFO() throws {
        try withNode(pods: 1) { node, pods in
            try FileManager.default.createDirectory(atPath: node.store, withIntermediateDirectories: true)
            #expect(mkfifo(node.store + "/last_reserved_ip.0", 0o600) == 0)
            let conf = bridgeConfig(version: "1.0.0", dataDir: node.dataDir)
            let r = try runPluginBounded(
                "bridge", "ADD", PluginCall(netns: pods[0].path), config: conf, host: node.host)
            try expectRefused(r, code: 5, mentioning: "last_reserved_ip.0", node: node)
        }
    }
}
