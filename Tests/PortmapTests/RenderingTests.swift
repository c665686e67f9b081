// The rule text of both layouts, compared with what the reference writes (the iptables lines
// are `iptables-save` output of /usr/lib/cni/portmap 1.1.1 for the same input).

import Addressing
import Testing

@testable import Netfilter

let container = IPNetwork("10.66.0.2/24")!
let container6 = IPNetwork("fd66::2/64")!

func forwarding(_ mappings: [PortMapping], network: String = "pmnet", id: String = "ctr1") -> PortForwarding {
    PortForwarding(network: network, containerID: id, mappings: mappings)
}

let threeMappings = [
    PortMapping(hostPort: 8080, containerPort: 80, proto: "tcp"),
    PortMapping(hostPort: 8081, containerPort: 81, proto: "udp"),
    PortMapping(hostPort: 8082, containerPort: 82, proto: "tcp", hostIP: IPAddress("10.66.0.1")),
]

@Suite struct PortmapNamesTests {
    @Test func namesMatchTheReference() {
        // From the reference's iptables-save for network "pmnet", container "ctr1".
        #expect(PortmapNames.containerChain(network: "pmnet", containerID: "ctr1") == "CNI-DN-323d23e06ba2fdaccfbf7")
        #expect(PortmapNames.containerChain(network: "pmnet", containerID: "ctr1").count == 28)
        #expect(
            PortmapNames.legacyContainerSNATChain(network: "pmnet", containerID: "ctr1")
                == "CNI-SN-323d23e06ba2fdaccfbf7")
        #expect(PortmapNames.dnatComment(network: "pmnet", containerID: "ctr1") == #"dnat name: "pmnet" id: "ctr1""#)
        #expect(PortmapNames.mark(bit: 13) == "0x2000/0x2000")
        #expect(PortmapNames.mark(bit: 0) == "0x1/0x1")
        #expect(PortmapNames.mark(bit: 31) == "0x80000000/0x80000000")
        let long = PortmapNames.dnatComment(network: "n", containerID: String(repeating: "a", count: 300))
        #expect(long.count == 255 && long.hasSuffix("..."))
    }
}

