// subnet.env parsing, as the reference's loadFlannelSubnetEnv, and its errors.

import Addressing
import CNI
import Flannel
import Foundation
import TestSupport
import Testing

private func parse(_ text: String, path: String = "/run/flannel/subnet.env") throws(SubnetEnvError) -> SubnetEnv {
    try SubnetEnv.parse(Array(text.utf8), path: path)
}

@Suite struct SubnetEnvTests {
    @Test func parsesWhatFlanneldWrites() throws {
        let env = try parse(exampleSubnetEnv)
        #expect(
            env
                == SubnetEnv(
                    networks: [IPNetwork("10.244.0.0/16")!], subnet: IPNetwork("10.244.1.0/24")!,
                    mtu: 1450, ipMasq: true))
    }

    @Test func subnetsAreMaskedToTheirNetwork() throws {
        let env = try parse(
            """
            FLANNEL_NETWORK=10.244.3.4/16
            FLANNEL_SUBNET=10.244.1.1/24
            FLANNEL_IPV6_NETWORK=2001:cafe:42::5/56
            FLANNEL_IPV6_SUBNET=2001:cafe:42:1::1/64
            FLANNEL_MTU=1450
            FLANNEL_IPMASQ=false
            """)
        #expect(env.networks.map(\.description) == ["10.244.0.0/16"])
        #expect(env.subnet?.description == "10.244.1.0/24")
        #expect(env.ipv6Networks.map(\.description) == ["2001:cafe:42::/56"])
        #expect(env.ipv6Subnet?.description == "2001:cafe:42:1::/64")
        #expect(env.ipMasq == false)
    }

    @Test func ipv6OnlyIsEnough() throws {
        let env = try parse(
            "FLANNEL_IPV6_NETWORK=fd00::/48\nFLANNEL_IPV6_SUBNET=fd00:0:0:5::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n"
        )
        #expect(env.networks.isEmpty && env.subnet == nil)
        #expect(env.ipv6Subnet?.description == "fd00:0:0:5::/64")
        #expect(env.mtu == 1430)
    }

    @Test func networkListsAreDeduplicatedAndALaterLineWins() throws {
        let env = try parse(
            """
            FLANNEL_NETWORK=192.168.0.0/16
            FLANNEL_NETWORK=10.244.0.0/16,10.245.0.0/16,10.244.9.9/16
            FLANNEL_SUBNET=10.244.1.1/24
            FLANNEL_SUBNET=10.244.2.1/24
            FLANNEL_MTU=1400
            FLANNEL_IPMASQ=true
            """)
        #expect(env.networks.map(\.description) == ["10.244.0.0/16", "10.245.0.0/16"])
        #expect(env.subnet?.description == "10.244.2.0/24")
    }

    @Test func crlfCommentsAndUnknownKeysAreTolerated() throws {
        let env = try parse(
            "# written by hand\r\nFLANNEL_NETWORK=10.244.0.0/16\r\nFLANNEL_SUBNET=10.244.1.1/24\r\nOTHER=x\r\nFLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=true\r\n"
        )
        #expect(env.subnet?.description == "10.244.1.0/24")
        #expect(env.ipMasq)
    }

    /// Only exactly "true" counts, as in the reference.
    @Test(arguments: [("true", true), ("True", false), ("1", false), ("", false), ("true ", false)])
    func ipMasqIsTrueOnlyForTrue(value: String, expected: Bool) throws {
        let env = try parse(
            "FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.0.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=\(value)\n")
        #expect(env.ipMasq == expected)
    }

    @Test func missingKeysAreNamedAsTheReferenceDoes() {
        #expect(
            throws: SubnetEnvError.missingKeys(
                path: "/f",
                keys: [
                    "FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK",
                    "FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET",
                    "FLANNEL_MTU", "FLANNEL_IPMASQ",
                ])
        ) {
            try parse("", path: "/f")
        }
        do {
            _ = try parse("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.0.1.1/24\n", path: "/run/flannel/subnet.env")
            Issue.record("parsed a file without FLANNEL_MTU")
        } catch {
            #expect(error.description == "/run/flannel/subnet.env is missing FLANNEL_MTU, FLANNEL_IPMASQ")
            #expect(
                error.message == "failed to load flannel 'subnet.env' file: /run/flannel/subnet.env is missing "
                    + "FLANNEL_MTU, FLANNEL_IPMASQ. Check the flannel pod log for this node.")
        }
    }

    @Test(arguments: [
        ("FLANNEL_SUBNET=10.244.1.1", "FLANNEL_SUBNET", "invalid CIDR address: 10.244.1.1"),
        ("FLANNEL_NETWORK=10.244.0.0/16, 10.245.0.0/16", "FLANNEL_NETWORK", "invalid CIDR address:  10.245.0.0/16"),
        ("FLANNEL_IPV6_SUBNET=fd00::1/129", "FLANNEL_IPV6_SUBNET", "invalid CIDR address: fd00::1/129"),
        ("FLANNEL_MTU=-1", "FLANNEL_MTU", "\"-1\" is not an unsigned 32-bit integer"),
        ("FLANNEL_MTU=4294967296", "FLANNEL_MTU", "\"4294967296\" is not an unsigned 32-bit integer"),
        ("FLANNEL_MTU= 1450", "FLANNEL_MTU", "\" 1450\" is not an unsigned 32-bit integer"),
        ("FLANNEL_MTU", "FLANNEL_MTU", "the line has no \"=\""),
    ])
    func invalidValuesNameTheKey(line: String, key: String, why: String) {
        #expect(throws: SubnetEnvError.invalidValue(path: "/f", key: key, why: why)) {
            try parse(exampleSubnetEnv + line + "\n", path: "/f")
        }
    }

    @Test func aMissingFileSaysSoWithTheHint() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            _ = try SubnetEnv.load(dir + "/subnet.env")
            Issue.record("loaded a file that does not exist")
        } catch {
            #expect(error.isMissingFile)
            #expect(
                error.message == "failed to load flannel 'subnet.env' file: open \(dir)/subnet.env: "
                    + "no such file or directory. Check the flannel pod log for this node.")
            #expect(error.cniError(.tryAgainLater).code == 11)
        }
        try exampleSubnetEnv.write(toFile: dir + "/subnet.env", atomically: false, encoding: .utf8)
        #expect(try SubnetEnv.load(dir + "/subnet.env").mtu == 1450)
    }
}
