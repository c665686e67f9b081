// SHA-512 against FIPS 180-4's examples and values computed with coreutils' sha512sum, and the
// object names derived from it.

import Testing

@testable import Netfilter

@Suite struct SHA512Tests {
    @Test(arguments: [
        (
            "",
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        ),
        (
            "abc",
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        ),
        // Two blocks: 112 bytes leave no room for the length in the first.
        (
            "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
        ),
        (
            String(repeating: "a", count: 1000),
            "67ba5535a46e3f86dbfbed8cbbaf0125c76ed549ff8b0b9e03e0c88cf90fa634fa7b12b47d77b694de488ace8d9a65967dc96df599727d3292a8d9d447709c97"
        ),
        (
            "mynetabc123",
            "70a29d9dc18bc4d652ea5d59731e6d09243e8ad1625ad5864bc7a8ca4fac3a94093036cfacd35ab882374a01fcec34730c0ecd6141f977e0f726f6149c5cd867"
        ),
    ])
    func digest(message: String, hex: String) {
        #expect(SHA512.hex(message) == hex)
    }

    @Test func everyPaddingLength() {
        // Lengths around the block boundaries must not trap; spot-check one against sha512sum.
        for n in 100...260 { #expect(SHA512.hash(Array(repeating: UInt8(0x61), count: n)).count == 64) }
        #expect(SHA512.hex(String(repeating: "a", count: 111)).hasPrefix("fa9121c7b32b9e01"))
    }
}

@Suite struct NameTests {
    // Expected values: `printf %s mynetabc123 | sha512sum`, and the chain the Debian 1.1.1 bridge
    // plugin created for network "mynet", container "abc123".
    @Test func iptablesNames() {
        #expect(
            MasqueradeNames.iptablesChain(network: "mynet", containerID: "abc123") == "CNI-70a29d9dc18bc4d652ea5d59")
        #expect(
            MasqueradeNames.iptablesComment(network: "mynet", containerID: "abc123") == #"name: "mynet" id: "abc123""#)
    }

    // `printf %s mynet | sha512sum` -> d23676b4f2d9fe04..., `printf %s eth0:abc123 | sha512sum` -> ebce0e3dd4dafae3...
    @Test func nftablesNames() {
        #expect(MasqueradeNames.nftNetworkHash("mynet") == "d23676b4f2d9fe04")
        #expect(
            MasqueradeNames.nftInstanceHash(network: "mynet", ifname: "eth0", containerID: "abc123")
                == "d23676b4f2d9fe04-ebce0e3dd4dafae3")
        #expect(
            MasqueradeNames.nftComment(network: "mynet", ifname: "eth0", containerID: "abc123")
                == "d23676b4f2d9fe04-ebce0e3dd4dafae3, net: mynet, if: eth0, id: abc123")
    }

    @Test func nftCommentIsCutAt128Bytes() {
        let id = String(repeating: "f", count: 64)
        let net = String(repeating: "n", count: 40)
        let c = MasqueradeNames.nftComment(network: net, ifname: "eth0", containerID: id)
        #expect(c.utf8.count == 128)
        #expect(
            c.hasPrefix(
                MasqueradeNames.nftInstanceHash(network: net, ifname: "eth0", containerID: id) + ", net: " + net))
        // Double quotes cannot appear in an nft string; the reference drops them.
        #expect(
            MasqueradeNames.nftComment(network: #"a"b"#, ifname: "e", containerID: "c").hasSuffix(
                "net: ab, if: e, id: c"))
    }

    @Test func goQuoting() {
        #expect(MasqueradeNames.goQuoted(#"a"b\c"#) == #""a\"b\\c""#)
        #expect(MasqueradeNames.goQuoted("t\tn\n\u{1}") == #""t\tn\n\x01""#)
    }

    @Test func backendNames() throws {
        #expect(try Masquerade.Backend(named: "iptables") == .iptables)
        #expect(try Masquerade.Backend(named: "nftables") == .nftables)
        #expect(throws: NetfilterError.unknownBackend("ebpf")) { try Masquerade.Backend(named: "ebpf") }
        #expect(NetfilterError.unknownBackend("ebpf").description == #"unknown ipmasq backend "ebpf""#)
    }
}
