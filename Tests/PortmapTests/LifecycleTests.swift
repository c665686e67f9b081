// portmap's ADD, CHECK, DEL and GC against real iptables and nft, through the built binaries,
// chained after bridge as a runtime chains them.

import Foundation
import TestSupport
import Testing

let allVersions = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
let webPorts = [Port(hostPort: 30080, containerPort: 80), Port(hostPort: 30053, containerPort: 53, proto: "udp")]

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct PortmapLifecycleTests {
    /// For every spec version: portmap passes the bridge's result through unchanged (in the
    /// config's version), installs the rules, and DEL removes them.
    @Test(arguments: allVersions)
    func chainedAddReturnsThePreviousResult(version: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 1) { node, pods in
            var net = try portmapNetwork("20-podnet-portmap.conflist", node, backend: "iptables")
            net.version = version
            let bridge = try net.invoke(
                0, "ADD", net.call(pods[0], "v\(version)", type: "bridge"),
                net.config(0, ports: webPorts, prevResult: nil))
            #expect(bridge.status == 0, "\(bridge.stdout)")
            let portmap = try net.invoke(
                1, "ADD", net.call(pods[0], "v\(version)", type: "portmap"),
                net.config(1, ports: webPorts, prevResult: bridge.json))
            #expect(portmap.status == 0, "\(portmap.stdout)")
            #expect(NSDictionary(dictionary: portmap.json) == NSDictionary(dictionary: bridge.json))
            #expect(portmap.json["cniVersion"] as? String == version)
            let chainLines = try node.rules("iptables", mentioning: "-A CNI-DN-")
            #expect(chainLines.count == 2 * 3, "\(chainLines)")  // per mapping: hairpin, localhost, DNAT
            if version >= "0.4.0" {
                #expect(try net.check(pods[0], id: "v\(version)", ports: webPorts, result: bridge.json) == nil)
            }
            try net.del(pods[0], id: "v\(version)", ports: webPorts, result: bridge.json)
            #expect(try node.rules("iptables", mentioning: "CNI-DN-").isEmpty)
            try net.del(pods[0], id: "v\(version)", ports: webPorts, result: bridge.json)
        }
    }

    /// CHECK passes right after ADD, and fails once one rule of the container is deleted by hand.
    @Test(arguments: backends)
    func checkFailsWhenARuleIsMissing(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 1) { node, pods in
            let net = try portmapNetwork("20-podnet-portmap.conflist", node, backend: backend)
            let result = try net.add(pods[0], id: "checked", ports: webPorts)
            #expect(try net.check(pods[0], id: "checked", ports: webPorts, result: result) == nil)
            if backend == "iptables" {
                let chain = try #require(
                    try node.host.sh("iptables -t nat -S").split(separator: "\n")
                        .first { $0.hasPrefix("-N CNI-DN-") }
                ).dropFirst(3)
                let dnat = try #require(
                    try node.host.sh("iptables -t nat -S \(chain)").split(separator: "\n")
                        .last { $0.contains("-j DNAT") })
                try node.host.sh("iptables -t nat -D" + dnat.dropFirst(2))
            } else {
                let line = try #require(
                    try node.host.sh("nft -a list chain ip cni_hostport hostports")
                        .split(separator: "\n").first { $0.contains("comment \"checked\"") })
                let handle = try #require(line.split(separator: " ").last)
                try node.host.sh("nft delete rule ip cni_hostport hostports handle \(handle)")
            }
            let failed = try #require(try net.check(pods[0], id: "checked", ports: webPorts, result: result))
            #expect(failed.stdout.contains("port forwarding of checked is incomplete"), "\(failed.stdout)")
            // DEL still removes what is left.
            try net.del(pods[0], id: "checked", ports: webPorts, result: result)
            #expect(try node.portmapRules(backend, of: "checked").isEmpty)
            #expect(try node.rules(backend, mentioning: "CNI-DN-").isEmpty)
        }
    }

    /// A DEL without portMappings and without prevResult (a runtime that lost its cache) removes
    /// every rule of the container, and only of that container. A repeated DEL succeeds.
    @Test(arguments: backends)
    func delWithoutPortMappingsRemovesEverything(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 2) { node, pods in
            let net = try portmapNetwork("20-podnet-portmap.conflist", node, backend: backend)
            try net.add(pods[0], id: "gone", ports: webPorts)
            try net.add(pods[1], id: "stays", ports: [Port(hostPort: 30081, containerPort: 80)])
            #expect(try !node.portmapRules(backend, of: "gone").isEmpty)
            try net.del(pods[0], id: "gone")
            #expect(try node.portmapRules(backend, of: "gone").isEmpty)
            if backend == "iptables" {
                #expect(
                    try node.host.sh("iptables -t nat -S").split(separator: "\n").filter { $0.hasPrefix("-N CNI-DN-") }
                        .count == 1)
            }
            #expect(try !node.portmapRules(backend, of: "stays").isEmpty)
            try net.del(pods[0], id: "gone")
            try withEchoServers([(pods[1], "tcp", 80, "stays")]) { () throws in
                #expect(try request(from: node.host, "tcp", Node.address, 30081)?.hasPrefix("stays ") == true)
            }
        }
    }

    /// GC removes the rules of containers that are not valid attachments, and keeps the others'.
    @Test(arguments: backends)
    func gcRemovesOnlyInvalidAttachments(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 2) { node, pods in
            var net = try portmapNetwork("20-podnet-portmap.conflist", node, backend: backend)
            net.version = "1.1.0"
            try net.add(pods[0], id: "keep", ports: webPorts)
            try net.add(pods[1], id: "drop", ports: [Port(hostPort: 30081, containerPort: 80)])
            try net.gc(valid: ["keep"])
            #expect(try node.portmapRules(backend, of: "drop").isEmpty)
            #expect(try !node.portmapRules(backend, of: "keep").isEmpty)
            #expect(reservations(in: net.store).count == 1)
            if backend == "iptables" {
                #expect(try node.iptables().split(separator: "\n").filter { $0.hasPrefix(":CNI-DN-") }.count == 1)
            }
        }
    }
}