@Suite struct IPTablesPortmapTests {
    @Test func rulesAreWhatTheReferenceWrites() {
        let v4 = IPTablesPortmap(family: .v4, forwarding: forwarding(threeMappings))
        let chain = "CNI-DN-323d23e06ba2fdaccfbf7"
        #expect(
            v4.chainRules(container: container).map { $0.line() } == [
                "-A \(chain) -s 10.66.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
                "-A \(chain) -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
                "-A \(chain) -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.66.0.2:80",
                "-A \(chain) -s 10.66.0.0/24 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK",
                "-A \(chain) -s 127.0.0.1/32 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK",
                "-A \(chain) -p udp -m udp --dport 8081 -j DNAT --to-destination 10.66.0.2:81",
                "-A \(chain) -s 10.66.0.0/24 -d 10.66.0.1/32 -p tcp -m tcp --dport 8082 -j CNI-HOSTPORT-SETMARK",
                "-A \(chain) -s 127.0.0.1/32 -d 10.66.0.1/32 -p tcp -m tcp --dport 8082 -j CNI-HOSTPORT-SETMARK",
                "-A \(chain) -d 10.66.0.1/32 -p tcp -m tcp --dport 8082 -j DNAT --to-destination 10.66.0.2:82",
            ])
        let comment = #""dnat name: \"pmnet\" id: \"ctr1\"""#
        #expect(
            v4.entryRules().map { $0.line() } == [
                "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \(comment) -m multiport --dports 8080,8082 -j \(chain)",
                "-A CNI-HOSTPORT-DNAT -p udp -m comment --comment \(comment) -m multiport --dports 8081 -j \(chain)",
            ])
        // v6: no localhost rule, the v4 host IP's mapping is skipped, its port still listed.
        let v6 = IPTablesPortmap(family: .v6, forwarding: forwarding(threeMappings))
        #expect(
            v6.chainRules(container: container6).map { $0.line() } == [
                "-A \(chain) -s fd66::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
                "-A \(chain) -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd66::2]:80",
                "-A \(chain) -s fd66::/64 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK",
                "-A \(chain) -p udp -m udp --dport 8081 -j DNAT --to-destination [fd66::2]:81",
            ])
        #expect(v6.entryRules() == v4.entryRules())
    }

    @Test func optionsShapeTheRules() {
        var f = forwarding([PortMapping(hostPort: 80, containerPort: 8080, proto: "tcp")])
        f.masqAll = true
        f.conditionsV4 = ["-d", "192.0.2.1"]
        let masqAll = IPTablesPortmap(family: .v4, forwarding: f)
        #expect(
            masqAll.chainRules(container: container).map { $0.arguments.joined(separator: " ") } == [
                "-s 0.0.0.0/0 -p tcp -m tcp --dport 80 -j CNI-HOSTPORT-SETMARK",
                "-p tcp -m tcp --dport 80 -j DNAT --to-destination 10.66.0.2:8080",
            ])
        #expect(masqAll.entryRules()[0].arguments.suffix(4) == ["-d", "192.0.2.1", "-j", masqAll.chain])

        f.masqAll = false
        f.externalSetMarkChain = "KUBE-MARK-MASQ"
        let external = IPTablesPortmap(family: .v4, forwarding: f)
        #expect(external.chainRules(container: container).filter { $0.target == "KUBE-MARK-MASQ" }.count == 2)
        #expect(external.sharedChains == ["CNI-HOSTPORT-DNAT"])

        f.snat = false
        let noSNAT = IPTablesPortmap(family: .v4, forwarding: f)
        #expect(noSNAT.chainRules(container: container).count == 1)
        #expect(noSNAT.sharedRules.count == 2)  // PREROUTING and OUTPUT jumps only

        // multiport takes at most 15 ports per rule.
        let many = (1...20).map { PortMapping(hostPort: 1000 + $0, containerPort: 80, proto: "tcp") }
        let entries = IPTablesPortmap(family: .v4, forwarding: forwarding(many)).entryRules()
        #expect(entries.count == 2)
        #expect(entries[0].value(of: "--dports")!.split(separator: ",").count == 15)
        #expect(entries[1].value(of: "--dports") == "1016,1017,1018,1019,1020")
    }

    @Test func setupScriptCreatesOnlyWhatIsMissing() {
        let p = IPTablesPortmap(
            family: .v4, forwarding: forwarding([PortMapping(hostPort: 8080, containerPort: 80, proto: "tcp")]))
        let empty = IPTablesListing(parsing: "-P PREROUTING ACCEPT\n-P OUTPUT ACCEPT\n")
        let chain = p.chain
        let comment = #""dnat name: \"pmnet\" id: \"ctr1\"""#
        #expect(
            p.setupScript(container: container, table: empty) == """
                *nat
                -N CNI-HOSTPORT-SETMARK
                -N CNI-HOSTPORT-MASQ
                -N CNI-HOSTPORT-DNAT
                -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
                -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
                -I POSTROUTING 1 -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
                -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
                -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
                :\(chain) - [0:0]
                -A \(chain) -s 10.66.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
                -A \(chain) -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
                -A \(chain) -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.66.0.2:80
                -I CNI-HOSTPORT-DNAT 1 -p tcp -m comment --comment \(comment) -m multiport --dports 8080 -j \(chain)
                COMMIT

                """)
        // A node where the reference (or an earlier ADD of this container) set everything up:
        // nothing shared is added again; the container's old entry rule is replaced.
        let installed = IPTablesListing(parsing: referenceListing)
        let script = p.setupScript(container: container, table: installed)
        #expect(!script.contains("-N "))
        #expect(!script.contains("PREROUTING") && !script.contains("POSTROUTING") && !script.contains("SETMARK -m"))
        #expect(
            script.contains(
                "-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment \(comment) -m multiport --dports 8080,8082 -j \(chain)"
            ))
        #expect(script.contains("-D CNI-HOSTPORT-DNAT -p udp "))
        #expect(script.contains("-I CNI-HOSTPORT-DNAT 1 -p tcp "))
    }

    @Test func checkComparesRulesAsIptablesPrintsThem() {
        let p = IPTablesPortmap(family: .v4, forwarding: forwarding(threeMappings))
        let installed = IPTablesListing(parsing: referenceListing)
        #expect(p.missingRule(container: container, in: installed) == nil)
        // Written the reference's way (Go's argument order, unmasked source) it is the same rule.
        let goStyle = IPTablesRule(
            chain: p.chain,
            arguments: ["-p", "tcp", "--dport", "8080", "-s", "10.66.0.2/24", "-j", "CNI-HOSTPORT-SETMARK"])
        #expect(goStyle.key == p.chainRules(container: container)[0].key)
        let goEntry = IPTablesRule(
            chain: "CNI-HOSTPORT-DNAT",
            arguments: [
                "-m", "comment", "--comment", #"dnat name: "pmnet" id: "ctr1""#,
                "-m", "multiport", "-p", "tcp", "--destination-ports", "8080,8082", "-j", p.chain,
            ])
        #expect(goEntry.key == p.entryRules()[0].key)
        for missing in [4, 9, 13, 20] {
            var lines = referenceListing.split(separator: "\n")
            lines.remove(at: missing)
            #expect(
                p.missingRule(container: container, in: IPTablesListing(parsing: lines.joined(separator: "\n"))) != nil)
        }
        #expect(p.missingRule(container: IPNetwork("10.66.0.3/24")!, in: installed) != nil)
    }

    @Test func teardownFindsEverythingByName() {
        let table = IPTablesListing(parsing: referenceListing)
        let chain = "CNI-DN-323d23e06ba2fdaccfbf7"
        #expect(
            IPTablesPortmap.teardownScript(chains: [chain, "CNI-SN-323d23e06ba2fdaccfbf7"], table: table) == """
                *nat
                :\(chain) - [0:0]
                -D CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"pmnet\\" id: \\"ctr1\\"" -m multiport --dports 8080,8082 -j \(chain)
                -D CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"pmnet\\" id: \\"ctr1\\"" -m multiport --dports 8081 -j \(chain)
                -X \(chain)
                COMMIT

                """)
        #expect(IPTablesPortmap.teardownScript(chains: ["CNI-DN-other"], table: table) == nil)
        #expect(IPTablesPortmap.udpPorts(chain: chain, table: table) == [8081])
        #expect(IPTablesPortmap.staleChains(network: "pmnet", validContainerIDs: ["ctr1"], table: table).isEmpty)
        #expect(IPTablesPortmap.staleChains(network: "pmnet", validContainerIDs: ["ctr2"], table: table) == [chain])
        #expect(IPTablesPortmap.staleChains(network: "other", validContainerIDs: [], table: table).isEmpty)
    }
}

