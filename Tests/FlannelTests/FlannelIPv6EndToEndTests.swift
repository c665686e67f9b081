// flannel end to end with IPv6: the built flannel, bridge and host-local binaries run as a runtime
// runs them, with the subnet.env flanneld writes for a dual-stack cluster and for an IPv6-only one
// (netconf/subnet-dualstack.env, netconf/subnet-ipv6only.env, in flanneld's order).
//
// The node namespace keeps the kernel's default of DAD on (accept_dad=1): the pod's addresses and
// the bridge's gateway address must be usable as soon as ADD returns, without waiting for DAD.
// The addresses the tests add themselves are added `nodad`.

import Foundation
import TestSupport
import Testing

private let allVersions = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

/// The node's subnets in both example files.
private let subnet4 = "10.244.7.0/24", gateway4 = "10.244.7.1"
private let network6 = "fd00:10:244::/56", subnet6 = "fd00:10:244:7::/64", gateway6 = "fd00:10:244:7::1"

/// The addresses (address/len) of `family` ("4" or "6") with global scope on `ifname`, and whether
/// any of them is still tentative (DAD not finished).
private func globalAddresses(
    _ ns: TestNamespace, _ ifname: String, family: String
) throws -> (addresses: [String], tentative: Bool) {
    let out = try ns.sh("ip -o -\(family) addr show dev \(ifname) scope global")
    let addresses = out.split(separator: "\n").compactMap { line -> String? in
        let words = line.split(separator: " ")
        return words.firstIndex { $0 == "inet" || $0 == "inet6" }.map { String(words[$0 + 1]) }
    }
    return (addresses, out.contains("tentative"))
}

/// The addresses (address/len) of an ADD result, in any version's layout (`ip4`/`ip6` or `ips`).
private func resultAddresses(_ r: PluginResult) -> [String] {
    let j = r.json
    if let ips = j["ips"] as? [[String: Any]] { return ips.compactMap { $0["address"] as? String } }
    return ["ip4", "ip6"].compactMap { (j[$0] as? [String: Any])?["ip"] as? String }
}

private func withoutPrefix(_ a: String) -> String { String(a.split(separator: "/")[0]) }

