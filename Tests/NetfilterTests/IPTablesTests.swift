// iptables parsing and restore scripts, compared with what iptables 1.8.9 prints (`iptables -S`
// after the Debian 1.1.1 bridge plugin's ADD for network "mynet", container "abc123").

import Addressing
import Testing

@testable import Netfilter

@Suite struct IPTablesTests {
    static let chain = "CNI-70a29d9dc18bc4d652ea5d59"
    static let referenceV4 = #"""
        -P PREROUTING ACCEPT
        -P INPUT ACCEPT
        -P OUTPUT ACCEPT
        -P POSTROUTING ACCEPT
        -N CNI-70a29d9dc18bc4d652ea5d59
        -A POSTROUTING -s 10.99.0.2/32 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
        -A CNI-70a29d9dc18bc4d652ea5d59 -d 10.99.0.0/24 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j ACCEPT
        -A CNI-70a29d9dc18bc4d652ea5d59 ! -d 224.0.0.0/4 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j MASQUERADE
        """#

    let v4 = IPTablesMasquerade(family: .v4, network: "mynet", containerID: "abc123")
    let v6 = IPTablesMasquerade(family: .v6, network: "mynet", containerID: "abc123")

    @Test func parsesReferenceOutput() throws {
        let listing = IPTablesListing(parsing: Self.referenceV4)
        #expect(listing.chains == [Self.chain])
        #expect(listing.rules.count == 3)
        let jump = try #require(listing.jumps(to: Self.chain).first)
        #expect(jump.comment == #"name: "mynet" id: "abc123""#)
        #expect(jump.source == IPNetwork("10.99.0.2/32"))
        // Rendering a parsed rule gives back the line iptables printed.
        for (line, rule) in zip(Self.referenceV4.split(separator: "\n").suffix(3), listing.rules) {
            #expect(rule.line() == String(line))
        }
    }

    @Test func rendersWhatTheReferenceWrites() {
        let addresses = [IPNetwork("10.99.0.2/24")!]
        let lines = (v4.chainRules(addresses) + [v4.jumpRule(addresses[0].address)]).map { $0.line() }
        let reference = Self.referenceV4.split(separator: "\n").suffix(3).map(String.init)
        #expect(Set(lines) == Set(reference))
        #expect(v4.isInstalled(addresses: addresses, in: IPTablesListing(parsing: Self.referenceV4)))
        #expect(
            !v4.isInstalled(addresses: [IPNetwork("10.99.0.3/24")!], in: IPTablesListing(parsing: Self.referenceV4)))
    }

    @Test func setupScriptOnEmptyTable() {
        let script = v6.setupScript(
            addresses: [IPNetwork("10.99.0.2/24")!, IPNetwork("fd99::2/64")!],
            postrouting: IPTablesListing())
        #expect(
            script == #"""
                *nat
                :CNI-70a29d9dc18bc4d652ea5d59 - [0:0]
                -A CNI-70a29d9dc18bc4d652ea5d59 -d fd99::/64 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j ACCEPT
                -A CNI-70a29d9dc18bc4d652ea5d59 ! -d ff00::/8 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j MASQUERADE
                -A POSTROUTING -s fd99::2/128 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
                COMMIT

                """#)
    }

    @Test func setupKeepsPresentJumpAndDeletesStaleOnes() {
        let existing = IPTablesListing(
            parsing: Self.referenceV4 + "\n" + #"""
                -A POSTROUTING -s 10.99.0.2/32 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
                -A POSTROUTING -s 10.99.0.0/24 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
                -A POSTROUTING -s 10.99.0.9/32 -m comment --comment "name: \"mynet\" id: \"other\"" -j CNI-aaaaaaaaaaaaaaaaaaaaaaaa
                """#)
        let script = v4.setupScript(
            addresses: [IPNetwork("10.99.0.2/24")!, IPNetwork("10.100.0.7/16")!],
            postrouting: existing)
        #expect(
            script == #"""
                *nat
                :CNI-70a29d9dc18bc4d652ea5d59 - [0:0]
                -A CNI-70a29d9dc18bc4d652ea5d59 -d 10.99.0.0/24 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j ACCEPT
                -A CNI-70a29d9dc18bc4d652ea5d59 -d 10.100.0.0/16 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j ACCEPT
                -A CNI-70a29d9dc18bc4d652ea5d59 ! -d 224.0.0.0/4 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j MASQUERADE
                -D POSTROUTING -s 10.99.0.2/32 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
                -D POSTROUTING -s 10.99.0.0/24 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
                -A POSTROUTING -s 10.100.0.7/32 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
                COMMIT

                """#)
    }

    @Test func teardownScriptNeedsNoAddresses() {
        #expect(
            v4.teardownScript(postrouting: IPTablesListing(parsing: Self.referenceV4)) == #"""
                *nat
                :CNI-70a29d9dc18bc4d652ea5d59 - [0:0]
                -D POSTROUTING -s 10.99.0.2/32 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
                -X CNI-70a29d9dc18bc4d652ea5d59
                COMMIT

                """#)
        // Nothing there: still a valid script (declare, then delete) so a repeated DEL succeeds.
        #expect(
            v4.teardownScript(postrouting: IPTablesListing()) == """
                *nat
                :CNI-70a29d9dc18bc4d652ea5d59 - [0:0]
                -X CNI-70a29d9dc18bc4d652ea5d59
                COMMIT

                """)
    }

    @Test func gcScriptRemovesOnlyThisNetworksInvalidContainers() {
        let keep = MasqueradeNames.iptablesChain(network: "mynet", containerID: "keep")
        let otherNet = MasqueradeNames.iptablesChain(network: "other", containerID: "abc123")
        let table = IPTablesListing(
            parsing: Self.referenceV4 + "\n" + #"""
                -N \#(keep)
                -N \#(otherNet)
                -N CNI-orphan000000000000000000
                -A POSTROUTING -s 10.99.0.3/32 -m comment --comment "name: \"mynet\" id: \"keep\"" -j \#(keep)
                -A POSTROUTING -s 10.98.0.3/32 -m comment --comment "name: \"other\" id: \"abc123\"" -j \#(otherNet)
                -A CNI-orphan000000000000000000 -m comment --comment "name: \"mynet\" id: \"forged\"" -j ACCEPT
                -A CNI-HOSTPORT-DNAT -m comment --comment "dnat name: \"mynet\" id: \"abc123\"" -j CNI-DN-0000
                """#)
        let script = IPTablesMasquerade.gcScript(network: "mynet", validContainerIDs: ["keep"], table: table)
        #expect(
            script == #"""
                *nat
                :CNI-70a29d9dc18bc4d652ea5d59 - [0:0]
                -D POSTROUTING -s 10.99.0.2/32 -m comment --comment "name: \"mynet\" id: \"abc123\"" -j CNI-70a29d9dc18bc4d652ea5d59
                -X CNI-70a29d9dc18bc4d652ea5d59
                COMMIT

                """#)
        #expect(
            IPTablesMasquerade.gcScript(network: "mynet", validContainerIDs: ["keep", "abc123"], table: table) == nil)
    }

    @Test func splitsLikeIptablesRestore() {
        #expect(
            IPTablesRule.split(#"-A X -m comment --comment "a \"b\" c\\d" -j Y"#)
                == ["-A", "X", "-m", "comment", "--comment", #"a "b" c\d"#, "-j", "Y"])
        #expect(IPTablesRule.quoted("plain-word_1") == "plain-word_1")
        #expect(IPTablesRule.quoted("it's") == #""it\'s""#)
    }
}
