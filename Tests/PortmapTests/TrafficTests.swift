// Published ports carry traffic: bridge + host-local + portmap from netconf/, run as a runtime
// runs them, with echo servers in the pods. Each test builds its own node and pods.

import Foundation
import TestSupport
import Testing

let backends = ["iptables", "nftables"]

/// The example conflist with portmap's backend set to `backend`.
func portmapNetwork(_ file: String, _ node: Node, backend: String) throws -> Network {
    try Network(file, node: node) { plugin in
        if plugin["type"] as? String == "portmap" { plugin["backend"] = backend }
    }
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct PortmapTrafficTests {
    /// TCP and UDP host port 30080 -> pod0:8080, reached from the node through its address and
    /// through 127.0.0.1, from another pod, and from pod0 itself (hairpin, masqueraded).
    @Test(arguments: backends)
    func publishedPortIsReachable(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 2) { node, pods in
            let net = try portmapNetwork("20-podnet-portmap.conflist", node, backend: backend)
            let ports = [
                Port(hostPort: 30080, containerPort: 8080, proto: "tcp"),
                Port(hostPort: 30080, containerPort: 8080, proto: "udp"),
            ]
            let server = try net.add(pods[0], id: "server", ports: ports)
            try net.add(pods[1], id: "client")
            let serverIP = try #require(address(server))
            #expect(try node.host.sh("cat /proc/sys/net/ipv4/conf/cni0/route_localnet").hasPrefix("1"))
            try withEchoServers([(pods[0], "tcp", 8080, "pod0"), (pods[0], "udp", 8080, "pod0")]) { () throws in
                for proto in ["tcp", "udp"] {
                    let viaAddress = try request(from: node.host, proto, Node.address, 30080)
                    #expect(
                        viaAddress?.hasPrefix("pod0 ") == true,
                        "\(proto) node -> \(Node.address): \(viaAddress ?? "no answer")")
                    let viaLocalhost = try request(from: node.host, proto, "127.0.0.1", 30080)
                    #expect(
                        viaLocalhost?.hasPrefix("pod0 ") == true,
                        "\(proto) node -> 127.0.0.1: \(viaLocalhost ?? "no answer")")
                    let fromPod = try request(from: pods[1], proto, Node.address, 30080)
                    #expect(fromPod?.hasPrefix("pod0 ") == true, "\(proto) pod1 -> node: \(fromPod ?? "no answer")")
                    let hairpin = try request(from: pods[0], proto, Node.address, 30080)
                    #expect(hairpin?.hasPrefix("pod0 ") == true, "\(proto) hairpin: \(hairpin ?? "no answer")")
                    // Masqueraded: the pod sees the node, not itself, as the peer.
                    #expect(hairpin != "pod0 \(serverIP)")
                }
            }
            try net.del(pods[0], id: "server", ports: ports, result: server)
            #expect(try request(from: node.host, "tcp", Node.address, 30080, timeout: 0.5) == nil)
        }
    }

    /// The dual-stack example: the port is published on IPv4 and IPv6 addresses of the node.
    @Test(arguments: backends)
    func dualStackPublishesBothFamilies(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 2) { node, pods in
            let net = try portmapNetwork("30-podnet-dualstack.conflist", node, backend: backend)
            let ports = [
                Port(hostPort: 30443, containerPort: 8443, proto: "tcp"),
                Port(hostPort: 30443, containerPort: 8443, proto: "udp"),
            ]
            let server = try net.add(pods[0], id: "ds-server", ports: ports)
            try net.add(pods[1], id: "ds-client")
            #expect(address(server, 6) != nil)
            try withEchoServers([(pods[0], "tcp", 8443, "pod0"), (pods[0], "udp", 8443, "pod0")]) { () throws in
                for proto in ["tcp", "udp"] {
                    for host in [Node.address, Node.address6] {
                        let fromNode = try request(from: node.host, proto, host, 30443)
                        #expect(
                            fromNode?.hasPrefix("pod0 ") == true, "\(proto) node -> \(host): \(fromNode ?? "no answer")"
                        )
                        let fromPod = try request(from: pods[1], proto, host, 30443)
                        #expect(
                            fromPod?.hasPrefix("pod0 ") == true, "\(proto) pod1 -> \(host): \(fromPod ?? "no answer")")
                    }
                    let hairpin6 = try request(from: pods[0], proto, Node.address6, 30443)
                    #expect(hairpin6?.hasPrefix("pod0 ") == true, "\(proto) hairpin v6: \(hairpin6 ?? "no answer")")
                }
            }
            #expect(try net.check(pods[0], id: "ds-server", ports: ports, result: server) == nil)
            try net.del(pods[0], id: "ds-server", ports: ports, result: server)
            #expect(try node.portmapRules(backend, of: "ds-server", network: "podnet-dualstack").isEmpty)
            #expect(try node.rules(backend, mentioning: "CNI-DN-").isEmpty)
        }
    }

    /// A host IP restricts the mapping to that address: the port answers there and nowhere else.
    @Test(arguments: backends)
    func hostIPLimitsTheAddress(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 1) { node, pods in
            let net = try portmapNetwork("20-podnet-portmap.conflist", node, backend: backend)
            let ports = [Port(hostPort: 30081, containerPort: 8080, proto: "tcp", hostIP: Node.address)]
            try net.add(pods[0], id: "hostip", ports: ports)
            try withEchoServers([(pods[0], "tcp", 8080, "pod0")]) { () throws in
                #expect(try request(from: node.host, "tcp", Node.address, 30081)?.hasPrefix("pod0 ") == true)
                #expect(try request(from: node.host, "tcp", "10.88.0.1", 30081, timeout: 0.5) == nil)
            }
        }
    }

    /// A UDP flow that conntrack still sends to a removed container reaches the container that
    /// publishes the port next, from its first packet: DEL deletes the port's conntrack entries,
    /// and so does ADD, for entries left by someone who did not (GC here, or the reference's DEL).
    @Test(arguments: backends)
    func udpReachesTheNewContainerAfterARestart(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 3) { node, pods in
            var net = try portmapNetwork("20-podnet-portmap.conflist", node, backend: backend)
            net.version = "1.1.0"
            let ports = [Port(hostPort: 30053, containerPort: 5353, proto: "udp")]
            // DEL: the flow to the old container is forgotten.
            let old = try net.add(pods[0], id: "udp-old", ports: ports)
            try withEchoServers([(pods[0], "udp", 5353, "old")]) { () throws in
                #expect(
                    try request(from: node.host, "udp", Node.address, 30053, sourcePort: 40000)?.hasPrefix("old ")
                        == true)
            }
            #expect(try node.conntrackUDP(port: 30053).count == 1)
            try net.del(pods[0], id: "udp-old", ports: ports, result: old)
            #expect(try node.conntrackUDP(port: 30053).isEmpty, "DEL leaves the flow to the old container")

            // ADD: a flow still sent to a container whose rules went without a conntrack clean-up.
            try net.add(pods[1], id: "udp-gone", ports: ports)
            try withEchoServers([(pods[1], "udp", 5353, "gone")]) { () throws in
                #expect(
                    try request(from: node.host, "udp", Node.address, 30053, sourcePort: 40001)?.hasPrefix("gone ")
                        == true)
            }
            try net.gc(valid: [])
            #expect(try node.conntrackUDP(port: 30053).count == 1)
            try net.add(pods[2], id: "udp-new", ports: ports)
            try withEchoServers([(pods[2], "udp", 5353, "new")]) { () throws in
                let answer = try request(from: node.host, "udp", Node.address, 30053, sourcePort: 40001)
                #expect(answer?.hasPrefix("new ") == true, "first packet after the restart: \(answer ?? "no answer")")
            }
        }
    }
}
