// HostPorts' orchestration against a recording fake: which processes run, how many, with which
// input; and the plugin's verbs in-process (config errors, the no-mapping fast path, version
// conversion) through the same fake, so nothing here needs root.

import Addressing
import CNI
import Foundation
import Portmap
import Synchronization
import TestSupport
import Testing

@testable import Netfilter

/// Netfilter's, not CNI's `Command`.
typealias Command = Netfilter.Command

typealias RecordingRunner = RecordingCommandRunner

let readV4 = "iptables -w -t nat -S"
let readV6 = "ip6tables -w -t nat -S"
let restoreV4 = "iptables-restore --noflush -w"
let restoreV6 = "ip6tables-restore --noflush -w"
let oneTCP = forwarding([PortMapping(hostPort: 8080, containerPort: 80, proto: "tcp")])

@Suite struct HostPortsTests {
    @Test func iptablesSetupIsOneReadAndOneRestorePerFamily() throws {
        let fake = RecordingRunner()
        #expect(try HostPorts(runner: fake).setup(backend: nil, oneTCP, addresses: [container]) == .iptables)
        #expect(fake.lines == [readV4, restoreV4])
        #expect(fake.commands[1].stdin.contains("-A CNI-DN-323d23e06ba2fdaccfbf7 -p tcp -m tcp --dport 8080 -j DNAT"))

        let dual = RecordingRunner()
        try HostPorts(runner: dual).setup(
            backend: .iptables, oneTCP, addresses: [container6, container, IPNetwork("10.66.0.9/24")!])
        #expect(dual.lines == [readV4, restoreV4, readV6, restoreV6])
        #expect(dual.commands[1].stdin.contains("10.66.0.2:80") && !dual.commands[1].stdin.contains("10.66.0.9"))
    }

    @Test func nftablesSetupIsOneTransactionForBothFamilies() throws {
        let fake = RecordingRunner()
        try HostPorts(runner: fake).setup(backend: .nftables, oneTCP, addresses: [container, container6])
        #expect(fake.lines == ["nft -f -"])
        #expect(
            fake.commands[0].stdin.contains(
                "add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.66.0.2:80 comment \"ctr1\""))
        #expect(
            fake.commands[0].stdin.contains(
                "add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [fd66::2]:80 comment \"ctr1\""))
    }

    @Test func autoFallsBackToNftablesWhenIptablesIsMissing() throws {
        let fake = RecordingRunner(missing: ["iptables", "ip6tables"])
        #expect(try HostPorts(runner: fake).setup(backend: nil, oneTCP, addresses: [container]) == .nftables)
        #expect(fake.lines == [readV4, "nft --check add table ip cni_hostport", "nft -f -"])
    }

    /// A concurrent ADD created a shared chain between our read and our restore: read again.
    @Test func failedRestoreIsRetriedFromAFreshRead() throws {
        let restores = Mutex(0)
        let fake = RecordingRunner { c in
            guard c.executable == "iptables-restore" else { return nil }
            let n = restores.withLock {
                $0 += 1; return $0
            }
            return n == 1
                ? CommandOutput(status: 1, stderr: "iptables-restore: line 2 failed: Chain already exists.") : nil
        }
        try HostPorts(runner: fake).setup(backend: .iptables, oneTCP, addresses: [container])
        #expect(fake.lines == [readV4, restoreV4, readV4, restoreV4])
    }

    @Test func teardownNeedsOnlyTheNamesAndSkipsCleanFamilies() throws {
        let fake = RecordingRunner { c in
            c.description == readV4 ? CommandOutput(status: 0, stdout: referenceListing) : nil
        }
        let removed = try HostPorts(runner: fake).teardown(backend: .iptables, network: "pmnet", containerID: "ctr1")
        #expect(fake.lines == [readV4, restoreV4, readV6])
        #expect(fake.commands[1].stdin.contains("-X CNI-DN-323d23e06ba2fdaccfbf7"))
        #expect(removed == [UDPPort(family: .v4, port: 8081)])

        // Nothing of the container: reads only.
        let clean = RecordingRunner()
        #expect(
            try HostPorts(runner: clean).teardown(backend: nil, network: "pmnet", containerID: "ctr1", families: [.v4])
                .isEmpty)
        #expect(clean.lines == [readV4])
    }

    @Test func nftablesTeardownDeletesByHandle() throws {
        let fake = RecordingRunner { c in
            c.description == "nft -a list table ip cni_hostport" ? CommandOutput(status: 0, stdout: nftListing) : nil
        }
        let removed = try HostPorts(runner: fake).teardown(backend: .nftables, network: "pmnet", containerID: "ctr1")
        #expect(fake.lines == ["nft -a list table ip cni_hostport", "nft -a list table ip6 cni_hostport", "nft -f -"])
        #expect(
            fake.commands[2].stdin == """
                delete rule ip cni_hostport hostports handle 11
                delete rule ip cni_hostport hostports handle 12
                delete rule ip cni_hostport hostports handle 13
                delete rule ip cni_hostport masquerading handle 14
                delete rule ip cni_hostport masquerading handle 15

                """)
        #expect(removed == [UDPPort(family: .v4, port: 8081)])
    }

    @Test func conntrackIsOneBatch() throws {
        let fake = RecordingRunner()
        try HostPorts(runner: fake).deleteConntrack([UDPPort(family: .v6, port: 53), UDPPort(family: .v4, port: 53)])
        #expect(fake.lines == ["conntrack -R -"])
        #expect(
            fake.commands[0].stdin == "-D -f ipv4 -p udp --orig-port-dst 53\n-D -f ipv6 -p udp --orig-port-dst 53\n")

        // conntrack before 1.4.7 (no -R): one command per port; "0 flow entries" is no error.
        let old = RecordingRunner { c in
            c.arguments.first == "-R"
                ? CommandOutput(status: 2, stderr: "conntrack v1.4.6: unknown option `-R'")
                : CommandOutput(
                    status: 1, stderr: "conntrack v1.4.6 (conntrack-tools): 0 flow entries have been deleted.")
        }
        try HostPorts(runner: old).deleteConntrack([UDPPort(family: .v4, port: 53)])
        #expect(old.lines == ["conntrack -R -", "conntrack -D -f ipv4 -p udp --orig-port-dst 53"])
    }
}