/// `iptables -S -t nat` after the reference portmap 1.1.1 added `threeMappings` for pmnet/ctr1.
let referenceListing = """
    -P PREROUTING ACCEPT
    -P INPUT ACCEPT
    -P OUTPUT ACCEPT
    -P POSTROUTING ACCEPT
    -N CNI-DN-323d23e06ba2fdaccfbf7
    -N CNI-HOSTPORT-DNAT
    -N CNI-HOSTPORT-MASQ
    -N CNI-HOSTPORT-SETMARK
    -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
    -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
    -A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
    -A CNI-DN-323d23e06ba2fdaccfbf7 -s 10.66.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
    -A CNI-DN-323d23e06ba2fdaccfbf7 -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK
    -A CNI-DN-323d23e06ba2fdaccfbf7 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.66.0.2:80
    -A CNI-DN-323d23e06ba2fdaccfbf7 -s 10.66.0.0/24 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK
    -A CNI-DN-323d23e06ba2fdaccfbf7 -s 127.0.0.1/32 -p udp -m udp --dport 8081 -j CNI-HOSTPORT-SETMARK
    -A CNI-DN-323d23e06ba2fdaccfbf7 -p udp -m udp --dport 8081 -j DNAT --to-destination 10.66.0.2:81
    -A CNI-DN-323d23e06ba2fdaccfbf7 -s 10.66.0.0/24 -d 10.66.0.1/32 -p tcp -m tcp --dport 8082 -j CNI-HOSTPORT-SETMARK
    -A CNI-DN-323d23e06ba2fdaccfbf7 -s 127.0.0.1/32 -d 10.66.0.1/32 -p tcp -m tcp --dport 8082 -j CNI-HOSTPORT-SETMARK
    -A CNI-DN-323d23e06ba2fdaccfbf7 -d 10.66.0.1/32 -p tcp -m tcp --dport 8082 -j DNAT --to-destination 10.66.0.2:82
    -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"pmnet\\" id: \\"ctr1\\"" -m multiport --dports 8080,8082 -j CNI-DN-323d23e06ba2fdaccfbf7
    -A CNI-HOSTPORT-DNAT -p udp -m comment --comment "dnat name: \\"pmnet\\" id: \\"ctr1\\"" -m multiport --dports 8081 -j CNI-DN-323d23e06ba2fdaccfbf7
    -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
    -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
    """

