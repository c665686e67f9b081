// Lease keys and values in flanneld's etcd layout:
//   <prefix>/subnets/10.5.34.0-24 -> {"PublicIP":"192.168.64.3","PublicIPv6":null,
//                                    "BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:.."}}
//   dual stack: <prefix>/subnets/10.244.1.0-24&fd00:10:244:1::-64 -> the same, with
//                                    "PublicIPv6":"fd00::2","BackendV6Data":{"VNI":1,"VtepMAC":".."}

import Addressing
import FoundationEssentials
import JSONValue

/// A subnet lease as stored in etcd.
public struct Lease: Equatable, Sendable {
    /// The lease's subnet, which identifies it: the IPv4 subnet, or the IPv6 subnet in an
    /// IPv6-only cluster.
    public var subnet: IPNetwork
    /// Dual stack: the IPv6 subnet that goes with the IPv4 `subnet` (the key's `&<v6>-<len>`).
    public var ipv6Subnet: IPNetwork?
    public var attributes: LeaseAttributes
    /// The etcd lease the key is attached to; nil for a reservation (a key put without a lease),
    /// which podnetd uses as it is and never gives a TTL.
    public var etcdLease: Int64?
    /// When the key expires (nil for a reservation, or when not known).
    public var expiration: Date?

    public init(
        subnet: IPNetwork, ipv6Subnet: IPNetwork? = nil, attributes: LeaseAttributes, etcdLease: Int64?,
        expiration: Date? = nil
    ) {
        self.subnet = subnet.network; self.ipv6Subnet = ipv6Subnet?.network; self.attributes = attributes
        self.etcdLease = etcdLease; self.expiration = expiration
    }

    public init(key: SubnetKey, attributes: LeaseAttributes, etcdLease: Int64?, expiration: Date? = nil) {
        self.init(
            subnet: key.subnet, ipv6Subnet: key.ipv6Subnet, attributes: attributes, etcdLease: etcdLease,
            expiration: expiration)
    }

    public var key: SubnetKey { SubnetKey(subnet, ipv6Subnet: ipv6Subnet) }

    public var isReservation: Bool { etcdLease == nil }

    /// The lease's subnet of `family`.
    public func subnet(_ family: IPFamily) -> IPNetwork? {
        subnet.family == family ? subnet : (family == .v6 ? ipv6Subnet : nil)
    }

    /// The peer this lease describes, for the data path: an IPv6-only lease's subnet is reached
    /// through its PublicIPv6 and BackendV6Data's VtepMAC; a dual-stack lease carries its IPv6
    /// side along.
    public var peer: Peer {
        let a = attributes
        if subnet.family == .v6 {
            return Peer(
                subnet: subnet, publicIP: a.publicIPv6 ?? LeaseAttributes.noPublicIPv4, vtepMAC: a.ipv6VtepMAC)
        }
        return Peer(
            subnet: subnet, publicIP: a.publicIP, vtepMAC: a.vtepMAC, ipv6Subnet: ipv6Subnet,
            publicIPv6: a.publicIPv6, ipv6VtepMAC: a.ipv6VtepMAC)
    }
}

/// The last element of a lease's key, in flannel's format (MakeSubnetKey / ParseSubnetKey):
/// `10.5.34.0-24`, dual stack `10.244.1.0-24&fd00:10:244:1::-64`, IPv6-only
/// `0.0.0.0-0&fd00:10:244:1::-64` (flanneld's zero IPv4 subnet).
public struct SubnetKey: Hashable, Sendable, CustomStringConvertible {
    /// The IPv4 subnet, or the IPv6 subnet of an IPv6-only key.
    public var subnet: IPNetwork
    /// The IPv6 subnet of a dual-stack key.
    public var ipv6Subnet: IPNetwork?

    public init(_ subnet: IPNetwork, ipv6Subnet: IPNetwork? = nil) {
        self.subnet = subnet.network
        self.ipv6Subnet = subnet.family == .v6 ? nil : ipv6Subnet?.network
    }

    public var name: String {
        func v6(_ n: IPNetwork) -> String { "\(n.network.address)-\(n.prefixLength)" }
        if subnet.family == .v6 { return "0.0.0.0-0&" + v6(subnet) }
        return Self.name(subnet) + (ipv6Subnet.map { "&" + v6($0) } ?? "")
    }

    public var description: String { name }

