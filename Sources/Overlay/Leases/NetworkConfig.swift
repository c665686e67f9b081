// The network config at `<prefix>/config`, in flanneld's schema (pkg/subnet/config.go): the same
// fields, defaults and checks, so a podnetd node and a flanneld node read one config alike.
//
// Field names match case-insensitively, as Go's encoding/json does; unknown fields are ignored.

import Addressing
import FoundationEssentials
import JSONValue

public struct NetworkConfig: Equatable, Sendable {
    public var network: IPNetwork
    public var subnetLength: Int
    public var subnetMin: IPAddress
    public var subnetMax: IPAddress
    public var enableNFTables: Bool
    /// `Backend.Type`, lower-cased: "vxlan", "host-gw" or "ipip".
    public var backendType: String
    /// The `Backend` object as it was, for the backend's own options (VXLANConfig, IPIPConfig).
    public var backendJSON: Data

    /// Parses and validates; every failure is `ConfigError` with flanneld's wording.
    public init(json bytes: Data) throws(ConfigError) {
        guard let o = (try? JSON(parsing: bytes))?.foldedObject else {
            throw ConfigError("the network config is not a JSON object")
        }
        if o["enableipv6"]?.boolValue == true {
            throw ConfigError("EnableIPv6 is not supported by podnetd yet: dual-stack overlays are not built")
        }
        if let v4 = o["enableipv4"]?.boolValue, !v4 {
            throw ConfigError("EnableIPv4 false is not supported: podnetd needs an IPv4 Network")
        }
        guard let n = o["network"]?.stringValue, let parsed = IPNetwork(n), parsed.family == .v4 else {
            throw ConfigError("please define a correct Network parameter in the flannel config")
        }
        let net = parsed.network
        network = net
        let prefix = net.prefixLength
        if let len = o["subnetlen"]?.integerValue.map(Int.init), len != 0 {
            guard len <= 30 else { throw ConfigError("SubnetLen must be less than /31") }
            guard len >= prefix + 2 else { throw ConfigError("network must be able to accommodate at least four subnets") }
            subnetLength = len
        } else if prefix <= 22 {
            subnetLength = 24
        } else if prefix <= 28 {
            subnetLength = prefix + 2
        } else {
            throw ConfigError("network is too small. Minimum useful network prefix is /28")
        }
        let size = 1 << (32 - subnetLength)
        func bound(_ key: String, _ name: String, default d: IPAddress) throws(ConfigError) -> IPAddress {
            guard let v = o[key], !v.isNull else { return d }
            guard let s = v.stringValue, let ip = IPAddress(s), ip.family == .v4 else {
                throw ConfigError("\(name) is not an IPv4 address: \(v.text)")
            }
            guard parsed.contains(ip) else { throw ConfigError("\(name) is not in the range of the Network") }
            guard (ip.value - net.address.value) % UInt128(size) == 0 else {
                throw ConfigError("\(name) is not on a SubnetLen boundary: \(ip)")
            }
            return ip
        }
        subnetMin = try bound("subnetmin", "SubnetMin", default: net.address.advanced(by: size)!)
        subnetMax = try bound("subnetmax", "SubnetMax", default: net.lastAddress.advanced(by: 1 - size)!)
        guard subnetMin <= subnetMax else { throw ConfigError("SubnetMin is greater than SubnetMax") }
        enableNFTables = o["enablenftables"]?.boolValue ?? false
        let raw = o["backend"]?.objectValue ?? [:]
        // flanneld picks "udp" when Backend is missing; podnetd has no udp backend, so it says so.
        let type = JSON.object(raw).foldedObject?["type"]?.stringValue?.lowercased() ?? "udp"
        guard ["vxlan", "host-gw", "ipip"].contains(type) else {
            throw ConfigError("backend type \"\(type)\" is not supported: use vxlan, host-gw or ipip")
        }
        backendType = type
        backendJSON = Data(JSON.object(raw).encoded())
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
