// The bridge's ipMasq rules, through Netfilter's reference-compatible layouts.

import Addressing
import CNI
import Netfilter

/// Masquerade operations bound to the backend the config chose (nil: the reference's automatic
/// choice). Netfilter errors become CNI errors naming the command that failed.
struct Masquerading {
    let backend: Masquerade.Backend?
    let netfilter: Masquerade

    func setup(network: String, containerID: String, ifname: String, addresses: [IPNetwork]) throws {
        try netfilter.setup(
            backend: backend, network: network, containerID: containerID, ifname: ifname,
            addresses: addresses)
    }

    /// Removes the attachment's rules in both layouts; needs no addresses. `families` limits the
    /// iptables side to the families the attachment is known to have had.
    func teardown(network: String, containerID: String, ifname: String, families: Set<IPFamily>? = nil) throws {
        try netfilter.teardown(network: network, containerID: containerID, ifname: ifname, families: families)
    }

    func gc(network: String, valid: Set<Attachment>) throws {
        try netfilter.gc(network: network, valid: valid)
    }

    func check(network: String, containerID: String, ifname: String, addresses: [IPNetwork]) throws -> Bool {
        try netfilter.check(
            backend: backend, network: network, containerID: containerID, ifname: ifname,
            addresses: addresses)
    }
}

extension Bridge {
    func masquerade(_ conf: BridgeConfig) throws -> Masquerading {
        Masquerading(backend: try conf.ipMasqBackend.map { try Masquerade.Backend(named: $0) }, netfilter: netfilter)
    }
}