    /// "10.5.34.0-24" (flannel's MakeSubnetKey for IPv4).
    public static func name(_ subnet: IPNetwork) -> String {
        "\(subnet.network.address)-\(subnet.prefixLength)"
    }

    /// Parses the last path element of a key; nil for keys that are not a subnet (skipped, as
    /// flanneld does): an IPv4 subnet `a.b.c.d-len` with host bits clear, optionally followed by
    /// `&<IPv6 subnet>-<len>`; `0.0.0.0-0&…` is an IPv6-only key.
    public static func parse(_ name: some StringProtocol) -> SubnetKey? {
        let text = String(name)
        let last = text.split(separator: "/").last.map(String.init) ?? ""
        let parts = last.split(separator: "&", maxSplits: 1, omittingEmptySubsequences: false)
        func network(_ s: Substring, _ family: IPFamily) -> IPNetwork? {
            guard let dash = s.lastIndex(of: "-"), let ip = IPAddress(s[..<dash]), ip.family == family,
                s[s.index(after: dash)...].allSatisfy({ $0.isASCII && $0.isNumber }),
                let len = Int(s[s.index(after: dash)...]),
                let n = IPNetwork(address: ip, prefixLength: len), !n.hasHostBits
            else { return nil }
            return n
        }
        guard let v4 = network(parts[0], .v4) else { return nil }
        guard parts.count == 2 else { return v4.prefixLength == 0 ? nil : SubnetKey(v4) }
        guard let v6 = network(parts[1], .v6), v6.prefixLength > 0 else { return nil }
        if v4.prefixLength == 0 { return v4.address.isUnspecified ? SubnetKey(v6) : nil }
        return SubnetKey(v4, ipv6Subnet: v6)
    }
}

extension LeaseAttributes {
    /// The JSON flanneld writes and reads.
    public func json() -> Data {
        var o: [String: JSON] = [
            "PublicIP": .string(publicIP.description),
            "PublicIPv6": publicIPv6.map { .string($0.description) } ?? .null,
            "BackendType": .string(backendType),
        ]
        if backendType == "vxlan" {
            func data(_ mac: MACAddress?) -> JSON {
                var data: [String: JSON] = [:]
                if let vni { data["VNI"] = .int(Int64(vni)) }
                if let mac { data["VtepMAC"] = .string(mac.description) }
                return .object(data)
            }
            // An IPv6-only lease has no IPv4 side: no BackendData, as flanneld writes it.
            if publicIP != Self.noPublicIPv4 || vtepMAC != nil || publicIPv6 == nil {
                o["BackendData"] = data(vtepMAC)
            }
            if publicIPv6 != nil || ipv6VtepMAC != nil { o["BackendV6Data"] = data(ipv6VtepMAC) }
        }
        return Data(JSON.object(o).encoded())
    }

    /// Reads a lease value; nil when it is not one (logged and skipped by callers). Keys match as
    /// in Go (exactly, else case-insensitively). PublicIPv6, when present, must be IPv6.
    public init?(json: Data) {
        guard let parsed = try? JSON(parsing: json), let f = GoObject(parsed),
            let s = f["PublicIP"]?.stringValue, let ip = IPAddress(s), ip.family == .v4
        else { return nil }
        var ip6: IPAddress?
        if let v = f["PublicIPv6"] {
            guard let s6 = v.stringValue, let parsed6 = IPAddress(s6), parsed6.family == .v6 else { return nil }
            ip6 = parsed6
        }
        let data = f["BackendData"].flatMap { GoObject($0) }
        let data6 = f["BackendV6Data"].flatMap { GoObject($0) }
        self.init(
            publicIP: ip, backendType: (f["BackendType"]?.stringValue ?? "").lowercased(),
            vni: (data ?? data6)?["VNI"]?.integerValue.flatMap { UInt32(exactly: $0) },
            vtepMAC: data?["VtepMAC"]?.stringValue.flatMap { MACAddress($0) },
            publicIPv6: ip6, ipv6VtepMAC: data6?["VtepMAC"]?.stringValue.flatMap { MACAddress($0) })
    }
}

extension JSON {
    /// A whole number, also when written with a fraction or exponent (`1.0`, `1e2`), as Go reads
    /// it into an integer field.
    var integerValue: Int64? {
        switch self {
        case .int(let i): i
        case .double(let d): Int64(exactly: d)
        default: nil
        }
    }

    var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
}
