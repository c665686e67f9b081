// The network config at `<prefix>/config`, in flanneld's schema (pkg/subnet/config.go): the same
// fields, defaults and checks, so a podnetd node and a flanneld node read one config alike. Each
// enabled family (EnableIPv4, default on; EnableIPv6) has its own `SubnetRange`; the first
// enabled one is the lease's "primary" family, whose subnet names the lease.
//
// Field names match as Go's encoding/json matches them (exactly, else case-insensitively); unknown
// fields are ignored; a known field of the wrong type, or a number out of its range, is an error
// naming the field. The backend's own options (VNI, Port, MTU, ...) are read here too, with the
// same rules, so that a bad one is a config error like any other: podnetd waits for a fix.

import Addressing
import FoundationEssentials
import JSONValue

/// One family's subnets: `Network` (or `IPv6Network`) cut into subnets of `SubnetLen` (or
/// `IPv6SubnetLen`), of which SubnetMin...SubnetMax may be leased.
public struct SubnetRange: Equatable, Sendable {
    public var network: IPNetwork
    public var subnetLength: Int
    public var subnetMin: IPAddress
    public var subnetMax: IPAddress

    public var family: IPFamily { network.family }

    /// The number of addresses in one subnet.
    var subnetSize: UInt128 { UInt128(1) << UInt128(clamping: family.bitWidth - subnetLength) }

    /// The subnets a lease may take, in order: SubnetMin, SubnetMin + size, ... SubnetMax.
    public var subnets: some Sequence<IPNetwork> {
        let size = subnetSize, len = subnetLength, last = subnetMax.value, family = self.family
        return sequence(first: subnetMin.value) { v in
            let (next, overflow) = v.addingReportingOverflow(size)
            return !overflow && next <= last ? next : nil
        }.lazy.map { IPNetwork(address: IPAddress(family: family, value: $0), prefixLength: len)! }
    }

    /// Whether a lease's subnet fits: inside [SubnetMin, SubnetMax] with the right length
    /// (flanneld's check before reusing a lease).
    public func accepts(_ subnet: IPNetwork) -> Bool {
        subnet.family == family && subnet.prefixLength == subnetLength && !subnet.hasHostBits
            && subnet.address >= subnetMin && subnet.address <= subnetMax
    }

    /// The last address of the last subnet that may be leased.
    var lastLeasable: IPAddress { IPAddress(family: family, value: subnetMax.value + (subnetSize - 1)) }
}

public struct NetworkConfig: Equatable, Sendable {
    /// `Network`, `SubnetLen`, `SubnetMin`, `SubnetMax`; nil with `EnableIPv4: false`.
    public var ipv4: SubnetRange?
    /// `IPv6Network`, `IPv6SubnetLen`, `IPv6SubnetMin`, `IPv6SubnetMax`; nil unless `EnableIPv6`.
    public var ipv6: SubnetRange?
    public var enableNFTables: Bool
    /// `Backend.Type`, lower-cased: the type of one of `BackendRegistry.kinds`.
    public var backendType: String
    /// The vxlan backend's options (`Backend.VNI`, `Backend.Port`, ...); defaults for other types.
    public var vxlan = VXLANConfig()
    /// The ipip backend's options (`Backend.DirectRouting`); defaults for other types.
    public var ipip = IPIPConfig()
    /// The bgp backend's options (`Backend.ASNumber`, `Backend.Peers`, ...); defaults for other types.
    public var bgp = BGPConfig()

    /// The family that identifies a lease (its key's first subnet): IPv4, or IPv6 in an IPv6-only
    /// cluster. `network`, `subnetLength`, `subnets` and `accepts` are this family's.
    public var primary: SubnetRange { ipv4 ?? ipv6! }
    public var network: IPNetwork { primary.network }
    public var subnetLength: Int { primary.subnetLength }
    public var subnetMin: IPAddress { primary.subnetMin }
    public var subnetMax: IPAddress { primary.subnetMax }
    /// Both families: a lease carries an IPv6 subnet next to its IPv4 one.
    public var isDualStack: Bool { ipv4 != nil && ipv6 != nil }
    /// The families the config enables, IPv4 first.
    public var families: [IPFamily] { (ipv4 == nil ? [] : [.v4]) + (ipv6 == nil ? [] : [.v6]) }

    /// The subnets of `family`, if the config enables it.
    public func range(_ family: IPFamily) -> SubnetRange? { family == .v4 ? ipv4 : ipv6 }

    /// Ranges no Network may overlap: a lease there would route loopback, "this network", the
    /// link-local range (the cloud metadata address 169.254.169.254 among them), multicast or the
    /// reserved range and broadcast into the overlay. For IPv6Network: the unspecified and
    /// loopback addresses, IPv4-mapped addresses, link-local and multicast.
    static let forbiddenRanges: [(IPNetwork, String)] = [
        (IPNetwork("0.0.0.0/8")!, "\"this network\""), (IPNetwork("127.0.0.0/8")!, "loopback"),
        (IPNetwork("169.254.0.0/16")!, "link-local"), (IPNetwork("224.0.0.0/4")!, "multicast"),
        (IPNetwork("240.0.0.0/4")!, "reserved and broadcast"),
        (IPNetwork("::/127")!, "the unspecified and loopback addresses"),
        (IPNetwork("::ffff:0:0/96")!, "IPv4-mapped"), (IPNetwork("fe80::/10")!, "link-local"),
        (IPNetwork("ff00::/8")!, "multicast"),
    ]

