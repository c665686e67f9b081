// nftables listing parser and scripts. The listing is what `nft -a list table` (nftables 1.0.6)
// printed after applying a setup script.

import Addressing
import Testing

@testable import Netfilter

@Suite struct NFTablesTests {
    static let listing = """
        table inet cni_plugins_masquerade { # handle 1
        \tcomment "Masquerading for plugins from github.com/containernetworking/plugins"
        \tchain masq_checks { # handle 1
        \t\tcomment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
        \t\tip saddr 10.99.0.2 ip daddr != 10.99.0.0/24 masquerade comment "d23676b4f2d9fe04-ebce0e3dd4dafae3, net: mynet, if: eth0, id: abc123" # handle 6
        \t\tip6 saddr fd99::2 ip6 daddr != fd99::/64 masquerade comment "d23676b4f2d9fe04-ebce0e3dd4dafae3, net: mynet, if: eth0, id: abc123" # handle 7
        \t\tip saddr 10.99.0.3 ip daddr != 10.99.0.0/24 masquerade comment "d23676b4f2d9fe04-0000000000000000, net: mynet, if: eth0, id: other" # handle 11
        \t\tip saddr 10.98.0.3 ip daddr != 10.98.0.0/24 masquerade # handle 12
        \t}

        \tchain postrouting { # handle 2
        \t\ttype nat hook postrouting priority srcnat; policy accept;
        \t\tip daddr 224.0.0.0/4 return # handle 8
        \t\tip6 daddr ff00::/8 return # handle 9
        \t\tgoto masq_checks # handle 10
        \t}
        }
        """

    let m = NFTMasquerade(network: "mynet", ifname: "eth0", containerID: "abc123")
    let addresses = [IPNetwork("10.99.0.2/24")!, IPNetwork("fd99::2/64")!]

    @Test func parsesListing() {
        let l = NFTListing(parsing: Self.listing)
        #expect(l.chains == ["masq_checks", "postrouting"])
        #expect(l.rules.map(\.handle) == [6, 7, 11, 12, 8, 9, 10])
        #expect(l.rules[0].comment == "d23676b4f2d9fe04-ebce0e3dd4dafae3, net: mynet, if: eth0, id: abc123")
        #expect(l.rules[3].comment == nil)
        #expect(l.rules[6] == NFTRule(chain: "postrouting", body: "goto masq_checks", handle: 10))
        #expect(l.rules(in: "masq_checks", commentPrefix: m.instanceHash).map(\.handle) == [6, 7])
    }

    @Test func rulesPrintAsNftListsThem() {
        let l = NFTListing(parsing: Self.listing)
        #expect(m.rule(addresses[0]) == l.rules[0].body)
        #expect(m.rule(addresses[1]) == l.rules[1].body)
        #expect(m.isInstalled(addresses: addresses, in: l))
        #expect(!m.isInstalled(addresses: [IPNetwork("10.99.0.4/24")!], in: l))
        #expect(!m.isInstalled(addresses: addresses, in: NFTListing()))
    }

    @Test func setupScript() {
        #expect(
            m.setupScript(addresses: addresses, stale: [6, 7]) == """
                add table inet cni_plugins_masquerade { comment "Masquerading for plugins from github.com/containernetworking/plugins" ; }
                add chain inet cni_plugins_masquerade masq_checks { comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet" ; }
                add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority srcnat ; }
                flush chain inet cni_plugins_masquerade postrouting
                add rule inet cni_plugins_masquerade postrouting ip daddr 224.0.0.0/4 return
                add rule inet cni_plugins_masquerade postrouting ip6 daddr ff00::/8 return
                add rule inet cni_plugins_masquerade postrouting goto masq_checks
                delete rule inet cni_plugins_masquerade masq_checks handle 6
                delete rule inet cni_plugins_masquerade masq_checks handle 7
                add rule inet cni_plugins_masquerade masq_checks ip saddr 10.99.0.2 ip daddr != 10.99.0.0/24 masquerade comment "d23676b4f2d9fe04-ebce0e3dd4dafae3, net: mynet, if: eth0, id: abc123"
                add rule inet cni_plugins_masquerade masq_checks ip6 saddr fd99::2 ip6 daddr != fd99::/64 masquerade comment "d23676b4f2d9fe04-ebce0e3dd4dafae3, net: mynet, if: eth0, id: abc123"

                """)
        #expect(
            NFTMasquerade.deleteScript(handles: [3, 4]) == """
                delete rule inet cni_plugins_masquerade masq_checks handle 3
                delete rule inet cni_plugins_masquerade masq_checks handle 4

                """)
    }
}