@Suite struct NFTPortmapTests {
    @Test func setupLinesAreTheReferenceLayout() {
        var f = forwarding(threeMappings)
        f.conditionsV4 = ["ip", "daddr", "!=", "192.0.2.99"]
        let lines = NFTPortmap(family: .v4, forwarding: f).setupLines(container: container.address)
        let t = "ip cni_hostport"
        #expect(
            lines == [
                "add table \(t) { comment \"CNI portmap plugin\" ; }",
                "add chain \(t) hostports",
                "add chain \(t) hostip_hostports",
                "add chain \(t) hostports_all",
                "flush chain \(t) hostports_all",
                "add rule \(t) hostports_all jump hostip_hostports",
                "add rule \(t) hostports_all jump hostports",
                "add chain \(t) prerouting { type nat hook prerouting priority dstnat ; }",
                "flush chain \(t) prerouting",
                "add rule \(t) prerouting ip daddr != 192.0.2.99 fib daddr type local jump hostports_all",
                "add chain \(t) output { type nat hook output priority -100 ; }",
                "flush chain \(t) output",
                "add rule \(t) output ip daddr != 192.0.2.99 fib daddr type local jump hostports_all",
                "add chain \(t) masquerading { type nat hook postrouting priority srcnat ; }",
                "add rule \(t) hostports tcp dport 8080 dnat to 10.66.0.2:80 comment \"ctr1\"",
                "add rule \(t) hostports udp dport 8081 dnat to 10.66.0.2:81 comment \"ctr1\"",
                "add rule \(t) hostports ip daddr 10.66.0.1 tcp dport 8082 dnat to 10.66.0.2:82 comment \"ctr1\"",
                "add rule \(t) masquerading ip saddr 10.66.0.2 ip daddr 10.66.0.2 masquerade comment \"ctr1\"",
                "add rule \(t) masquerading ip saddr 127.0.0.1 ip daddr 10.66.0.2 masquerade comment \"ctr1\"",
            ])
        let v6 = NFTPortmap(family: .v6, forwarding: forwarding(threeMappings)).setupLines(
            container: container6.address)
        #expect(
            v6.filter { $0.contains("comment \"ctr1\"") } == [
                "add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [fd66::2]:80 comment \"ctr1\"",
                "add rule ip6 cni_hostport hostports udp dport 8081 dnat to [fd66::2]:81 comment \"ctr1\"",
                "add rule ip6 cni_hostport masquerading ip6 saddr fd66::2 ip6 daddr fd66::2 masquerade comment \"ctr1\"",
            ])
        var masqAll = forwarding(threeMappings)
        masqAll.masqAll = true
        #expect(
            NFTPortmap(family: .v4, forwarding: masqAll).masqueradeRules(container: container.address)
                == ["ip saddr 0.0.0.0/0 ip daddr 10.66.0.2 masquerade"])
        masqAll.snat = false
        #expect(
            !NFTPortmap(family: .v4, forwarding: masqAll).setupLines(container: container.address).contains {
                $0.contains("masquerad")
            })
    }

    @Test func listingsFindTheContainersRules() {
        let listing = NFTListing(parsing: nftListing)
        let p = NFTPortmap(family: .v4, forwarding: forwarding(threeMappings))
        #expect(p.missingRule(container: container.address, in: listing) == nil)
        let own = NFTPortmap.containerRules(containerID: "ctr1", in: listing)
        #expect(own.map(\.handle) == [11, 12, 13, 14, 15])
        #expect(NFTPortmap.udpPorts(own) == [8081])
        #expect(NFTPortmap.deleteLines(.v4, [own[0]]) == ["delete rule ip cni_hostport hostports handle 11"])
        #expect(NFTPortmap.staleRules(validContainerIDs: ["ctr1"], in: listing).map(\.handle) == [16])
        #expect(NFTPortmap.staleRules(validContainerIDs: ["ctr2"], in: listing).map(\.handle) == [11, 12, 13, 14, 15])
        #expect(NFTPortmap.staleRules(validContainerIDs: [], in: listing).map(\.handle) == [11, 12, 13, 16, 14, 15])

        var lines = nftListing.split(separator: "\n")
        lines.removeAll { $0.contains("handle 12") }
        #expect(
            p.missingRule(container: container.address, in: NFTListing(parsing: lines.joined(separator: "\n"))) != nil)
        lines.removeAll { $0.contains("handle 15") }
        #expect(
            p.missingRule(container: container.address, in: NFTListing(parsing: lines.joined(separator: "\n"))) != nil)
    }
}

