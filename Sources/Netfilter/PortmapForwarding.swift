// What the portmap plugin asks the kernel for, as plain values: the published ports of one
// container and the options that shape its rules. Both rule layouts (PortmapIPTables.swift,
// PortmapNFTables.swift) render from these.

import Addressing

/// One `runtimeConfig.portMappings` entry, validated.
public struct PortMapping: Hashable, Sendable {
    public var hostPort: Int
    public var containerPort: Int
    /// "tcp", "udp" or "sctp".
    public var proto: String
    /// `hostIP`: nil for any address. A host IP restricts the mapping to its family; an
    /// unspecified one (0.0.0.0, ::) does only that.
    public var hostIP: IPAddress?

    public init(hostPort: Int, containerPort: Int, proto: String, hostIP: IPAddress? = nil) {
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.proto = proto
        self.hostIP = hostIP
    }

    /// Whether the mapping has rules in `family` (the reference skips a host IP of the other family).
    public func applies(to family: IPFamily) -> Bool { hostIP.map { $0.family == family } ?? true }

    /// The destination address to match, when the host IP is a specific address.
    public var destination: IPAddress? { hostIP.flatMap { $0.isUnspecified ? nil : $0 } }
}

/// The port forwarding of one container: its mappings and the plugin options.
public struct PortForwarding: Hashable, Sendable {
    public var network: String
    public var containerID: String
    public var mappings: [PortMapping]
    /// Masquerade hairpin and localhost traffic (`snat`, default true).
    public var snat = true
    /// Masquerade traffic from every source, not only the container's (`masqAll`).
    public var masqAll = false
    /// iptables only: the bit of the masquerade mark (`markMasqBit`, 0...31).
    public var markMasqBit = PortmapNames.defaultMarkBit
    /// iptables only: a chain of someone else's that marks for masquerading instead of ours.
    public var externalSetMarkChain: String?
    /// Extra match tokens on the entry rules (`conditionsV4`/`conditionsV6`), in the backend's syntax.
    public var conditionsV4: [String] = []
    public var conditionsV6: [String] = []

    public init(network: String, containerID: String, mappings: [PortMapping]) {
        self.network = network
        self.containerID = containerID
        self.mappings = mappings
    }

    public func conditions(_ family: IPFamily) -> [String] { family == .v4 ? conditionsV4 : conditionsV6 }

    /// The UDP host ports, for the conntrack clean-up (as the reference, in every family that
    /// has a container address, whatever the mapping's host IP).
    public var udpHostPorts: [Int] {
        var out: [Int] = []
        for m in mappings where m.proto == "udp" && !out.contains(m.hostPort) { out.append(m.hostPort) }
        return out
    }
}

/// A UDP host port of one family, whose conntrack entries are stale once the rules change.
public struct UDPPort: Hashable, Sendable, Comparable {
    public var family: IPFamily
    public var port: Int

    public init(family: IPFamily, port: Int) {
        self.family = family
        self.port = port
    }

    public static func < (l: UDPPort, r: UDPPort) -> Bool {
        (l.family == .v4 ? 0 : 1, l.port) < (r.family == .v4 ? 0 : 1, r.port)
    }
}
