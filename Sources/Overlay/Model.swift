// The plain values the overlay data path takes and gives: this node's external interface, peers
// (one per remote lease), the attributes this node's lease publishes, reports and errors. Nothing
// here knows etcd: the subnet manager turns leases into `Peer`s and `LeaseAttributes` into JSON.

import Addressing
import Netlink

/// The interface overlay traffic leaves through, and the address peers reach this node at.
public struct ExternalInterface: Equatable, Sendable {
    public var name: String
    public var index: Int32
    public var mtu: Int
    /// The interface's IPv4 address and prefix (flannel's IfaceAddr).
    public var address: IPNetwork
    /// The address peers send to (flannel's ExtAddr, `--public-ip`); the interface address unless
    /// the node is behind NAT.
    public var publicIP: IPAddress
    /// The interface's global IPv6 address (flannel's IfaceV6Addr), when the config enables IPv6.
    public var ipv6Address: IPNetwork?
    /// The IPv6 address peers send to (flannel's ExtV6Addr, `--public-ipv6`); the interface's
    /// IPv6 address unless given.
    public var publicIPv6: IPAddress?

    public init(
        name: String, index: Int32, mtu: Int, address: IPNetwork, publicIP: IPAddress? = nil,
        ipv6Address: IPNetwork? = nil, publicIPv6: IPAddress? = nil
    ) {
        self.name = name; self.index = index; self.mtu = mtu; self.address = address
        self.publicIP = publicIP ?? address.address
        self.ipv6Address = ipv6Address
        self.publicIPv6 = publicIPv6 ?? ipv6Address?.address
    }

    /// The interface's address of `family`.
    public func address(_ family: IPFamily) -> IPNetwork? {
        family == .v4 ? (address.family == .v4 ? address : nil) : ipv6Address
    }

    /// The public IP of `family`.
    public func publicIP(_ family: IPFamily) -> IPAddress? {
        family == .v4 ? (publicIP.family == .v4 ? publicIP : nil) : publicIPv6
    }
}

/// A remote node, from its lease: `<subnet>` is reached through `publicIP`. One family's network
/// programs `subnet`, `publicIP` and `vtepMAC` (IPv4, or IPv6 in an IPv6-only cluster); in a
/// dual-stack cluster the IPv6 side rides along in the `ipv6` fields, for the IPv6 network.
public struct Peer: Hashable, Sendable, CustomStringConvertible {
    /// The lease's subnet, e.g. 10.5.2.0/24 (its IPv6 subnet in an IPv6-only cluster).
    public var subnet: IPNetwork
    /// The lease's PublicIP (PublicIPv6 in an IPv6-only cluster).
    public var publicIP: IPAddress
    /// VXLAN only: BackendData.VtepMAC, the MAC of the peer's flannel.<VNI> device
    /// (BackendV6Data's, of flannel-v6.<VNI>, in an IPv6-only cluster).
    public var vtepMAC: MACAddress?
    /// Dual stack: the lease's IPv6 subnet, PublicIPv6 and BackendV6Data.VtepMAC.
    public var ipv6Subnet: IPNetwork?
    public var publicIPv6: IPAddress?
    public var ipv6VtepMAC: MACAddress?

    public init(
        subnet: IPNetwork, publicIP: IPAddress, vtepMAC: MACAddress? = nil, ipv6Subnet: IPNetwork? = nil,
        publicIPv6: IPAddress? = nil, ipv6VtepMAC: MACAddress? = nil
    ) {
        self.subnet = subnet.network; self.publicIP = publicIP; self.vtepMAC = vtepMAC
        self.ipv6Subnet = ipv6Subnet?.network; self.publicIPv6 = publicIPv6; self.ipv6VtepMAC = ipv6VtepMAC
    }

    /// The dual-stack peer's IPv6 side as a peer of the IPv6 network; nil when it has none.
    public var ipv6Peer: Peer? {
        guard let ipv6Subnet, let publicIPv6 else { return nil }
        return Peer(subnet: ipv6Subnet, publicIP: publicIPv6, vtepMAC: ipv6VtepMAC)
    }

    /// The peer without its IPv6 side.
    public var primary: Peer { Peer(subnet: subnet, publicIP: publicIP, vtepMAC: vtepMAC) }

    public var description: String {
        "\(subnet) at \(publicIP)" + (vtepMAC.map { " vtep \($0)" } ?? "")
            + (ipv6Peer.map { ", \($0)" } ?? "")
    }
}

/// What this node's lease must carry (flannel's lease attrs):
/// `{"PublicIP":..,"PublicIPv6":null,"BackendType":..,"BackendData":{"VNI":..,"VtepMAC":..}}`, and
/// with IPv6 `"PublicIPv6":"2001:db8::2","BackendV6Data":{"VNI":..,"VtepMAC":..}`.
public struct LeaseAttributes: Equatable, Sendable {
    /// PublicIP: 0.0.0.0 in an IPv6-only cluster, as flanneld writes it.
    public var publicIP: IPAddress
    /// "vxlan", "host-gw", "ipip" or "bgp".
    public var backendType: String
    /// VXLAN only: BackendData.VNI.
    public var vni: UInt32?
    /// VXLAN only: BackendData.VtepMAC, the MAC of this node's VXLAN device.
    public var vtepMAC: MACAddress?
    /// PublicIPv6, when the config enables IPv6 (null otherwise).
    public var publicIPv6: IPAddress?
    /// VXLAN with IPv6 only: BackendV6Data.VtepMAC, the MAC of flannel-v6.<VNI>.
    public var ipv6VtepMAC: MACAddress?

