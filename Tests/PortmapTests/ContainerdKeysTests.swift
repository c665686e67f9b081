// containerd 1.6 (Debian 12's) passes port mappings with Go field names,
// `{"HostPort":8081,"ContainerPort":80,"Protocol":"tcp","HostIP":""}`; the Go portmap reads them
// because encoding/json matches keys ignoring case, and so must ours (issue 8 item 1).

import Addressing
import CNI
import Foundation
import Netfilter
import Portmap
import TestSupport
import Testing

private func portmapRequest(_ runtimeConfig: String, extra: String = "") throws -> Request {
    let env = try CNIEnvironment([
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
    ])
    let stdin = #"{"cniVersion":"1.0.0","name":"podnet","type":"portmap","runtimeConfig":\#(runtimeConfig)\#(extra)}"#
    return try Request(env: env, stdin: Array(stdin.utf8), supported: SpecVersion.allCases)
}

@Suite struct PortmapConfigKeyTests {
    @Test func containerdStyleMappingsAreRead() throws {
        let r = try portmapRequest(
            #"{"portMappings":[{"HostPort":8081,"ContainerPort":80,"Protocol":"tcp","HostIP":""},"#
                + #"{"hostport":5353,"CONTAINERPORT":53,"protocol":"UDP","HostIP":"192.0.2.10"}]}"#,
            extra: #","SNAT":false,"MasqAll":true,"Backend":"nftables""#)
        let c = try PortmapConfig(r)
        #expect(
            c.forwarding.mappings == [
                PortMapping(hostPort: 8081, containerPort: 80, proto: "tcp"),
                PortMapping(hostPort: 5353, containerPort: 53, proto: "udp", hostIP: IPAddress("192.0.2.10")),
            ])
        #expect(c.forwarding.snat == false)
        #expect(c.forwarding.masqAll == true)
        #expect(c.backend == .nftables)
        // The capability key itself, as a Go struct field, is matched ignoring case too.
        let upper = try PortmapConfig(
            try portmapRequest(#"{"PortMappings":[{"HostPort":8081,"ContainerPort":80,"Protocol":"tcp"}]}"#))
        #expect(upper.forwarding.mappings == [PortMapping(hostPort: 8081, containerPort: 80, proto: "tcp")])
    }

    @Test func wrongTypeNamesTheKeyAsWritten() throws {
        let r = try portmapRequest(#"{"portMappings":[{"HostPort":"8081","ContainerPort":80,"Protocol":"tcp"}]}"#)
        #expect(
            throws: CNIError(
                .invalidNetworkConfig,
                #"invalid config: "runtimeConfig.portMappings[0].HostPort" must be an integer, got "8081""#)
        ) {
            try PortmapConfig(r)
        }
    }
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct PortmapContainerdKeysTests {
    /// The built bridge and portmap, with bridge keys spelled as Go field names and the port
    /// mapping as containerd 1.6 sends it: the DNAT rule appears, the port answers, DEL removes it.
    @Test(arguments: backends)
    func containerd16PortMappingsArePublished(backend: String) throws {
        guard pluginsBuilt() else { return }
        try withNode(pods: 1) { node, pods in
            let net = try Network("20-podnet-portmap.conflist", node: node) { plugin in
                if plugin["type"] as? String == "portmap" {
                    plugin["backend"] = nil
                    plugin["Backend"] = backend
                } else {
                    let ipam = plugin.removeValue(forKey: "ipam") as! [String: Any]
                    plugin["IPAM"] = [
                        "Type": ipam["type"]!, "Ranges": ipam["ranges"]!, "Routes": ipam["routes"]!,
                        "DataDir": ipam["dataDir"]!,
                    ]
                    for (key, goName) in [
                        ("isGateway", "IsGateway"), ("ipMasq", "IPMasq"), ("hairpinMode", "HairpinMode"),
                    ] {
                        plugin[goName] = plugin.removeValue(forKey: key)
                    }
                }
            }
            let mappings: [String: Any] = [
                "portMappings": [["HostPort": 30081, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""]]
            ]
            let call = { (type: String) in net.call(pods[0], "ctrd16", type: type) }
            let bridge = try net.invoke(0, "ADD", call("bridge"), net.config(0, ports: [], prevResult: nil))
            try #require(bridge.status == 0, "\(bridge.stdout)")
            let portmapConfig = net.config(1, ports: [], prevResult: bridge.json, extra: ["runtimeConfig": mappings])
            let portmap = try net.invoke(1, "ADD", call("portmap"), portmapConfig)
            try #require(portmap.status == 0, "\(portmap.stdout)")
            let podIP = try #require(address(bridge.json))

            // IsGateway was read: the bridge holds the gateway address.
            #expect(try node.host.sh("ip -4 -o addr show dev cni0").contains("10.88.0.1/16"))
            let rules = try node.portmapRules(backend, of: "ctrd16")
            let dnat = backend == "iptables" ? "--to-destination \(podIP):8080" : "dnat to \(podIP):8080"
            #expect(rules.contains { $0.contains(dnat) && $0.contains("30081") }, "\(rules)")
            try withEchoServers([(pods[0], "tcp", 8080, "pod0")]) { () throws in
                let answer = try request(from: node.host, "tcp", Node.address, 30081)
                #expect(answer?.hasPrefix("pod0 ") == true, "node -> \(Node.address):30081: \(answer ?? "no answer")")
            }

            let del = try net.invoke(1, "DEL", call("portmap"), portmapConfig)
            #expect(del.status == 0, "\(del.stdout)")
            #expect(try node.portmapRules(backend, of: "ctrd16").isEmpty)
            try net.del(pods[0], id: "ctrd16")
        }
    }
}