/// Whether a masquerade rule of container `id` is in `rules` (iptables-save or nft output): the
/// reference's comment ends in `id: <containerID>`, quoted by iptables-save.
private func names(_ rules: String, _ id: String) -> Bool {
    rules.contains(#"id: \"\#(id)\""#) || rules.contains(#"id: \#(id)""#)
}

/// Whether one ping from `ns` to `address` is answered within 2 s.
private func pings(_ ns: TestNamespace, _ address: String) throws -> Bool {
    try run(["/usr/sbin/ip", "netns", "exec", ns.name, "ping", "-n", "-c", "1", "-W", "2", address]).status == 0
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct FlannelIPv6EndToEndTests {
    /// Dual stack: one address per family in the node's subnets, the default route and the route
    /// to each family's overlay network via the bridge's `.1`, both `.1`s on cni0, usable at once;
    /// CHECK passes; DEL removes everything and releases both addresses.
    @Test(arguments: allVersions)
    func dualStackPodGetsOneAddressPerFamily(version: String) throws {
        try withFlannelNode(pods: 1) { node, pods in
            try node.writeSubnetEnv(try netconfFile("subnet-dualstack.env"))
            let call = PluginCall(containerID: "pod1", netns: pods[0].path)
            let conf = try node.config(version: version)
            let add = try node.run("ADD", call, conf)
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")

            let v4 = try globalAddresses(pods[0], "eth0", family: "4")
            let v6 = try globalAddresses(pods[0], "eth0", family: "6")
            let ip4 = try #require(v4.addresses.first), ip6 = try #require(v6.addresses.first)
            #expect(v4.addresses.count == 1 && v6.addresses.count == 1, "\(v4) \(v6)")
            #expect(ip4.hasPrefix("10.244.7.") && ip4.hasSuffix("/24"), "\(ip4)")
            #expect(ip6.hasPrefix("fd00:10:244:7::") && ip6.hasSuffix("/64"), "\(ip6)")
            #expect(!v6.tentative, "the pod's address waits for DAD")
            #expect(Set(resultAddresses(add)) == [ip4, ip6], "\(add.stdout)")
            #expect(try pods[0].sh("ip -o link show eth0").contains("mtu 1410"))

            // Routes for both networks and both default routes, via the bridge's addresses.
            #expect(try pods[0].sh("ip -4 route show 10.244.0.0/16").contains("via \(gateway4) dev eth0"))
            #expect(try pods[0].sh("ip -6 route show \(network6)").contains("via \(gateway6) dev eth0"))
            #expect(try pods[0].sh("ip -4 route show default").contains("via \(gateway4) dev eth0"))
            #expect(try pods[0].sh("ip -6 route show default").contains("via \(gateway6) dev eth0"))

            let bridge4 = try globalAddresses(node.host, "cni0", family: "4")
            let bridge6 = try globalAddresses(node.host, "cni0", family: "6")
            #expect(bridge4.addresses == ["\(gateway4)/24"])
            #expect(bridge6.addresses == ["\(gateway6)/64"])
            #expect(!bridge6.tentative, "the gateway address waits for DAD")
            #expect(try node.host.sh("sysctl -n net.ipv6.conf.all.forwarding").hasPrefix("1"))

            // host-local's store: one file per address, named by the address as Go prints it.
            #expect(Set(reservations(in: node.store)) == [withoutPrefix(ip4), withoutPrefix(ip6)])
            #expect(
                try String(contentsOfFile: node.store + "/" + withoutPrefix(ip6), encoding: .utf8) == "pod1\r\neth0")

            if version >= "0.4.0" {
                let checkConf = String(conf.dropLast()) + #","prevResult":"# + add.stdout + "}"
                let check = try node.run("CHECK", call, checkConf)
                #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
            }

            let del = try node.run("DEL", call, conf)
            #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!node.saved("pod1"))
            #expect(try !hasEth0(pods[0]))
        }
    }

    /// IPv6-only (no IPv4 keys in subnet.env): the pod and the bridge get IPv6 addresses only, the
    /// routes are IPv6 only; FLANNEL_IPMASQ=false makes the bridge masquerade, in IPv6. CHECK
    /// passes; DEL removes the address, the rules and the veth.
    @Test(arguments: ["0.3.1", "1.0.0", "1.1.0"])
    func ipv6OnlyPodGetsOnlyIPv6(version: String) throws {
        try withFlannelNode(pods: 1) { node, pods in
            try node.writeSubnetEnv(try netconfFile("subnet-ipv6only.env"))
            let call = PluginCall(containerID: "pod6", netns: pods[0].path)
            let conf = try node.config(version: version)
            let add = try node.run("ADD", call, conf)
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")

            #expect(try globalAddresses(pods[0], "eth0", family: "4").addresses.isEmpty)
            let v6 = try globalAddresses(pods[0], "eth0", family: "6")
            let ip6 = try #require(v6.addresses.first)
            #expect(v6.addresses.count == 1 && ip6.hasPrefix("fd00:10:244:7::") && ip6.hasSuffix("/64"), "\(v6)")
            #expect(resultAddresses(add) == [ip6], "\(add.stdout)")
            #expect(try pods[0].sh("ip -4 route show").isEmpty)
            #expect(try pods[0].sh("ip -6 route show \(network6)").contains("via \(gateway6) dev eth0"))
            #expect(try pods[0].sh("ip -6 route show default").contains("via \(gateway6) dev eth0"))
            #expect(try globalAddresses(node.host, "cni0", family: "4").addresses.isEmpty)
            let bridge6 = try globalAddresses(node.host, "cni0", family: "6")
            #expect(bridge6.addresses == ["\(gateway6)/64"] && !bridge6.tentative, "\(bridge6)")
            #expect(reservations(in: node.store) == [withoutPrefix(ip6)])

            // The masquerade rule names the container; only IPv6 has one.
            let rules = { () throws -> (v4: String, v6: String) in
                (try node.host.sh("iptables-save -t nat"), try node.host.sh("ip6tables-save -t nat; nft list ruleset"))
            }
            #expect(try names(rules().v6, "pod6"))
            #expect(try !names(rules().v4, "pod6"))

            if version >= "0.4.0" {
                let checkConf = String(conf.dropLast()) + #","prevResult":"# + add.stdout + "}"
                let check = try node.run("CHECK", call, checkConf)
                #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
            }

            let del = try node.run("DEL", call, conf)
            #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            #expect(reservations(in: node.store).isEmpty)
            #expect(!node.saved("pod6"))
            #expect(try !hasEth0(pods[0]))
            #expect(try !names(rules().v6, "pod6"))
        }
    }

    /// GC on a dual-stack node with FLANNEL_IPMASQ=false: the dropped pod's addresses of both
    /// families and its masquerade rules of both families go; the kept pod keeps all of them.
    @Test func gcReleasesBothFamiliesOfInvalidAttachments() throws {
        try withFlannelNode(pods: 2) { node, pods in
            let env = try netconfFile("subnet-dualstack.env")
            try node.writeSubnetEnv(env.replacingOccurrences(of: "FLANNEL_IPMASQ=true", with: "FLANNEL_IPMASQ=false"))
            let conf = try node.config(version: "1.1.0")
            var held: [String: [String]] = [:]
            for (id, pod) in [("keep", pods[0]), ("drop", pods[1])] {
                let add = try node.run("ADD", PluginCall(containerID: id, netns: pod.path), conf)
                #expect(add.status == 0, "\(add.stdout)")
                held[id] = resultAddresses(add).map(withoutPrefix)
            }
            #expect(held["drop"]?.count == 2 && held["keep"]?.count == 2)
            let rules = { () throws -> (v4: String, v6: String) in
                (try node.host.sh("iptables-save -t nat"), try node.host.sh("ip6tables-save -t nat; nft list ruleset"))
            }
            #expect(try names(rules().v4, "drop") && names(rules().v6, "drop"))

            let valid = [["containerID": "keep", "ifname": "eth0"]]
            let gcConf = try node.config(version: "1.1.0", extra: ["cni.dev/valid-attachments": valid])
            let gc = try node.run("GC", PluginCall(containerID: "", netns: "", ifname: ""), gcConf)
            #expect(gc.status == 0, "\(gc.stdout) \(gc.stderr)")
            #expect(Set(reservations(in: node.store)) == Set(held["keep"] ?? []))
            #expect(files(in: node.dataDir) == ["keep"])
            let after = try rules()
            #expect(!names(after.v4, "drop") && !names(after.v6, "drop"))
            #expect(names(after.v4, "keep") && names(after.v6, "keep"))
        }
    }

    /// Two dual-stack pods on one node reach each other over IPv6 (and IPv4), and reach the node
    /// over IPv6: its bridge address and another of its addresses (the default route), right
    /// after ADD returned.
    @Test func podsReachEachOtherAndTheNodeOverIPv6() throws {
        try withFlannelNode(pods: 2) { node, pods in
            try node.writeSubnetEnv(try netconfFile("subnet-dualstack.env"))
            try node.host.sh(
                """
                ip link add ext0 type veth peer name ext0-peer && ip link set ext0-peer up && ip link set ext0 up
                ip addr add 192.0.2.10/24 dev ext0 && ip addr add fd00:192::10/64 dev ext0 nodad
                """)
            let conf = try node.config()
            var ips: [(v4: String, v6: String)] = []
            for (i, pod) in pods.enumerated() {
                let add = try node.run("ADD", PluginCall(containerID: "pod\(i)", netns: pod.path), conf)
                #expect(add.status == 0, "\(add.stdout) \(add.stderr)")
                let a = resultAddresses(add).map(withoutPrefix)
                ips.append(
                    (try #require(a.first { !$0.contains(":") }), try #require(a.first { $0.contains(":") })))
            }
            for (from, to) in [(0, 1), (1, 0)] {
                #expect(try pings(pods[from], ips[to].v6), "pod\(from) -> \(ips[to].v6)")
                #expect(try pings(pods[from], ips[to].v4), "pod\(from) -> \(ips[to].v4)")
            }
            for target in [gateway6, "fd00:192::10", gateway4, "192.0.2.10"] {
                #expect(try pings(pods[0], target), "pod0 -> node \(target)")
            }
            for (i, pod) in pods.enumerated() {
                let del = try node.run("DEL", PluginCall(containerID: "pod\(i)", netns: pod.path), conf)
                #expect(del.status == 0, "\(del.stdout) \(del.stderr)")
            }
            #expect(reservations(in: node.store).isEmpty)
        }
    }
}
