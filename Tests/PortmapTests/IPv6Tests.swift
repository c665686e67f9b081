// Published ports over IPv6, as runtimes drive them: the dual-stack example conflist with a client
// on another host, the node's localhost, and flannel + portmap (netconf/40-flannel.conflist) on an
// IPv6-only node, in both backends.
//
// localhost: portmap's IPv4 path from 127.0.0.1 works because portmap sets route_localnet on the
// bridge and masquerades 127.0.0.1 (the reference's "127.0.0.1 ... masquerade" rule). IPv6 has no
// route_localnet: the kernel never sends a packet with source ::1 off the loopback device. As in the
// reference, [::1]:hostPort is therefore DNATed (the entry rule matches every local destination)
// and then dropped; the node reaches an IPv6 published port through one of its own addresses.

import Foundation
import TestSupport
import Testing

/// The example dual-stack network's node prefix (netconf/30-podnet-dualstack.conflist).
private let podPrefix6 = "fd88::"

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct PortmapIPv6Tests {
    /// A client on another host (a namespace behind the node's ext0) reaches the pod through the
    /// node's IPv6 address, over TCP and UDP, through the `ip6` rules of the backend.
    @Test(arguments: backends)
    func publishedPortReachesThePodFromAnotherHostOverIPv6(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 2) { node, pods in
            let client = pods[1]
            try node.host.sh("ip link set ext0-peer netns \(client.name)")
            try client.sh(
                """
                sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
                ip link set ext0-peer up && ip addr add fd00:192::20/64 dev ext0-peer nodad
                """)
            let net = try portmapNetwork("30-podnet-dualstack.conflist", node, backend: backend)
            let ports = [
                Port(hostPort: 30444, containerPort: 8443, proto: "tcp"),
                Port(hostPort: 30444, containerPort: 8443, proto: "udp"),
            ]
            let server = try net.add(pods[0], id: "v6-server", ports: ports)
            let serverIP6 = try #require(address(server, 6))
            #expect(serverIP6.hasPrefix(podPrefix6))

            // The IPv6 DNAT rules are in the backend's IPv6 table.
            let dnat6 =
                backend == "iptables"
                ? try node.host.sh("ip6tables-save -t nat") : try node.host.sh("nft list table ip6 cni_hostport")
            #expect(dnat6.contains(serverIP6), "\(dnat6)")

            try withEchoServers([(pods[0], "tcp", 8443, "pod0"), (pods[0], "udp", 8443, "pod0")]) { () throws in
                for proto in ["tcp", "udp"] {
                    let answer = try request(from: client, proto, Node.address6, 30444)
                    #expect(answer?.hasPrefix("pod0 ") == true, "\(proto) client -> node: \(answer ?? "no answer")")
                    // From another host the source is kept (only hairpin and localhost are masqueraded).
                    #expect(answer == "pod0 fd00:192::20", "\(proto): \(answer ?? "no answer")")
                }
            }
            try net.del(pods[0], id: "v6-server", ports: ports, result: server)
            #expect(try node.portmapRules(backend, of: "v6-server", network: "podnet-dualstack").isEmpty)
            #expect(try request(from: client, "tcp", Node.address6, 30444, timeout: 0.5) == nil)
        }
    }

    /// 127.0.0.1:hostPort reaches the pod; [::1]:hostPort does not (see the note at the top), and
    /// the node's own IPv6 address does.
    @Test(arguments: backends)
    func localhostIsIPv4Only(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 1) { node, pods in
            let net = try portmapNetwork("30-podnet-dualstack.conflist", node, backend: backend)
            let ports = [Port(hostPort: 30445, containerPort: 8443, proto: "tcp")]
            let server = try net.add(pods[0], id: "v6-local", ports: ports)
            try withEchoServers([(pods[0], "tcp", 8443, "pod0")]) { () throws in
                let v4 = try request(from: node.host, "tcp", "127.0.0.1", 30445)
                #expect(v4?.hasPrefix("pod0 ") == true, "127.0.0.1: \(v4 ?? "no answer")")
                let v6 = try request(from: node.host, "tcp", "::1", 30445, timeout: 0.5)
                #expect(v6 == nil, "[::1] reached \(v6 ?? "")")
                let own = try request(from: node.host, "tcp", Node.address6, 30445)
                #expect(own?.hasPrefix("pod0 ") == true, "\(Node.address6): \(own ?? "no answer")")
            }
            try net.del(pods[0], id: "v6-local", ports: ports, result: server)
        }
    }

    /// flannel + portmap as kube-flannel ships them, on an IPv6-only node (subnet.env without IPv4
    /// keys): the port is published on the node's IPv6 addresses only, reachable from the node, from
    /// another pod and from the pod itself (hairpin, masqueraded); CHECK passes; DEL removes the
    /// rules and releases the address.
    @Test(arguments: backends)
    func flannelIPv6OnlyNodePublishesOverIPv6(backend: String) throws {
        guard pluginsBuilt(), FileManager.default.isExecutableFile(atPath: pluginDirectory + "/flannel") else {
            Issue.record("plugin binary \(pluginDirectory)/flannel not found")
            return
        }
        try withNode(pods: 2) { node, pods in
            let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent()
            let subnetFile = node.dataDir + "/subnet.env"
            try Data(contentsOf: root.appendingPathComponent("netconf/subnet-ipv6only.env"))
                .write(to: URL(fileURLWithPath: subnetFile))
            let net = try Network("40-flannel.conflist", node: node) { plugin in
                switch plugin["type"] as? String {
                case "flannel":
                    plugin["subnetFile"] = subnetFile
                    plugin["dataDir"] = node.dataDir + "/flannel"
                    plugin["ipam"] = ["dataDir": node.dataDir]
                case "portmap": plugin["backend"] = backend
                default: break
                }
            }
            let ports = [
                Port(hostPort: 30446, containerPort: 8080, proto: "tcp"),
                Port(hostPort: 30446, containerPort: 8080, proto: "udp"),
            ]
            let server = try net.add(pods[0], id: "fl6-server", ports: ports)
            try net.add(pods[1], id: "fl6-client")
            #expect(address(server, 4) == nil)
            let serverIP6 = try #require(address(server, 6))
            #expect(serverIP6.hasPrefix("fd00:10:244:7::"))
            // IPv6 rules only, for a pod without an IPv4 address.
            let (v4, v6) =
                backend == "iptables"
                ? (try node.host.sh("iptables-save -t nat"), try node.host.sh("ip6tables-save -t nat"))
                : (
                    try node.host.sh("nft list table ip cni_hostport 2>/dev/null || true"),
                    try node.host.sh("nft list table ip6 cni_hostport")
                )
            #expect(!v4.contains("fl6-server"), "\(v4)")
            #expect(v6.contains("fl6-server") && v6.contains(serverIP6), "\(v6)")

            try withEchoServers([(pods[0], "tcp", 8080, "pod0"), (pods[0], "udp", 8080, "pod0")]) { () throws in
                for proto in ["tcp", "udp"] {
                    let fromNode = try request(from: node.host, proto, Node.address6, 30446)
                    #expect(fromNode?.hasPrefix("pod0 ") == true, "\(proto) node: \(fromNode ?? "no answer")")
                    let fromPod = try request(from: pods[1], proto, Node.address6, 30446)
                    #expect(fromPod?.hasPrefix("pod0 ") == true, "\(proto) pod1: \(fromPod ?? "no answer")")
                    let hairpin = try request(from: pods[0], proto, Node.address6, 30446)
                    #expect(hairpin?.hasPrefix("pod0 ") == true, "\(proto) hairpin: \(hairpin ?? "no answer")")
                    #expect(hairpin != "pod0 \(serverIP6)", "hairpin is not masqueraded")
                }
            }
            #expect(try net.check(pods[0], id: "fl6-server", ports: ports, result: server) == nil)
            try net.del(pods[0], id: "fl6-server", ports: ports, result: server)
            #expect(try node.portmapRules(backend, of: "fl6-server", network: "cbr0").isEmpty)
            #expect(reservations(in: net.store).count == 1)
        }
    }
}
