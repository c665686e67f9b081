// A node for the comparison's tests: the fake kernel with eth0 at 192.168.50.11/24, the overlay
// network registered and reconciled as podnetd does it (so the kernel starts converged), this
// node's lease and two peers' leases. Nothing needs root; the time is fixed, so output is stable.

import Addressing
import Foundation
import Netlink
import NodeCheck
import Overlay
import TestSupport

func ip(_ s: String) -> IPAddress { IPAddress(s)! }
func net(_ s: String) -> IPNetwork { IPNetwork(s)! }
func mac(_ s: String) -> MACAddress { MACAddress(s)! }

/// 2026-11-30T22:00:00Z.
let now = Date(timeIntervalSince1970: 1_796_076_000)
let nodeIP = ip("192.168.50.11")

func lease(_ subnet: String, _ publicIP: String, backend: String = "vxlan", mac m: String? = nil, ttl: Double? = 86_000)
    -> Lease
{
    Lease(
        subnet: net(subnet),
        attributes: LeaseAttributes(
            publicIP: ip(publicIP), backendType: backend, vni: backend == "vxlan" ? 1 : nil,
            vtepMAC: m.map { mac($0) }),
        etcdLease: ttl == nil ? nil : 0x694d_7d3a_5f8b_1c2e, expiration: ttl.map { now.addingTimeInterval($0) })
}

struct TestNode {
    let dp: RecordingDataPath
    let eth0: ExternalInterface
    let config: NetworkConfig
    let network: any OverlayNetwork
    var own: Lease
    var leases: [Lease]

    /// A node of `backend` with the lease 10.244.1.0/24, two peers on its L2 segment (10.244.2.0/24
    /// at .12, 10.244.3.0/24 at .13) plus `extra` leases, reconciled once.
    init(backend: String = "vxlan", extra: [Lease] = []) throws {
        var k = FakeKernel()
        let index = k.addInterface("eth0", address: net("192.168.50.11/24"))
        dp = RecordingDataPath(k)
        eth0 = ExternalInterface(name: "eth0", index: index, mtu: 1500, address: net("192.168.50.11/24"))
        var config = try NetworkConfig(
            json: Data(#"{"Network":"10.244.0.0/16","Backend":{"Type":"\#(backend)"}}"#.utf8))
        config.vxlan.mac = mac("02:00:00:00:01:01")
        self.config = config
        network = try config.makeBackend(interface: eth0).registerNetwork(dataPath: dp)
        try network.start(subnet: net("10.244.1.0/24"))
        let vxlan = backend == "vxlan"
        own = Lease(
            subnet: net("10.244.1.0/24"), attributes: network.leaseAttributes, etcdLease: 0x694d_7d3a_5f8b_1c20,
            expiration: now.addingTimeInterval(86_399))
        leases =
            [
                own,
                lease("10.244.2.0/24", "192.168.50.12", backend: backend, mac: vxlan ? "02:00:00:00:02:01" : nil),
                lease("10.244.3.0/24", "192.168.50.13", backend: backend, mac: vxlan ? "02:00:00:00:03:01" : nil),
            ] + extra
        _ = try reconcile()
    }

    var nodeAddresses: [IPAddress] { [eth0.address.address, eth0.publicIP] }

    var peers: [Peer] { config.peers(from: leases, own: own.subnet, nodeAddresses: nodeAddresses) }

    /// podnetd's repair pass.
    func reconcile() throws -> ReconcileReport { try network.reconcile(peers: peers) }

    func inspect() throws -> Inspection {
        try config.inspect(interface: eth0, ownSubnet: own.subnet, peers: peers, dataPath: dp)
    }

    func report(subnetEnv: [String: String]?? = nil, daemon: DaemonStatus? = nil) throws -> NodeReport {
        NodeReport(
            config: config, own: own, leases: leases, nodeAddresses: nodeAddresses, inspection: try inspect(),
            subnetEnv: subnetEnv ?? self.subnetEnv, daemon: daemon, now: now)
    }

    /// subnet.env as podnetd writes it for this node.
    var subnetEnv: [String: String] {
        [
            "FLANNEL_NETWORK": "10.244.0.0/16", "FLANNEL_SUBNET": "10.244.1.1/24", "FLANNEL_MTU": "\(network.mtu)",
            "FLANNEL_IPMASQ": "true",
        ]
    }

    var device: Int32 { dp.kernel.link(named: network.deviceName ?? "")?.index ?? -1 }
}

/// The golden file `name` under golden/: compared with `text`; written instead when
/// PODNET_UPDATE_GOLDEN is set.
func golden(_ name: String, filePath: String = #filePath) throws -> (URL, String?) {
    let url = URL(fileURLWithPath: filePath).deletingLastPathComponent().appendingPathComponent("golden/\(name)")
    return (url, try? String(contentsOf: url, encoding: .utf8))
}

/// The repository's docs/podnetctl.schema.json.
func schemaURL(filePath: String = #filePath) -> URL {
    URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("docs/podnetctl.schema.json")
}