// MARK: - The plugin in-process

let prevResult =
    #"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/p"}],"ips":[{"address":"10.66.0.2/24","gateway":"10.66.0.1","interface":2},{"address":"10.77.0.2/24","interface":0}]}"#

func dispatch(_ command: String, _ config: String, runner: RecordingRunner = RecordingRunner()) -> (
    Outcome, [String: Any]
) {
    let env = [
        "CNI_COMMAND": command, "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/run/netns/p", "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
    ]
    let out = CNIMain.dispatch(Portmap(hostPorts: HostPorts(runner: runner)), env: env, stdin: Array(config.utf8))
    let json = (try? JSONSerialization.jsonObject(with: Data(out.stdout))) as? [String: Any] ?? [:]
    return (out, json)
}

func portmapConfig(version: String = "1.0.0", _ extra: String) -> String {
    #"{"cniVersion":"\#(version)","name":"pmnet","type":"portmap"\#(extra)}"#
}

@Suite struct PortmapPluginTests {
    @Test func withoutPortMappingsNothingRuns() {
        let fake = RecordingRunner()
        let (out, json) = dispatch("ADD", portmapConfig(#","prevResult":\#(prevResult)"#), runner: fake)
        #expect(out.exitCode == 0)
        #expect((json["ips"] as? [[String: Any]])?.count == 2)
        #expect(fake.commands.isEmpty)
    }

    /// The previous result comes back in the config's version.
    @Test(arguments: ["0.3.1", "0.4.0", "1.1.0"])
    func previousResultIsPassedThrough(version: String) {
        let config = portmapConfig(version: version, #","prevResult":\#(prevResult)"#)
            .replacingOccurrences(
                of: #"{"cniVersion":"1.0.0","interfaces""#, with: #"{"cniVersion":"\#(version)","interfaces""#)
        let (out, json) = dispatch("ADD", config)
        #expect(out.exitCode == 0, "\(out.stdoutText)")
        #expect(json["cniVersion"] as? String == version)
        #expect(((json["ips"] as? [[String: Any]])?.first?["version"] != nil) == (version < "1.0.0"))
    }

    /// The mapped address is the first one on CNI_IFNAME: 10.66.0.2 (10.77.0.2 is on the bridge).
    @Test func addInstallsForTheSandboxAddress() {
        let fake = RecordingRunner()
        let ports = #","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#
        let (out, _) = dispatch(
            "ADD", portmapConfig(#","backend":"nftables""# + ports + #","prevResult":\#(prevResult)"#), runner: fake)
        #expect(out.exitCode == 0, "\(out.stdoutText)")
        #expect(fake.lines == ["nft -f -"])
        #expect(fake.commands[0].stdin.contains("dnat to 10.66.0.2:80"))
        #expect(!fake.commands[0].stdin.contains("10.77.0.2"))
    }

    @Test(arguments: [
        (
            "ADD", #","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"tcp"}]}"#,
            999, "must be called as chained plugin"
        ),
        ("CHECK", "", 999, "Required prevResult missing"),
        ("ADD", #","markMasqBit":32"#, 7, "failed to parse config: MasqMarkBit must be between 0 and 31"),
        ("CHECK", #","markMasqBit":-1"#, 7, "MasqMarkBit must be between 0 and 31"),
        (
            "ADD", #","markMasqBit":3,"externalSetMarkChain":"X""#, 7,
            "failed to parse config: Cannot specify externalSetMarkChain and markMasqBit"
        ),
        (
            "ADD", #","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80,"protocol":"tcp"}]}"#, 7,
            "failed to parse config: Invalid host port number: 0"
        ),
        (
            "ADD", #","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":70000,"protocol":"tcp"}]}"#, 7,
            "failed to parse config: Invalid container port number: 70000"
        ),
        (
            "ADD", #","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}"#, 7,
            "failed to parse config: Invalid protocol \"icmp\" for host port 80: must be tcp, udp or sctp"
        ),
        (
            "ADD",
            #","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"tcp","hostIP":"nope"}]}"#,
            7,
            "failed to parse config: Invalid host IP \"nope\" for host port 80"
        ),
        (
            "ADD", #","backend":"iptables","conditionsV4":["ip","daddr","1.2.3.4"],"conditionsV6":["ip6"]"#, 7,
            "failed to parse config: iptables backend was requested but configuration contains nftables-specific options [conditionsV4 conditionsV6]"
        ),
        (
            "ADD",
            #","backend":"nftables","externalSetMarkChain":"KUBE-MARK-MASQ","conditionsV4":["-a","b"],"conditionsV6":["-c","d"]"#,
            7,
            "failed to parse config: nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain conditionsV4 conditionsV6]"
        ),
        ("ADD", #","backend":"ebtables""#, 7, "failed to parse config: unrecognized backend \"ebtables\""),
        (
            "ADD", #","snat":"yes""#, 7,
            "failed to parse config: invalid config: \"snat\" must be a boolean, got \"yes\""
        ),
    ])
    func badInputIsRejectedBeforeAnythingRuns(command: String, extra: String, code: Int, message: String) {
        let fake = RecordingRunner()
        let (out, json) = dispatch(command, portmapConfig(extra), runner: fake)
        #expect(out.exitCode == 1)
        #expect(json["code"] as? Int == code)
        #expect(json["msg"] as? String == message)
        #expect(fake.commands.isEmpty)
    }

    /// With the backend left automatic, options of one backend make it probe for the choice.
    @Test func automaticBackendChecksBackendSpecificOptions() {
        let fake = RecordingRunner(missing: ["iptables", "ip6tables"])
        let (out, json) = dispatch(
            "ADD", portmapConfig(#","externalSetMarkChain":"KUBE-MARK-MASQ","prevResult":\#(prevResult)"#), runner: fake
        )
        #expect(out.exitCode == 1)
        #expect(
            json["msg"] as? String
                == "failed to parse config: nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain]"
        )
    }

    /// DEL removes the container's rules even with a config ADD rejected, so the runtime's DEL
    /// chain goes on to the bridge.
    @Test func delIgnoresAnInvalidConfig() {
        let fake = RecordingRunner()
        let (out, _) = dispatch("DEL", portmapConfig(#","markMasqBit":77"#), runner: fake)
        #expect(out.exitCode == 0, "\(out.stdoutText)")
        #expect(fake.lines == [readV4, readV6])
    }

    /// DEL with prevResult looks only at the families the container had; conntrack runs only
    /// for UDP ports.
    @Test func delUsesPrevResultFamilies() {
        let fake = RecordingRunner { c in
            c.description == readV4 ? CommandOutput(status: 0, stdout: referenceListing) : nil
        }
        let (out, _) = dispatch("DEL", portmapConfig(#","prevResult":\#(prevResult)"#), runner: fake)
        #expect(out.exitCode == 0, "\(out.stdoutText)")
        #expect(fake.lines == [readV4, restoreV4, "conntrack -R -"])
        #expect(fake.commands[2].stdin == "-D -f ipv4 -p udp --orig-port-dst 8081\n")
    }

    @Test func gcNeedsTheValidAttachmentsKey() {
        let fake = RecordingRunner { c in
            c.description == readV4 ? CommandOutput(status: 0, stdout: referenceListing) : nil
        }
        #expect(dispatch("GC", portmapConfig(version: "1.1.0", ""), runner: fake).0.exitCode == 0)
        #expect(fake.commands.isEmpty)
        let valid = #","cni.dev/valid-attachments":[{"containerID":"other","ifname":"eth0"}]"#
        #expect(dispatch("GC", portmapConfig(version: "1.1.0", valid), runner: fake).0.exitCode == 0)
        #expect(fake.lines == [readV4, restoreV4, readV6])
        #expect(fake.commands[1].stdin.contains("-X CNI-DN-323d23e06ba2fdaccfbf7"))
    }
}
