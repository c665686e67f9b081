// Fuzz target `lease-value`: a subnet lease's value in etcd (written by flanneld, podnetd or
// anyone with write access to the prefix), and its key name.

import FoundationEssentials
import Overlay

public enum LeaseValueFuzz {
    public static func run(_ bytes: [UInt8]) {
        _ = SubnetKey.parse(String(decoding: bytes, as: UTF8.self))
        guard let attributes = LeaseAttributes(json: Data(bytes)) else { return }
        // What podnetd writes for its own lease, it (and every peer) reads back unchanged.
        guard let again = LeaseAttributes(json: attributes.json()) else {
            fatalError("lease value written from \(attributes) does not read back")
        }
        let kept =
            attributes.backendType == "vxlan"
            ? attributes
            : LeaseAttributes(
                publicIP: attributes.publicIP, backendType: attributes.backendType, vni: nil, vtepMAC: nil,
                publicIPv6: attributes.publicIPv6)
        guard again == kept else { fatalError("lease value \(attributes) reads back as \(again)") }
    }
}
