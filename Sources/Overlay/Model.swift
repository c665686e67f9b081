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

    public init(name: String, index: Int32, mtu: Int, address: IPNetwork, publicIP: IPAddress? = nil) {
        self.name = name; self.index = index; self.mtu = mtu; self.address = address
        self.publicIP = publicIP ?? address.address
    }
}

/// A remote node, from its lease: `<subnet>` is reached through `publicIP`.
public struct Peer: Hashable, Sendable, CustomStringConvertible {
    /// The lease's subnet, e.g. 10.5.2.0/24.
    public var subnet: IPNetwork
    /// The lease's PublicIP.
    public var publicIP: IPAddress
    /// VXLAN only: BackendData.VtepMAC, the MAC of the peer's flannel.<VNI> device.
    public var vtepMAC: MACAddress?

    public init(subnet: IPNetwork, publicIP: IPAddress, vtepMAC: MACAddress? = nil) {
        self.subnet = subnet.network; self.publicIP = publicIP; self.vtepMAC = vtepMAC
    }

    public var description: String { "\(subnet) at \(publicIP)" + (vtepMAC.map { " vtep \($0)" } ?? "") }
}

/// What this node's lease must carry (flannel's lease attrs):
/// `{"PublicIP":..,"PublicIPv6":null,"BackendType":..,"BackendData":{"VNI":..,"VtepMAC":..}}`.
public struct LeaseAttributes: Equatable, Sendable {
    public var publicIP: IPAddress
    /// "vxlan", "host-gw" or "ipip".
    public var backendType: String
    /// VXLAN only: BackendData.VNI.
    public var vni: UInt32?
    /// VXLAN only: BackendData.VtepMAC, the MAC of this node's VXLAN device.
    public var vtepMAC: MACAddress?

    public init(publicIP: IPAddress, backendType: String, vni: UInt32? = nil, vtepMAC: MACAddress? = nil) {
        self.publicIP = publicIP; self.backendType = backendType; self.vni = vni; self.vtepMAC = vtepMAC
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
