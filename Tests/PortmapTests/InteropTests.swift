// The reference portmap (Debian's containernetworking-plugins 1.1.1 in /usr/lib/cni, iptables
// only) and ours share one node: each deletes what the other added, they share the top-level
// chains without duplicating them, and they reject bad input with the same messages.

import Foundation
import TestSupport
import Testing

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct PortmapInteropTests {
    func network(
        _ node: Node, portmapFrom directory: String? = nil,
        file: String = "20-podnet-portmap.conflist"
    ) throws -> Network {
        var net = try portmapNetwork(file, node, backend: "iptables")
        // The reference 1.1.1 has no `backend` key and rejects nothing for it, but keep its
        // config as it would be written for it.
        net.conflist["plugins"] = net.plugins.map { p in
            var p = p
            if p["type"] as? String == "portmap" { p["backend"] = nil }
            return p
        }
        if let directory { net.directories["portmap"] = directory }
        net.version = "1.0.0"  // the newest the reference 1.1.1 speaks
        return net
    }

    @Test func eachDeletesWhatTheOtherAdded() throws {
        guard pluginsBuilt(), referenceInstalled() else { return }
        try withNode(pods: 2) { node, pods in
            let ours = try network(node)
            let theirs = try network(node, portmapFrom: "/usr/lib/cni")

            // Reference ADD; our CHECK accepts its rules; our DEL without portMappings removes them.
            let fromGo = try theirs.add(pods[0], id: "fromgo", ports: webPorts)
            #expect(try node.portmapRules("iptables", of: "fromgo").count == 2 + 6)  // entry rules; 3 per mapping
            #expect(try ours.check(pods[0], id: "fromgo", ports: webPorts, result: fromGo) == nil)
            try withEchoServers([(pods[0], "tcp", 80, "go")]) { () throws in
                #expect(try request(from: node.host, "tcp", Node.address, 30080)?.hasPrefix("go ") == true)
            }
            try ours.del(pods[0], id: "fromgo")
            #expect(try node.portmapRules("iptables", of: "fromgo").isEmpty)
            #expect(try node.rules("iptables", mentioning: "CNI-DN-").isEmpty)

            // Our ADD; the reference's DEL removes it. (The reference's CHECK cannot judge: in
            // 1.1.1 it also looks for the chain in ip6tables, and fails for every IPv4-only pod.)
            let fromSwift = try ours.add(pods[1], id: "fromswift", ports: webPorts)
            try theirs.del(pods[1], id: "fromswift", ports: webPorts, result: fromSwift)
            #expect(try node.portmapRules("iptables", of: "fromswift").isEmpty)
            #expect(try node.rules("iptables", mentioning: "CNI-DN-").isEmpty)
        }
    }

    /// For the same container and mappings (both families, a host IP, TCP and UDP), ours writes
    /// exactly the rules the reference writes.
    @Test func writesTheReferencesRules() throws {
        guard pluginsBuilt(), referenceInstalled() else { return }
        try withNode(pods: 1) { node, pods in
            let file = "30-podnet-dualstack.conflist"
            let ports = webPorts + [Port(hostPort: 30443, containerPort: 443, proto: "tcp", hostIP: Node.address)]
            var written: [[String]] = []
            for net in [try network(node, portmapFrom: "/usr/lib/cni", file: file), try network(node, file: file)] {
                let result = try net.add(pods[0], id: "same", ports: ports)
                #expect(address(result, 6) != nil)
                // host-local hands out the next address the second time: compare without it.
                let (v4, v6) = (try #require(address(result)), try #require(address(result, 6)))
                let nat = try node.iptables().replacingOccurrences(of: v4, with: "<ip4>").replacingOccurrences(
                    of: v6, with: "<ip6>")
                written.append(
                    nat.split(separator: "\n").map(String.init).filter { $0.hasPrefix("-A ") || $0.hasPrefix(":CNI-") }
                        .sorted())
                try net.del(pods[0], id: "same", ports: ports, result: result)
                #expect(try node.portmapRules("iptables", of: "same", network: "podnet-dualstack").isEmpty)
            }
            #expect(written[0] == written[1])
            #expect(written[0].contains { $0.contains("-j DNAT --to-destination [<ip6>]:80") })
        }
    }

    /// Containers of both on one node: the shared chains and jumps exist once, traffic reaches
    /// both, and our GC removes the reference's rules of an invalid attachment.
    @Test func sharedChainsStaySingleAndGCCoversReferenceRules() throws {
        guard pluginsBuilt(), referenceInstalled() else { return }
        try withNode(pods: 2) { node, pods in
            var ours = try network(node)
            let theirs = try network(node, portmapFrom: "/usr/lib/cni")
            try ours.add(pods[0], id: "swift1", ports: [Port(hostPort: 30080, containerPort: 80)])
            try theirs.add(pods[1], id: "go1", ports: [Port(hostPort: 30081, containerPort: 80)])
            let nat = try node.host.sh("iptables-save -t nat")
            for jump in [
                "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
                "-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ",
                "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
            ] {
                #expect(nat.split(separator: "\n").filter { $0 == jump }.count == 1, "\(jump)\n\(nat)")
            }
            try withEchoServers([(pods[0], "tcp", 80, "swift"), (pods[1], "tcp", 80, "go")]) { () throws in
                #expect(try request(from: node.host, "tcp", Node.address, 30080)?.hasPrefix("swift ") == true)
                #expect(try request(from: node.host, "tcp", Node.address, 30081)?.hasPrefix("go ") == true)
            }
            ours.version = "1.1.0"
            try ours.gc(valid: ["swift1"])
            #expect(try node.portmapRules("iptables", of: "go1").isEmpty)
            #expect(try node.portmapRules("iptables", of: "swift1").count == 1 + 3)
        }
    }

    /// Bad input: the reference's messages, byte for byte (the code is 7, invalid network
    /// config, where the reference says 999).
    @Test func badInputGivesTheReferenceMessages() throws {
        guard pluginsBuilt(), referenceInstalled() else { return }
        let prev = #""prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.88.0.2/24"}]}"#
        let port = #""runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#
        func conf(_ extra: String) -> String { #"{"cniVersion":"1.0.0","name":"pm","type":"portmap"\#(extra)}"# }
        let cases: [(command: String, config: String)] = [
            ("ADD", conf("," + port)),
            ("CHECK", conf("," + port)),
            ("ADD", conf(#","markMasqBit":32,"# + prev)),
            ("ADD", conf(#","markMasqBit":-1,"# + prev)),
            ("CHECK", conf(#","markMasqBit":99,"# + prev)),
            ("ADD", conf(#","markMasqBit":5,"externalSetMarkChain":"KUBE-MARK-MASQ","# + prev)),
            (
                "ADD",
                conf(#","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80,"protocol":"tcp"}]},"# + prev)
            ),
            (
                "ADD",
                conf(
                    #","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":-3,"protocol":"tcp"}]},"# + prev)
            ),
            (
                "CHECK",
                conf(
                    #","runtimeConfig":{"portMappings":[{"hostPort":-8,"containerPort":80,"protocol":"tcp"}]},"# + prev)
            ),
        ]
        try withNode(pods: 1) { node, pods in
            for c in cases {
                let call = PluginCall(containerID: "bad", netns: pods[0].path)
                let ours = try runPlugin("portmap", c.command, call, config: c.config, host: node.host)
                let theirs = try runPlugin(
                    "portmap", c.command, call, config: c.config, host: node.host, directory: "/usr/lib/cni")
                #expect(ours.status != 0 && theirs.status != 0)
                #expect(ours.json["msg"] as? String == theirs.json["msg"] as? String, "\(c.command) \(c.config)")
                #expect(ours.errorCode == 7 || ours.errorCode == 999)
            }
            #expect(try node.rules("iptables", mentioning: "CNI-").isEmpty)
        }
    }
}
