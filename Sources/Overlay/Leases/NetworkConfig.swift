// The network config at `<prefix>/config`, in flanneld's schema (pkg/subnet/config.go): the same
// fields, defaults and checks, so a podnetd node and a flanneld node read one config alike.
//
// Field names match as Go's encoding/json matches them (exactly, else case-insensitively); unknown
// fields are ignored; a known field of the wrong type, or a number out of its range, is an error
// naming the field. The backend's own options (VNI, Port, MTU, ...) are read here too, with the
// same rules, so that a bad one is a config error like any other: podnetd waits for a fix.

import Addressing
import FoundationEssentials
import JSONValue

public struct NetworkConfig: Equatable, Sendable {
    public var network: IPNetwork
    public var subnetLength: Int
    public var subnetMin: IPAddress
    public var subnetMax: IPAddress
    public var enableNFTables: Bool
    /// `Backend.Type`, lower-cased: the type of one of `BackendRegistry.kinds`.
    public var backendType: String
    /// The vxlan backend's options (`Backend.VNI`, `Backend.Port`, ...); defaults for other types.
    public var vxlan = VXLANConfig()
    /// The ipip backend's options (`Backend.DirectRouting`); defaults for other types.
    public var ipip = IPIPConfig()
    /// The bgp backend's options (`Backend.ASNumber`, `Backend.Peers`, ...); defaults for other types.
    public var bgp = BGPConfig()

    /// Ranges no Network may overlap: a lease there would route loopback, "this network", the
    /// link-local range (the cloud metadata address 169.254.169.254 among them), multicast or the
    /// reserved range and broadcast into the overlay.
    static let forbiddenRanges: [(IPNetwork, String)] = [
        (IPNetwork("0.0.0.0/8")!, "\"this network\""), (IPNetwork("127.0.0.0/8")!, "loopback"),
        (IPNetwork("169.254.0.0/16")!, "link-local"), (IPNetwork("224.0.0.0/4")!, "multicast"),
        (IPNetwork("240.0.0.0/4")!, "reserved and broadcast"),
    ]

    /// Parses and validates; every failure is `ConfigError` with flanneld's wording, or, for what
    /// flanneld accepts and podnetd does not, a message naming the key and what is allowed.
    public init(json bytes: Data) throws(ConfigError) {
        guard let parsedJSON = try? JSON(parsing: bytes), let o = GoObject(parsedJSON) else {
            throw ConfigError("the network config is not a JSON object")
        }
        if try o.bool("EnableIPv6") == true {
            throw ConfigError("EnableIPv6 is not supported by podnetd yet: dual-stack overlays are not built")
        }
        if let v4 = try o.bool("EnableIPv4"), !v4 {
            throw ConfigError("EnableIPv4 false is not supported: podnetd needs an IPv4 Network")
        }
        guard let n = o["Network"]?.stringValue, let parsed = IPNetwork(n), parsed.family == .v4 else {
            throw ConfigError("please define a correct Network parameter in the flannel config")
        }
        let net = parsed.network
        for (range, name) in Self.forbiddenRanges where range.overlaps(net) {
            throw ConfigError(
                "Network \(net) overlaps \(range) (\(name)): leases there would route those addresses "
                    + "into the overlay; choose a private range such as 10.244.0.0/16")
        }
        network = net
        let prefix = net.prefixLength
        if let len = try o.integer("SubnetLen", in: Int64.min...Int64.max).map(Int.init), len != 0 {
            guard len <= 30 else { throw ConfigError("SubnetLen must be less than /31") }
            guard len >= prefix + 2 else {
                throw ConfigError("network must be able to accommodate at least four subnets")
            }
            subnetLength = len
        } else if prefix <= 22 {
            subnetLength = 24
        } else if prefix <= 28 {
            subnetLength = prefix + 2
        } else {
            throw ConfigError("network is too small. Minimum useful network prefix is /28")
        }
        let size = 1 << (32 - subnetLength)
        func bound(_ name: String, default d: IPAddress) throws(ConfigError) -> IPAddress {
            guard let v = o[name] else { return d }
            guard let s = v.stringValue, let ip = IPAddress(s), ip.family == .v4 else {
                throw ConfigError("\(name) is not an IPv4 address: \(v.text)")
            }
            guard parsed.contains(ip) else { throw ConfigError("\(name) is not in the range of the Network") }
            guard (ip.value - net.address.value) % UInt128(size) == 0 else {
                throw ConfigError("\(name) is not on a SubnetLen boundary: \(ip)")
            }
            return ip
        }
        subnetMin = try bound("SubnetMin", default: net.address.advanced(by: size)!)
        subnetMax = try bound("SubnetMax", default: net.lastAddress.advanced(by: 1 - size)!)
        guard subnetMin <= subnetMax else { throw ConfigError("SubnetMin is greater than SubnetMax") }
        enableNFTables = try o.bool("EnableNFTables") ?? false
        let backend = try o.object("Backend")
        // flanneld picks "udp" when Backend is missing; podnetd has no udp backend, so it says so.
        let type = try backend?.string("Type")?.lowercased() ?? "udp"
        let kind = try BackendRegistry.kind(type)
        backendType = type
        if let backend { try kind.readOptions(backend, &self) }
    }

    /// The subnets a lease may take, in order: SubnetMin, SubnetMin + size, ... SubnetMax.
    public var subnets: some Sequence<IPNetwork> {
        let size = 1 << (32 - subnetLength), len = subnetLength, last = subnetMax
        return sequence(first: subnetMin) { ip in
            ip.advanced(by: size).flatMap { $0 <= last ? $0 : nil }
        }.lazy.map { IPNetwork(address: $0, prefixLength: len)! }
    }

    /// Whether a lease's subnet fits this config: inside [SubnetMin, SubnetMax] with the right
    /// length (flanneld's check before reusing a lease).
    public func accepts(_ subnet: IPNetwork) -> Bool {
        subnet.family == .v4 && subnet.prefixLength == subnetLength && !subnet.hasHostBits
            && subnet.address >= subnetMin && subnet.address <= subnetMax
    }
}

public struct ConfigError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

extension VXLANConfig {
    /// The `Backend` object of a vxlan config (flanneld's vxlan.go: `VNI`, `Port`, `MTU`, `GBP`,
    /// `Learning`, `DirectRouting`). Ranges: VNI 1...16777215 (24 bits); Port 0 (8472) or
    /// 1...65535; MTU 0 (the interface's) or 118...65535 (the device gets 50 less, at least 68).
    init(_ o: GoObject) throws(ConfigError) {
        self.init()
        vni = try o.integer("VNI", in: 1...16_777_215).map { UInt32($0) } ?? 1
        let p = try o.integer("Port", in: 1...65_535, zeroMeansDefault: true) ?? 0
        port = p == 0 ? 8472 : UInt16(p)
        let m = try o.integer("MTU", in: 118...65_535, zeroMeansDefault: true) ?? 0
        mtu = m == 0 ? nil : Int(m)
        gbp = try o.bool("GBP") ?? false
        learning = try o.bool("Learning") ?? false
        directRouting = try o.bool("DirectRouting") ?? false
    }
}

extension IPIPConfig {
    /// The `Backend` object of an ipip config (flanneld's ipip.go: `DirectRouting`).
    init(_ o: GoObject) throws(ConfigError) {
        self.init(directRouting: try o.bool("DirectRouting") ?? false)
    }
}
