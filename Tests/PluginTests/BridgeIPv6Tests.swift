// The bridge plugin with IPv6 addresses and DAD, end to end. The node namespace keeps the
// kernel's default of DAD on (accept_dad=1), as a real node has it.
//
// Without enabledad nothing waits for DAD: the pod's end and the bridge get accept_dad=0, so the
// addresses are usable when ADD returns. With enabledad DAD runs, and ADD returns only once it has
// finished for the pod's addresses (the reference's SettleAddresses), failing when another host on
// the link already has the address.

import Foundation
import TestSupport
import Testing

/// A dual-stack bridge + host-local config; `extra` is spliced into the bridge object.
private func dualStackConfig(_ node: Node, extra: String = "") -> String {
    """
    {"cniVersion":"1.1.0","name":"\(node.name)","type":"bridge","bridge":"cni0","isGateway":true\(extra),
     "ipam":{"type":"host-local","dataDir":"\(node.dataDir)",
       "ranges":[[{"subnet":"10.88.0.0/24"}],[{"subnet":"fd88:0:0:1::/64"}]]}}
    """
}

/// The global IPv6 addresses on `ifname` and whether any is tentative.
private func globalV6(_ ns: TestNamespace, _ ifname: String) throws -> (addresses: [String], tentative: Bool) {
    let out = try ns.sh("ip -o -6 addr show dev \(ifname) scope global")
    let addresses = out.split(separator: "\n").compactMap { line -> String? in
        let words = line.split(separator: " ")
        return words.firstIndex(of: "inet6").map { String(words[$0 + 1]) }
    }
    return (addresses, out.contains("tentative"))
}

private func sysctl(_ ns: TestNamespace, _ key: String) throws -> String {
    try ns.sh("sysctl -n \(key)").trimmingCharacters(in: .whitespacesAndNewlines)
}

@Suite(.enabled(if: isRoot, "needs root to create network namespaces"))
struct BridgeIPv6Tests {
    /// Default: no DAD on either end; the pod reaches the gateway over IPv6 at once.
    @Test func withoutEnabledadTheAddressesAreUsableAtOnce() throws {
        try withNode(pods: 1) { node, pods in
            let call = PluginCall(netns: pods[0].path)
            let add = try node.run("ADD", call, dualStackConfig(node))
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")
            #expect(try sysctl(pods[0], "net.ipv6.conf.eth0.accept_dad") == "0")
            #expect(try sysctl(node.host, "net.ipv6.conf.cni0.accept_dad") == "0")
            let pod = try globalV6(pods[0], "eth0"), bridge = try globalV6(node.host, "cni0")
            #expect(pod.addresses.count == 1 && !pod.tentative, "\(pod)")
            #expect(bridge.addresses == ["fd88:0:0:1::1/64"] && !bridge.tentative, "\(bridge)")
            let ping = try run([
                "/usr/sbin/ip", "netns", "exec", pods[0].name, "ping", "-n", "-c", "1", "-W", "2", "fd88:0:0:1::1",
            ])
            #expect(ping.status == 0, "\(ping.stdout)")
            #expect(try node.run("DEL", call, dualStackConfig(node)).status == 0)
            #expect(reservations(in: node.store).isEmpty)
        }
    }

    /// enabledad: DAD runs in the pod, and ADD returns once it has finished.
    @Test func enabledadReturnsOnceDADHasFinished() throws {
        try withNode(pods: 1) { node, pods in
            let conf = dualStackConfig(node, extra: #","enabledad":true"#)
            let call = PluginCall(netns: pods[0].path)
            let add = try node.run("ADD", call, conf)
            #expect(add.status == 0, "\(add.stdout) \(add.stderr)")
            #expect(try sysctl(pods[0], "net.ipv6.conf.eth0.accept_dad") == "1")
            let pod = try globalV6(pods[0], "eth0")
            #expect(pod.addresses.count == 1 && !pod.tentative, "\(pod)")
            #expect(try node.run("DEL", call, conf).status == 0)
        }
    }

    /// enabledad, and another host on the bridge already has the address host-local hands out
    /// next: DAD fails, ADD fails naming it, and nothing is left (the address is released).
    @Test func enabledadFailsWhenTheAddressIsTaken() throws {
        try withNode(pods: 3) { node, pods in
            let conf = dualStackConfig(node, extra: #","enabledad":true"#)
            let first = try node.run("ADD", PluginCall(containerID: "first", netns: pods[0].path), conf)
            #expect(first.status == 0, "\(first.stdout) \(first.stderr)")
            #expect(try globalV6(pods[0], "eth0").addresses == ["fd88:0:0:1::2/64"])
            // The intruder: a port of cni0 whose other end holds fd88:0:0:1::3, the next address.
            let intruder = pods[2]
            try node.host.sh(
                """
                ip link add intr0 type veth peer name intr1 netns \(intruder.name)
                ip link set intr0 master cni0 up
                """)
            try intruder.sh("ip link set intr1 up && ip addr add fd88:0:0:1::3/64 dev intr1 nodad")

            let call = PluginCall(containerID: "second", netns: pods[1].path)
            let second = try node.run("ADD", call, conf)
            #expect(second.status != 0)
            #expect(second.stdout.contains("fd88:0:0:1::3") && second.stdout.contains("DADFAILED"), "\(second.stdout)")
            #expect(try !pods[1].sh("ip -o link show").contains("eth0"))
            #expect(Set(reservations(in: node.store)) == ["10.88.0.2", "fd88:0:0:1::2"])
        }
    }
}
