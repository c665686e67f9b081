// Helpers for the overlay tests: an underlay of two "nodes" (namespaces joined by a veth pair,
// 192.168.77.1/24 and .2/24 on `ul0`), a data path opened inside a namespace, and readers of
// `ip route`, `ip neigh` and `bridge fdb` output.

import Addressing
import Foundation
import NetNS
import Netlink
import Overlay
import TestSupport
import Testing

let network = IPNetwork("10.5.0.0/16")!

func ip(_ s: String) -> IPAddress { IPAddress(s)! }
func net(_ s: String) -> IPNetwork { IPNetwork(s)! }
func mac(_ s: String) -> MACAddress { MACAddress(s)! }

/// Two namespaces joined by a veth pair named `ul0` on both sides, 192.168.77.1/24 and .2/24, up.
func withUnderlay<T>(_ body: (TestNamespace, TestNamespace) throws -> T) throws -> T {
    try withNamespaces(2) { ns in
        try sh("ip link add ul0 netns \(ns[0].name) type veth peer name ul0 netns \(ns[1].name)")
        for (i, n) in ns.enumerated() {
            try n.sh("ip addr add 192.168.77.\(i + 1)/24 dev ul0 && ip link set ul0 up")
        }
        return try body(ns[0], ns[1])
    }
}

/// One namespace with an underlay interface `ul0` at 192.168.77.1/24 (its veth peer lives in a
/// second namespace, which stays silent).
func withNode<T>(_ body: (TestNamespace) throws -> T) throws -> T {
    try withUnderlay { a, _ in try body(a) }
}

extension TestNamespace {
    /// A data path whose socket is bound to this namespace.
    func dataPath() throws -> KernelDataPath {
        try NetworkNamespace(path: path).run { try KernelDataPath() }
    }

    /// The external interface `ul0`, as the daemon would find it.
    func underlay(publicIP: IPAddress? = nil) throws -> ExternalInterface {
        try ExternalInterface.find(name: "ul0", publicIP: publicIP, dataPath: try dataPath())
    }

    /// Non-empty output lines of a command.
    func lines(_ command: String) throws -> [String] {
        try sh(command).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// `ip route show dev <dev>` lines of routes with a gateway.
    func gatewayRoutes(dev: String) throws -> [String] {
        try lines("ip route show dev \(dev)").filter { $0.contains(" via ") }
    }
    /// `ip neigh show dev <dev> nud permanent` lines.
    func permanentNeighbours(dev: String) throws -> [String] { try lines("ip neigh show dev \(dev) nud permanent") }
    /// `bridge fdb show dev <dev>` lines with a remote.
    func fdbRemotes(dev: String) throws -> [String] {
        try lines("bridge fdb show dev \(dev)").filter { $0.contains(" dst ") }
    }

    func ping(_ target: String, from source: String) -> Bool {
        (try? sh("ping -c 1 -W 2 -I \(source) \(target) >/dev/null")) != nil
    }
}

/// True when this kernel can create ipip devices (built in, loaded, or loadable).
let kernelHasIPIP: Bool = {
    guard isRoot else { return false }
    return (try? withNamespaces(1) { ns in try ns[0].sh("ip link add t0 type ipip local 192.0.2.1") }) != nil
}()
