// The portmap plugin's configuration (reference plugins/meta/portmap PortMapConf), validated in
// the reference's order and with its messages, before anything on the host is touched.

import Addressing
import CNI
import Netfilter

public struct PortmapConfig: Sendable {
    public var forwarding: PortForwarding
    /// `backend`; nil for the reference's automatic choice (see `resolveBackend`).
    public var backend: HostPorts.Backend?
    /// The container's addresses chosen from prevResult: the first IPv4 and the first IPv6 of
    /// CNI_IFNAME (an address on another or a sandbox-less interface is skipped).
    public var containerAddresses: [IPNetwork] = []
    /// Keys set in the syntax of only one backend, for the reference's wrong-backend error.
    var iptablesOnly: [String] = []
    var nftablesOnly: [String] = []

    public init(_ request: Request) throws(CNIError) {
        let c = request.config
        forwarding = PortForwarding(network: request.name, containerID: request.env.containerID, mappings: [])
        forwarding.snat = try c.value("snat") ?? true
        forwarding.masqAll = try c.value("masqAll") ?? false
        let markBit: Int? = try c.value("markMasqBit")
        let external = try c.value("externalSetMarkChain", as: String.self).flatMap { $0.isEmpty ? nil : $0 }
        forwarding.conditionsV4 = try c.value("conditionsV4") ?? []
        forwarding.conditionsV6 = try c.value("conditionsV6") ?? []
        let backendName: String? = try c.value("backend")
        let entries =
            try request.runtimeConfig.value("portMappings", as: [JSON].self, path: "runtimeConfig.portMappings") ?? []

        if markBit != nil && external != nil {
            throw CNIError(.invalidNetworkConfig, "Cannot specify externalSetMarkChain and markMasqBit")
        }
        forwarding.markMasqBit = markBit ?? PortmapNames.defaultMarkBit
        guard (0...31).contains(forwarding.markMasqBit) else {
            throw CNIError(.invalidNetworkConfig, "MasqMarkBit must be between 0 and 31")
        }
        forwarding.externalSetMarkChain = external

        if external != nil { iptablesOnly.append("externalSetMarkChain") }
        for (key, conditions) in [("conditionsV4", forwarding.conditionsV4), ("conditionsV6", forwarding.conditionsV6)]
        {
            // An iptables condition starts with an option ("-d", "--dport", "-m") or its "!".
            guard let first = conditions.first?.first else { continue }
            if first == "-" || first == "!" { iptablesOnly.append(key) } else { nftablesOnly.append(key) }
        }
        if let name = backendName, !name.isEmpty {
            let wrong = name == "iptables" ? ("nftables", nftablesOnly) : ("iptables", iptablesOnly)
            try Self.checkOptions(backend: name, wrong: wrong)
            guard let b = HostPorts.Backend(rawValue: name) else {
                throw CNIError(.invalidNetworkConfig, "unrecognized backend \"\(name)\"")
            }
            backend = b
        }

        for (i, e) in entries.enumerated() {
            forwarding.mappings.append(try Self.mapping(e, path: "runtimeConfig.portMappings[\(i)]"))
        }
        if let prev = request.prevResult {
            containerAddresses = Self.containerAddresses(prev, ifname: request.env.ifname)
        }
    }

    /// One `portMappings` entry. Port numbers as the reference checks them (container port
    /// first), plus what the reference leaves to iptables to reject: ports above 65535, a
    /// protocol other than tcp, udp or sctp, a host IP that is not an address.
    static func mapping(_ json: JSON, path: String) throws(CNIError) -> PortMapping {
        guard let o = json.objectValue else {
            throw CNIError(.invalidNetworkConfig, "invalid config: \"\(path)\" must be an object, got \(json.text)")
        }
        let hostPort: Int = try o.value("hostPort", path: "\(path).hostPort") ?? 0
        let containerPort: Int = try o.value("containerPort", path: "\(path).containerPort") ?? 0
        let proto = (try o.value("protocol", as: String.self, path: "\(path).protocol") ?? "").lowercased()
        let hostIP = try o.value("hostIP", as: String.self, path: "\(path).hostIP") ?? ""
        guard (1...65535).contains(containerPort) else {
            throw CNIError(.invalidNetworkConfig, "Invalid container port number: \(containerPort)")
        }
        guard (1...65535).contains(hostPort) else {
            throw CNIError(.invalidNetworkConfig, "Invalid host port number: \(hostPort)")
        }
        guard ["tcp", "udp", "sctp"].contains(proto) else {
            throw CNIError(
                .invalidNetworkConfig,
                "Invalid protocol \"\(proto)\" for host port \(hostPort): must be tcp, udp or sctp")
        }
        var m = PortMapping(hostPort: hostPort, containerPort: containerPort, proto: proto)
        if !hostIP.isEmpty {
            guard let ip = IPAddress(hostIP) else {
                throw CNIError(.invalidNetworkConfig, "Invalid host IP \"\(hostIP)\" for host port \(hostPort)")
            }
            m.hostIP = ip
        }
        return m
    }

    /// The reference's `parseConfig` choice of container IPs.
    static func containerAddresses(_ prev: Result, ifname: String) -> [IPNetwork] {
        var out: [IPNetwork] = []
        for ip in prev.ips where !out.contains(where: { $0.family == ip.address.family }) {
            if let i = ip.interface, prev.interfaces.indices.contains(i),
                prev.interfaces[i].name != ifname || (prev.interfaces[i].sandbox ?? "").isEmpty
            {
                continue
            }
            out.append(ip.address)
        }
        return out.sorted { $0.family == .v4 && $1.family == .v6 }
    }

    static func checkOptions(backend: String, wrong: (name: String, keys: [String])) throws(CNIError) {
        guard !wrong.keys.isEmpty else { return }
        throw CNIError(
            .invalidNetworkConfig,
            "\(backend) backend was requested but configuration contains "
                + "\(wrong.name)-specific options [\(wrong.keys.joined(separator: " "))]")
    }

    /// Settles the automatic backend choice when the config has options of only one backend,
    /// which then must be the one the reference would pick (iptables, unless it is unusable and
    /// nftables is usable). Without such options the choice is left to `HostPorts`, whose first
    /// iptables read doubles as the probe.
    public mutating func resolveBackend(_ hostPorts: HostPorts) throws(CNIError) {
        guard backend == nil, !(iptablesOnly.isEmpty && nftablesOnly.isEmpty) else { return }
        let chosen: HostPorts.Backend =
            !hostPorts.iptablesUsable() && hostPorts.nftablesUsable() ? .nftables : .iptables
        try Self.checkOptions(
            backend: chosen.rawValue,
            wrong: chosen == .iptables ? ("nftables", nftablesOnly) : ("iptables", iptablesOnly))
        backend = chosen
    }

    /// The `backend` key when it names a backend, whatever else is wrong with the config (DEL and
    /// GC clean up even after a config that ADD rejected).
    static func lenientBackend(_ request: Request) -> HostPorts.Backend? {
        (try? request.config.value("backend", as: String.self)).flatMap(HostPorts.Backend.init(rawValue:))
    }
}