    /// Parses and validates; every failure is `ConfigError` with flanneld's wording, or, for what
    /// flanneld accepts and podnetd does not, a message naming the key and what is allowed.
    public init(json bytes: Data) throws(ConfigError) {
        guard let parsedJSON = try? JSON(parsing: bytes), let o = GoObject(parsedJSON) else {
            throw ConfigError("the network config is not a JSON object")
        }
        let enableIPv4 = try o.bool("EnableIPv4") ?? true
        let enableIPv6 = try o.bool("EnableIPv6") ?? false
        guard enableIPv4 || enableIPv6 else {
            throw ConfigError("EnableIPv4 and EnableIPv6 are both false: enable at least one family")
        }
        ipv4 =
            enableIPv4
            ? try Self.range(
                o, family: .v4, keys: ("Network", "SubnetLen", "SubnetMin", "SubnetMax"),
                example: "10.244.0.0/16") : nil
        ipv6 =
            enableIPv6
            ? try Self.range(
                o, family: .v6, keys: ("IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax"),
                example: "fd00:10:244::/56") : nil
        enableNFTables = try o.bool("EnableNFTables") ?? false
        let backend = try o.object("Backend")
        // flanneld picks "udp" when Backend is missing; podnetd has no udp backend, so it says so.
        let type = try backend?.string("Type")?.lowercased() ?? "udp"
        let kind = try BackendRegistry.kind(type)
        if ipv6 != nil, let problem = kind.ipv6Problem {
            throw ConfigError("EnableIPv6 is set but \(problem)")
        }
        backendType = type
        if let backend { try kind.readOptions(backend, &self) }
    }

    /// One family's range, with flanneld's defaults and checks (config.go CheckNetworkConfig):
    /// SubnetLen defaults to 24 (IPv6: 64) when the network leaves room, else to prefix + 2; set,
    /// it is at most /30 (/126) and leaves at least four subnets; SubnetMin and SubnetMax default
    /// to the second and the last subnet and must lie in the network on a subnet boundary.
    private static func range(
        _ o: GoObject, family: IPFamily, keys: (network: String, length: String, min: String, max: String),
        example: String
    ) throws(ConfigError) -> SubnetRange {
        let v6 = family == .v6
        guard let n = o[keys.network]?.stringValue, let parsed = IPNetwork(n), parsed.family == family else {
            throw ConfigError("please define a correct \(keys.network) parameter in the flannel config")
        }
        let net = parsed.network
        for (range, name) in forbiddenRanges where range.family == family && range.overlaps(net) {
            throw ConfigError(
                "\(keys.network) \(net) overlaps \(range) (\(name)): leases there would route those addresses "
                    + "into the overlay; choose a private range such as \(example)")
        }
        let prefix = net.prefixLength
        let longest = v6 ? 126 : 30, defaultLength = v6 ? 64 : 24
        let length: Int
        if let len = try o.integer(keys.length, in: Int64.min...Int64.max).map(Int.init), len != 0 {
            guard len <= longest else { throw ConfigError("\(keys.length) must be less than /\(longest + 1)") }
            guard len >= prefix + 2 else {
                throw ConfigError("network must be able to accommodate at least four subnets")
            }
            length = len
        } else if prefix <= defaultLength - 2 {
            length = defaultLength
        } else if prefix <= longest - 2 {
            length = prefix + 2
        } else {
            throw ConfigError(
                "\(v6 ? "IPv6Network" : "network") is too small. Minimum useful network prefix is /\(longest - 2)")
        }
        let size = UInt128(1) << UInt128(clamping: family.bitWidth - length)
        func bound(_ name: String, default d: UInt128) throws(ConfigError) -> IPAddress {
            guard let v = o[name] else { return IPAddress(family: family, value: d) }
            guard let s = v.stringValue, let ip = IPAddress(s), ip.family == family else {
                throw ConfigError("\(name) is not an \(v6 ? "IPv6" : "IPv4") address: \(v.text)")
            }
            guard parsed.contains(ip) else {
                throw ConfigError("\(name) is not in the range of the \(keys.network)")
            }
            guard (ip.value - net.address.value) % size == 0 else {
                throw ConfigError("\(name) is not on a \(keys.length) boundary: \(ip)")
            }
            return ip
        }
        let range = SubnetRange(
            network: net, subnetLength: length, subnetMin: try bound(keys.min, default: net.address.value + size),
            subnetMax: try bound(keys.max, default: net.lastAddress.value - (size - 1)))
        guard range.subnetMin <= range.subnetMax else {
            throw ConfigError("\(keys.min) is greater than \(keys.max)")
        }
        return range
    }

    /// The subnets a lease may take (of the primary family), in order.
    public var subnets: some Sequence<IPNetwork> { primary.subnets }

    /// Whether a lease's subnet fits this config's primary family (flanneld's check before
    /// reusing a lease).
    public func accepts(_ subnet: IPNetwork) -> Bool { primary.accepts(subnet) }

    /// Whether a lease's key fits exactly: its primary subnet, and in a dual-stack cluster an IPv6
    /// subnet it must have (flanneld's isSubnetConfigCompat and isIPv6SubnetConfigCompat); a
    /// single-family cluster's key has no second subnet.
    public func accepts(_ key: SubnetKey) -> Bool {
        guard accepts(key.subnet) else { return false }
        guard let ipv6, isDualStack else { return key.ipv6Subnet == nil }
        return key.ipv6Subnet.map { ipv6.accepts($0) } ?? false
    }
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