/// `nft -a list table ip cni_hostport` after our setup of `threeMappings` for ctr1 (and one
/// rule of another container).
let nftListing = """
    table ip cni_hostport { # handle 10
    \tcomment "CNI portmap plugin"
    \tchain hostports { # handle 1
    \t\ttcp dport 8080 dnat to 10.66.0.2:80 comment "ctr1" # handle 11
    \t\tudp dport 8081 dnat to 10.66.0.2:81 comment "ctr1" # handle 12
    \t\tip daddr 10.66.0.1 tcp dport 8082 dnat to 10.66.0.2:82 comment "ctr1" # handle 13
    \t\ttcp dport 9090 dnat to 10.66.0.3:90 comment "ctr2" # handle 16
    \t}

    \tchain hostip_hostports { # handle 2
    \t}

    \tchain hostports_all { # handle 3
    \t\tjump hostip_hostports # handle 4
    \t\tjump hostports # handle 5
    \t}

    \tchain prerouting { # handle 6
    \t\ttype nat hook prerouting priority dstnat; policy accept;
    \t\tfib daddr type local jump hostports_all # handle 7
    \t}

    \tchain output { # handle 8
    \t\ttype nat hook output priority -100; policy accept;
    \t\tfib daddr type local jump hostports_all # handle 9
    \t}

    \tchain masquerading { # handle 10
    \t\ttype nat hook postrouting priority srcnat; policy accept;
    \t\tip saddr 10.66.0.2 ip daddr 10.66.0.2 masquerade comment "ctr1" # handle 14
    \t\tip saddr 127.0.0.1 ip daddr 10.66.0.2 masquerade comment "ctr1" # handle 15
    \t}
    }
    """
