// Lease keys and values in flanneld's etcd layout:
//   <prefix>/subnets/10.5.34.0-24 -> {"PublicIP":"192.168.64.3","PublicIPv6":null,
//                                    "BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:.."}}

import Addressing
import FoundationEssentials
import JSONValue

/// A subnet lease as stored in etcd.
public struct Lease: Equatable, Sendable {
    public var subnet: IPNetwork
    public var attributes: LeaseAttributes
    /// The etcd lease the key is attached to; nil for a reservation (a key put without a lease),
    /// which podnetd uses as it is and never gives a TTL.
    public var etcdLease: Int64?
    /// When the key expires (nil for a reservation, or when not known).
    public var expiration: Date?

    public init(subnet: IPNetwork, attributes: LeaseAttributes, etcdLease: Int64?, expiration: Date? = nil) {
        self.subnet = subnet.network; self.attributes = attributes; self.etcdLease = etcdLease
        self.expiration = expiration
    }

    public var isReservation: Bool { etcdLease == nil }

    /// The peer this lease describes, for the data path.
    public var peer: Peer { Peer(subnet: subnet, publicIP: attributes.publicIP, vtepMAC: attributes.vtepMAC) }
}

public enum SubnetKey {
    /// "10.5.34.0-24" (flannel's MakeSubnetKey for IPv4).
    public static func name(_ subnet: IPNetwork) -> String {
        "\(subnet.network.address)-\(subnet.prefixLength)"
    }

    /// Parses the last path element of a key; nil for keys that are not a subnet (skipped, as
    /// flanneld does) and for dual-stack keys ("…&v6-len"), which podnetd does not use yet.
    public static func parse(_ name: some StringProtocol) -> IPNetwork? {
        let text = String(name)
        let last = text.split(separator: "/").last.map(String.init) ?? ""
        guard !last.contains("&"), let dash = last.lastIndex(of: "-"),
            let ip = IPAddress(last[..<dash]), ip.family == IPFamily.v4,
            let len = Int(last[last.index(after: dash)...]),
            let n = IPNetwork(address: ip, prefixLength: len), !n.hasHostBits
        else { return nil }
        return n
    }
}

extension LeaseAttributes {
    /// The JSON flanneld writes and reads.
    public func json() -> Data {
        var o: [String: JSON] = [
            "PublicIP": .string(publicIP.description), "PublicIPv6": .null,
            "BackendType": .string(backendType),
        ]
        if backendType == "vxlan" {
            var data: [String: JSON] = [:]
            if let vni { data["VNI"] = .int(Int64(vni)) }
            if let vtepMAC { data["VtepMAC"] = .string(vtepMAC.description) }
            o["BackendData"] = .object(data)
        }
        return Data(JSON.object(o).encoded())
    }

    /// Reads a lease value; nil when it is not one (logged and skipped by callers). Keys match as
    /// in Go (exactly, else case-insensitively).
    public init?(json: Data) {
        guard let parsed = try? JSON(parsing: json), let f = GoObject(parsed),
            let s = f["PublicIP"]?.stringValue, let ip = IPAddress(s), ip.family == .v4
        else { return nil }
        let data = f["BackendData"].flatMap { GoObject($0) }
        self.init(
            publicIP: ip, backendType: (f["BackendType"]?.stringValue ?? "").lowercased(),
            vni: data?["VNI"]?.integerValue.flatMap { UInt32(exactly: $0) },
            vtepMAC: data?["VtepMAC"]?.stringValue.flatMap { MACAddress($0) })
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