    public init(
        publicIP: IPAddress, backendType: String, vni: UInt32? = nil, vtepMAC: MACAddress? = nil,
        publicIPv6: IPAddress? = nil, ipv6VtepMAC: MACAddress? = nil
    ) {
        self.publicIP = publicIP; self.backendType = backendType; self.vni = vni; self.vtepMAC = vtepMAC
        self.publicIPv6 = publicIPv6; self.ipv6VtepMAC = ipv6VtepMAC
    }

    /// The PublicIP of an IPv6-only lease.
    public static let noPublicIPv4 = IPAddress(v4: 0, 0, 0, 0)

    /// Attributes of an IPv6 network: its public IP and VTEP MAC go to the IPv6 fields, PublicIP is
    /// 0.0.0.0.
    public static func ipv6(publicIP: IPAddress, backendType: String, vni: UInt32?, vtepMAC: MACAddress?)
        -> LeaseAttributes
    {
        LeaseAttributes(
            publicIP: noPublicIPv4, backendType: backendType, vni: vni, publicIPv6: publicIP, ipv6VtepMAC: vtepMAC)
    }

    /// These (an IPv4 network's) with the IPv6 fields of `v6` (the IPv6 network's): a dual-stack
    /// node's lease.
    public func merging(ipv6 v6: LeaseAttributes) -> LeaseAttributes {
        var merged = self
        merged.publicIPv6 = v6.publicIPv6
        merged.ipv6VtepMAC = v6.ipv6VtepMAC
        return merged
    }
}

/// Kernel entries, per kind.
public struct EntryCounts: Equatable, Sendable {
    public var routes = 0
    public var neighbours = 0
    public var fdbEntries = 0
    public init(routes: Int = 0, neighbours: Int = 0, fdbEntries: Int = 0) {
        self.routes = routes; self.neighbours = neighbours; self.fdbEntries = fdbEntries
    }
    public var total: Int { routes + neighbours + fdbEntries }
}

/// What a reconcile (or a single peer update) changed in the kernel.
public struct ReconcileReport: Equatable, Sendable {
    /// Entries created or corrected (missing, or pointing elsewhere).
    public var programmed = EntryCounts()
    /// Entries removed: of peers no longer desired, stale from before a restart, or superseded
    /// (the old FDB entry of a peer whose VtepMAC changed).
    public var removed = EntryCounts()
    /// The tunnel device was missing or incompatible and was created again: everything hanging
    /// off it has been programmed again.
    public var deviceRecreated = false
    /// This node's lease attributes changed (a recreated device has a new MAC): publish the lease
    /// again with the network's `leaseAttributes`.
    public var leaseAttributesChanged = false
    /// Peers given nothing, with the reason (also logged, once per peer and reason).
    public var skipped: [IPNetwork: String] = [:]
    /// Kernel operations that failed; the rest was applied. The next reconcile tries again.
    public var failures: [String] = []

    public init() {}

    /// Number of kernel changes: a non-zero value on a periodic reconcile means repairs.
    public var changes: Int { programmed.total + removed.total }

    /// Adds what `other` (another pass, or the other family's network) changed to this report.
    public mutating func merge(_ other: ReconcileReport) {
        programmed.routes += other.programmed.routes
        programmed.neighbours += other.programmed.neighbours
        programmed.fdbEntries += other.programmed.fdbEntries
        removed.routes += other.removed.routes
        removed.neighbours += other.removed.neighbours
        removed.fdbEntries += other.removed.fdbEntries
        deviceRecreated = deviceRecreated || other.deviceRecreated
        leaseAttributesChanged = leaseAttributesChanged || other.leaseAttributesChanged
        skipped.merge(other.skipped) { $1 }
        failures += other.failures
    }
}

public enum OverlayError: Error, Equatable, CustomStringConvertible {
    /// A netlink call failed.
    case netlink(NetlinkError)
    /// The kernel has no ipip support (EOPNOTSUPP on RTM_NEWLINK kind ipip).
    case ipipUnsupported(NetlinkError)
    /// host-gw needs the public IP on the interface: a NAT'ed node cannot be a next hop.
    case publicIPNotOnInterface(publicIP: IPAddress, interface: String)
    /// A link with the device's name exists but is of another kind: not ours to delete.
    case deviceConflict(name: String, kind: String?)
    /// The interface does not exist or has no usable IPv4 address.
    case interfaceNotFound(String)
    /// A configuration value the data path cannot work with.
    case invalidConfiguration(String)
    /// `reconcile` or a peer update before `start(subnet:)`.
    case notStarted

    public var description: String {
        switch self {
        case .netlink(let e): e.description
        case .ipipUnsupported(let e):
            "the kernel cannot create ipip devices: load the ipip module (modprobe ipip) (\(e))"
        case .publicIPNotOnInterface(let ip, let iface):
            "host-gw: the public IP \(ip) is not an address of \(iface): a node behind NAT cannot be a host-gw next hop "
                + "(use the interface address as public IP, or the vxlan backend)"
        case .deviceConflict(let name, let kind):
            "\(name) exists but is a \(kind ?? "kind-less") device, not one podnet manages: remove it and try again"
        case .interfaceNotFound(let s): s
        case .invalidConfiguration(let s): s
        case .notStarted: "the overlay network has no subnet yet: call start(subnet:) first"
        }
    }
}
