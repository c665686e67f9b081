// route_localnet: traffic to a host port through 127.0.0.1 is DNATed to the container, but the
// kernel drops packets with a 127/8 source that leave a routing boundary ("martians") unless
// `route_localnet` is set on the way out. The reference sets it on the interface that routes to
// the container (the bridge, usually), for IPv4 and only with snat (which masquerades the
// 127.0.0.1 source on the way out).

import Addressing
import CNI
import Netlink
import PluginKernel

/// Sets `net/ipv4/conf/<if>/route_localnet` to 1 on the interface of the most specific main
/// table route to `address` (what `ip route get` would pick without policy rules). Nothing
/// when no route leads there, as in the reference; the sysctl is written only when not yet 1.
func enableLocalnetRouting(to address: IPAddress, kernel: any PluginKernel) throws {
    let nl = try kernel.routeSocket()
    let candidates = try nl.routes(family: .v4, table: 254).filter {
        $0.interface != nil && $0.destination.contains(address)
    }
    let best = candidates.max { a, b in
        (a.destination.prefixLength, -Int64(a.priority ?? 0)) < (b.destination.prefixLength, -Int64(b.priority ?? 0))
    }
    guard let index = best?.interface, let link = try nl.link(index: index) else { return }
    let key = "net/ipv4/conf/\(link.name)/route_localnet"
    if (try? kernel.readSysctl(key)) == "1" { return }
    do { try kernel.writeSysctl(key, "1") } catch {
        throw CNIError(.internal, "unable to enable route_localnet: \(error)")
    }
}
