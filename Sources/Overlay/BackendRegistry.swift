// The backends podnet knows, in one table: a `Backend.Type` name maps to one entry, which reads
// the type's options from the config's `Backend` object (with the folded-key matching of the rest
// of the config: "vni", "VNI" and "Vni" are one key) and builds the backend. Adding a backend is
// one entry here; a type without an entry is one config error, worded in one place.

import Addressing

/// One kind of backend: its `Backend.Type`, how its options are read and how it is built.
public struct BackendKind: Sendable {
    /// `Backend.Type`, lower-cased, as the lease's BackendType carries it.
    public let type: String
    /// Reads the type's options from the `Backend` object into the config.
    let readOptions: @Sendable (GoObject, inout NetworkConfig) throws(ConfigError) -> Void
    /// Builds the backend of a config of this type for one family's network (the config's
    /// `Network` or `IPv6Network`).
    let make: @Sendable (NetworkConfig, IPNetwork, ExternalInterface) -> any ModeBackend
    /// Why this type cannot carry IPv6, or nil when it can.
    var ipv6Problem: String? = nil
}

public enum BackendRegistry {
    /// Every backend, in the order messages list them.
    public static let kinds: [BackendKind] = [
        BackendKind(
            type: "vxlan", readOptions: { o, c throws(ConfigError) in c.vxlan = try VXLANConfig(o) },
            make: { c, n, i in VXLANBackend(interface: i, network: n, config: c.vxlan) }),
        BackendKind(
            type: "host-gw", readOptions: { _, _ in },
            make: { _, n, i in HostGWBackend(interface: i, network: n) }),
        BackendKind(
            type: "ipip", readOptions: { o, c throws(ConfigError) in c.ipip = try IPIPConfig(o) },
            make: { c, n, i in IPIPBackend(interface: i, network: n, config: c.ipip) },
            ipv6Problem: "the ipip backend is IPv4-only (as in flanneld): use vxlan or host-gw for IPv6"),
        BackendKind(
            type: "bgp", readOptions: { o, c throws(ConfigError) in c.bgp = try BGPConfig(o, network: c.network) },
            make: { c, n, i in BGPBackend(interface: i, network: n, subnetLength: c.subnetLength, config: c.bgp) },
            ipv6Problem: "the bgp backend announces IPv4 routes only: use vxlan or host-gw for IPv6"),
    ]

    /// The entry of `type` (lower-cased); the config error naming the known types otherwise.
    public static func kind(_ type: String) throws(ConfigError) -> BackendKind {
        guard let kind = kinds.first(where: { $0.type == type }) else {
            let names = kinds.map(\.type)
            throw ConfigError(
                "backend type \"\(type)\" is not supported: use "
                    + "\(names.dropLast().joined(separator: ", ")) or \(names.last!)")
        }
        return kind
    }
}

extension NetworkConfig {
    /// The backend this config asks for, on `interface`: one family's, or, in a dual-stack
    /// cluster, the IPv4 and the IPv6 backend together.
    public func makeBackend(interface: ExternalInterface) throws(ConfigError) -> any Backend {
        let kind = try BackendRegistry.kind(backendType)
        if let ipv4, let ipv6 {
            return DualStackBackend(
                ipv4: kind.make(self, ipv4.network, interface), ipv6: kind.make(self, ipv6.network, interface))
        }
        return kind.make(self, network, interface)
    }
}
