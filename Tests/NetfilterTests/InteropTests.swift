// Interoperability with the reference plugins (Debian's containernetworking-plugins 1.1.1, whose
// bridge writes the iptables layout): podnet must remove what the Go bridge added, and write
// byte-identical rules.

import Addressing
import Spawn
import Testing

@testable import Netfilter

@Suite(.enabled(if: TestNamespace.available, "needs root and iproute2 to create network namespaces"))
struct ReferenceInteropTests {
    static let bridge = "/usr/lib/cni/bridge"
    let network = "podnet-interop"

    /// Runs the reference bridge with `command` in `host`, its container end in `container`.
    func reference(
        _ command: String, host: TestNamespace, container: TestNamespace, containerID: String,
        dataDir: String
    ) throws -> String {
        let config = """
            {"cniVersion":"0.4.0","name":"\(network)","type":"bridge","bridge":"podnetnf0","isGateway":true,
             "ipMasq":true,"ipam":{"type":"host-local","dataDir":"\(dataDir)",
             "ranges":[[{"subnet":"10.66.0.0/24"}],[{"subnet":"fd66::/64"}]]}}
            """
        return try host.runner.succeed(
            Command(
                "env",
                [
                    "CNI_COMMAND=\(command)", "CNI_CONTAINERID=\(containerID)", "CNI_NETNS=\(container.path)",
                    "CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni", Self.bridge,
                ], stdin: config))
    }

    @Test func teardownAndGCRemoveRulesOfTheReferenceBridge() throws {
        guard Spawn.lookPath(Self.bridge) != nil else {
            Issue.record("\(Self.bridge) is missing: run scripts/deps.sh bench to install the reference plugins")
            return
        }
        let dataDir = "/tmp/podnet-nf-ipam-\(UInt32.random(in: 0...UInt32.max))"
        defer { _ = try? SystemCommandRunner().run(Command("rm", ["-rf", dataDir])) }
        try TestNamespace.with(3) { nss in
            let (host, c1, c2) = (nss[0], nss[1], nss[2])
            let m = Masquerade(runner: host.runner)
            _ = try reference("ADD", host: host, container: c1, containerID: "ref-1", dataDir: dataDir)
            _ = try reference("ADD", host: host, container: c2, containerID: "ref-2", dataDir: dataDir)
            let written = try host.natRules()
            let chain1 = MasqueradeNames.iptablesChain(network: network, containerID: "ref-1")
            let chain2 = MasqueradeNames.iptablesChain(network: network, containerID: "ref-2")
            #expect(written.filter { $0.contains(chain1) }.count == 8)
            #expect(written.filter { $0.contains(chain2) }.count == 8)

            // What the reference wrote for ref-1 is exactly what podnet writes for the same addresses.
            let ours = [IPNetwork("10.66.0.2/24")!, IPNetwork("fd66::2/64")!]
            #expect(
                try m.check(backend: .iptables, network: network, containerID: "ref-1", ifname: "eth0", addresses: ours)
            )

            // GC with only ref-2 valid removes ref-1's chains and jumps in both families.
            try m.gc(network: network, valid: [.init(containerID: "ref-2", ifname: "eth0")])
            let afterGC = try host.natRules()
            #expect(afterGC.filter { $0.contains(chain1) } == [])
            #expect(afterGC.filter { $0.contains(chain2) }.count == 8)

            // Teardown without addresses removes ref-2's.
            try m.teardown(network: network, containerID: "ref-2", ifname: "eth0")
            #expect(try host.natRules() == [])

            // Now podnet writes ref-1's rules and they must equal the reference's, line for line.
            try m.setup(backend: .iptables, network: network, containerID: "ref-1", ifname: "eth0", addresses: ours)
            #expect(try host.natRules() == written.filter { $0.contains(chain1) })
            try m.teardown(network: network, containerID: "ref-1", ifname: "eth0")
            #expect(try host.natRules() == [])
            // No reference DEL here: the 1.1.1 bridge fails DEL while the container link still
            // exists but its rules are gone ("Chain 'CNI-...' does not exist" from iptables-nft
            // 1.8.9 is not one of go-iptables' "not exist" messages). The namespaces and the IPAM
            // directory are deleted instead.
        }
    }
}
