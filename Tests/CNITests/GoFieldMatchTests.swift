// JSONValue's member lookup as Go's encoding/json matches keys to struct fields: bytes.EqualFold,
// the exact key first, and several case variants without an exact one reported as ambiguous.

import Testing

@testable import CNI

@Suite struct GoFieldMatchTests {
    @Test func foldedKeysMatchLikeBytesEqualFold() {
        #expect(JSON.goFieldNameMatches(key: "hostPort", field: "hostPort"))
        #expect(JSON.goFieldNameMatches(key: "HostPort", field: "hostPort"))
        #expect(JSON.goFieldNameMatches(key: "HOSTPORT", field: "hostPort"))
        #expect(JSON.goFieldNameMatches(key: "ho\u{17F}tPort", field: "hostPort"))  // long s
        #expect(JSON.goFieldNameMatches(key: "\u{212A}ey", field: "key"))  // Kelvin sign
        #expect(JSON.goFieldNameMatches(key: "cni.dev/Valid-Attachments", field: "cni.dev/valid-attachments"))
        #expect(!JSON.goFieldNameMatches(key: "hostPorts", field: "hostPort"))
        #expect(!JSON.goFieldNameMatches(key: "hostPor", field: "hostPort"))
        #expect(!JSON.goFieldNameMatches(key: "host_port", field: "hostPort"))
        #expect(!JSON.goFieldNameMatches(key: "ho\u{17F}tPort", field: "hoktPort"))
        #expect(!JSON.goFieldNameMatches(key: "cni.dev/valid_attachments", field: "cni.dev/valid-attachments"))
        // '@' and '`' are 0x20 apart from letters' neighbours, yet not letters.
        #expect(!JSON.goFieldNameMatches(key: "@", field: "`"))
        #expect(!JSON.goFieldNameMatches(key: "[", field: "{"))
    }

    @Test func exactKeyWinsAndSeveralFoldedKeysAreAmbiguous() throws {
        let o: [String: JSON] = [
            "hostPort": .int(1), "HostPort": .int(2), "containerport": .int(3),
            "Protocol": .string("tcp"), "PROTOCOL": .string("udp"),
        ]
        #expect(try o.member(goField: "hostPort")?.value == .int(1))
        #expect(try o.member(goField: "containerPort")?.key == "containerport")
        #expect(try o.member(goField: "hostIP") == nil)
        #expect(throws: AmbiguousKeysError(field: "protocol", keys: ["PROTOCOL", "Protocol"])) {
            try o.member(goField: "protocol")
        }
        // Through the CNI layer: code 7 naming the keys and where they are.
        #expect(
            throws: CNIError(
                .invalidNetworkConfig,
                #"invalid config: keys "PROTOCOL", "Protocol" in "runtimeConfig.portMappings[0]" all match "protocol" ignoring case; keep one of them"#
            )
        ) {
            try o.value("protocol", as: String.self, path: "runtimeConfig.portMappings[0].protocol")
        }
    }
}
