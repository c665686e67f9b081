// The backend interface, in the spirit of flannel's (`Backend.RegisterNetwork` -> `Network`), with
// the lease kept outside: a backend prepares the node (creates its device, whose MAC the lease
// publishes) and returns a network; the caller acquires the lease with the network's attributes,
// gives the network its subnet, then feeds it peers.
//
//     let dataPath = try KernelDataPath()
//     let network = try VXLANBackend(interface: iface, network: config.network, config: vxlan)
//         .registerNetwork(dataPath: dataPath, logger: logger)
//     let lease = try await subnets.acquire(attributes: network.leaseAttributes)  // etcd, elsewhere
//     try network.start(subnet: lease.subnet)                 // address on the device, device up
//     write subnet.env with network.mtu
//     var report = try network.reconcile(peers: allLeases)    // start-up: stale entries go
//     on a watch event:      try network.setPeer(peer) / try network.removePeer(subnet: s)
//     every 10 s or so:      report = try network.reconcile(peers: allLeases)  // repairs
//     if report.leaseAttributesChanged { republish the lease with network.leaseAttributes }
//
// All calls are synchronous and short (netlink round trips), serialised by the network, and may
// come from any task.

import Addressing
import Logging
import Netlink

public protocol Backend: Sendable {
    /// The lease's BackendType: "vxlan", "host-gw", "ipip", "bgp".
    var backendType: String { get }

    /// Checks the node, removes tunnel devices of other modes, creates this mode's device (kept
    /// when a compatible one exists) and returns the network. Fails before anything is published
    /// when the node cannot carry this mode (no ipip in the kernel, a NAT'ed host-gw node).
    func registerNetwork(dataPath: any DataPath, logger: Logger) throws(OverlayError) -> any OverlayNetwork
}

public protocol OverlayNetwork: AnyObject, Sendable {
    var backendType: String { get }
    /// The MTU pods get (subnet.env's FLANNEL_MTU): the interface MTU less the encapsulation.
    var mtu: Int { get }
    /// What this node's lease must carry. Read it again after a report says it changed.
    var leaseAttributes: LeaseAttributes { get }
    /// The tunnel device's name, nil for host-gw.
    var deviceName: String? { get }

    /// Gives the node its subnet from the acquired lease: `<subnet>.0/32` on the device (other
    /// addresses of the overlay network removed from it), device up. Idempotent.
    func start(subnet: IPNetwork) throws(OverlayError)

    /// Starts the network with a lease's subnets: a single-family network takes `subnet` (the
    /// default); a dual-stack one gives each family its own and needs `ipv6Subnet`.
    func start(subnet: IPNetwork, ipv6Subnet: IPNetwork?) throws(OverlayError)

    /// Makes the kernel's peer entries exactly those `peers` need: one dump of each table, then
    /// only the differences. Re-creates a missing or incompatible device first. Peers for this
    /// node's own subnet are ignored. Kernel operations that fail are reported, not thrown.
    func reconcile(peers: [Peer]) throws(OverlayError) -> ReconcileReport

    /// Programs one peer (a lease added or changed) without reading the kernel: changes only what
    /// differs from what was last programmed for its subnet (a changed VtepMAC loses its old FDB
    /// entry). Entries removed behind the network's back are restored by the next `reconcile`.
    func setPeer(_ peer: Peer) throws(OverlayError) -> ReconcileReport

    /// Removes what was programmed for the peer with `subnet` (a lease deleted or expired).
    func removePeer(subnet: IPNetwork) throws(OverlayError) -> ReconcileReport
}

extension OverlayNetwork {
    public func start(subnet: IPNetwork, ipv6Subnet: IPNetwork?) throws(OverlayError) {
        try start(subnet: subnet)
    }
}

extension Backend {
    /// `registerNetwork` logging to a logger labelled "podnet.overlay".
    public func registerNetwork(dataPath: any DataPath) throws(OverlayError) -> any OverlayNetwork {
        try registerNetwork(dataPath: dataPath, logger: Logger(label: "podnet.overlay"))
    }
}
