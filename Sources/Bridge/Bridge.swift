// The bridge plugin: a Linux bridge on the host, one veth pair per attachment, addresses from
// the IPAM plugin, optional gateway address on the bridge and masquerading.
//
// Kernel objects per attachment: the container end (CNI_IFNAME, in the pod's namespace) and the
// host end (vethXXXXXXXX, a port of the bridge). Deleting either end deletes both, and deleting
// the pod's namespace deletes the container end, so DEL only has to find one of them.
//
// Where the reference leaks, this one does not: ADD undoes everything it created when a step
// fails (the reference keeps the veth), and DEL releases the IP and the masquerade rules also
// when the namespace is gone, CNI_NETNS is empty or the path is not a namespace.
//
// The kernel, the masquerade rules' command runner and the IPAM delegate are values given at
// init (PluginKernel): `Bridge()` is the real plugin, and tests run the same code in-process
// against an in-memory kernel and a fake IPAM.

import Addressing
import CNI
import Netfilter
import Netlink
import PluginKernel

#if canImport(Glibc)
    import Glibc
#endif

public struct Bridge: CNIPlugin {
    let kernel: any PluginKernel
    /// Applies the ipMasq rules: nftables over netlink in-process, iptables through its tools.
    let netfilter: Masquerade
    /// Runs the IPAM plugin.
    let ipam: any DelegateRunner

    public init(
        kernel: any PluginKernel = SystemKernel(), netfilter: Masquerade = Masquerade(nftables: NetlinkNFTables()),
        ipam: any DelegateRunner = CNIPathDelegates()
    ) {
        self.kernel = kernel
        self.netfilter = netfilter
        self.ipam = ipam
    }

    // MARK: ADD

    public func add(_ request: Request) throws -> Result {
        let conf = try BridgeConfig(request)
        let netns: any NamespaceHandle
        do { netns = try kernel.namespace(path: request.env.netns) } catch {
            throw CNIError(.invalidEnvironment, "failed to open netns \"\(request.env.netns)\": \(error)")
        }
        let host = try kernel.routeSocket()
        let container = try netns.run { try kernel.routeSocket() }
        var undo = Rollback()
        defer { undo.runUnlessCommitted() }

        let br = try step("create bridge \(conf.bridge)") { try ensureBridge(conf, host, &undo) }
        let pair = try step("create veth pair") {
            try createVeth(conf, request, host: host, container: container, netns: netns, bridge: br, &undo)
        }

        var result = Result(interfaces: [
            .init(name: br.name, mac: br.mac?.description),
            .init(name: pair.host.name, mac: pair.host.mac?.description),
            .init(name: request.env.ifname, mac: pair.container.mac?.description, sandbox: request.env.netns),
        ])

        if let ipamType = request.ipamType {
            // Registers the IPAM DEL also when ADD's outcome is unknown (killed at the time-out,
            // crashed, an unusable result), since the delegate may hold an address by then.
            let ipam = try self.ipam.add(ipamType, request: request, stdin: nil, undo: &undo)
            guard !ipam.ips.isEmpty else { throw CNIError(.internal, "IPAM plugin returned missing IP config") }
            result.ips = ipam.ips
            result.routes = ipam.routes
            result.dns = ipam.dns
            let gateways = calculateGateways(conf, &result)
            try step("configure \(request.env.ifname) in \(request.env.netns)") {
                try netns.run { try configureContainer(conf, result, link: pair.container, container) }
            }
            if conf.isGateway {
                try step("set gateway address on \(br.name)") {
                    try ensureGatewayAddresses(conf, gateways, bridge: br, host)
                }
            }
            if conf.ipMasq {
                let masq = try masquerade(conf)
                try step("set up masquerading") {
                    try masq.setup(
                        network: request.name, containerID: request.env.containerID,
                        ifname: request.env.ifname, addresses: result.ips.map(\.address))
                }
                undo.add("remove masquerade rules") {
                    try masq.teardown(
                        network: request.name, containerID: request.env.containerID, ifname: request.env.ifname)
                }
            }
        } else if !conf.disableContainerInterface {
            try netns.run { try container.setLink(pair.container.index, LinkChange(up: true)) }
        }

        if !conf.disableContainerInterface {
            try step("wait for \(pair.host.name) to come up") { try waitOperUp(pair.host.index, host) }
        }
        // MACs can change while ports join: report what the kernel has now.
        if let b = try host.link(index: br.index) { result.interfaces[0].mac = b.mac?.description }
        if !conf.dns.isEmpty { result.dns = conf.dns }
        undo.commit()
        return result
    }

    /// Runs one ADD step; a failure names the step in the error, keeping the error's code.
    private func step<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw CNIError.wrap(error, "failed to \(what)") }
    }

    /// Creates the bridge if missing; an existing link of that name must be a bridge.
    private func ensureBridge(_ conf: BridgeConfig, _ nl: any RouteSocket, _ undo: inout Rollback) throws -> Link {
        var created = false
        do {
            try nl.addBridge(name: conf.bridge, mtu: conf.mtu)
            created = true
            // Registered before anything else can fail; found by name, as that is all known yet.
            let name = conf.bridge
            undo.add("delete bridge \(name)") {
                // Only if it is still a bridge no other attachment joined meanwhile.
                guard let b = try nl.link(named: name), b.kind == "bridge" else { return }
                if try nl.links().allSatisfy({ $0.master != b.index }) { try nl.deleteLink(b.index) }
            }
        } catch {
            // EEXIST: another ADD created it first, or it was there already.
            if !error.isExists { throw error }
        }
        guard var br = try nl.link(named: conf.bridge) else {
            throw CNIError(.internal, "bridge \(conf.bridge) disappeared after creation")
        }
        guard br.kind == "bridge" else {
            throw CNIError(.internal, "\"\(conf.bridge)\" already exists but is not a bridge")
        }
        if created {
            // A bridge takes the lowest MAC of its ports unless one is set; pin it so the
            // gateway's MAC does not change as pods come and go.
            if let mac = br.mac { try nl.setLink(br.index, LinkChange(mac: mac)) }
        }
        try? kernel.writeSysctl("net/ipv6/conf/\(conf.bridge)/accept_ra", "0")
        // No DAD for the bridge's IPv6 gateway address, unless enabledad asks for DAD: host-local
        // hands out each address of the range once, and a tentative gateway answers no neighbour
        // solicitation, so every pod's first packets to it would be lost for the 1-2 s DAD takes
        // after ADD returned. The reference leaves DAD on here; the pod end is as in the reference.
        if !conf.enabledad { try? kernel.writeSysctl("net/ipv6/conf/\(conf.bridge)/accept_dad", "0") }
        if conf.promiscMode && !br.isPromiscuous { try nl.setLink(br.index, LinkChange(promiscuous: true)) }
        if !br.isUp {
            try nl.setLink(br.index, LinkChange(up: true))
            br.flags |= 0x1
        }
        return br
    }

    /// Creates the veth pair (container end first, peer straight into the host namespace),
    /// attaches the host end to the bridge and sets its port flags.
    private func createVeth(
        _ conf: BridgeConfig, _ request: Request, host: any RouteSocket, container: any RouteSocket,
        netns: any NamespaceHandle, bridge: Link, _ undo: inout Rollback
    ) throws -> (host: Link, container: Link) {
        let ifname = request.env.ifname
        if try container.link(named: ifname) != nil {
            throw CNIError(.internal, "container veth name \"\(ifname)\" already exists in \(request.env.netns)")
        }
        let hostNS = try kernel.currentNamespace()
        var hostName = ""
        for attempt in 1...10 {
            hostName =
                "veth"
                + (0..<4).map { _ in
                    let b = UInt8.random(in: 0...255)
                    return (b < 16 ? "0" : "") + String(b, radix: 16)
                }.joined()
            do {
                try container.addVeth(
                    name: ifname, peerName: hostName, peerNamespaceFD: hostNS.fd, mtu: conf.mtu, mac: conf.mac)
                break
            } catch {
                // EEXIST here means the random host name is taken (ifname was checked): retry.
                if !error.isExists || attempt == 10 { throw error }
            }
        }
        // Registered before the pair is looked up, so that no later failure can leave it behind.
        // Deleting the host end deletes the container end too.
        let peer = hostName
        undo.add("delete veth \(peer)") {
            guard let l = try host.link(named: peer) else { return }
            do { try host.deleteLink(l.index) } catch let e as NetlinkError where e.isNotFound {}
        }
        guard let c = try container.link(named: ifname), var h = try host.link(named: hostName) else {
            throw CNIError(.internal, "veth pair \(ifname)/\(hostName) not found after creation")
        }
        try? kernel.writeSysctl("net/ipv6/conf/\(hostName)/accept_ra", "0")
        try host.setLink(h.index, LinkChange(up: true, master: bridge.index))
        // Over netlink, never sysfs: a runtime that entered this namespace with setns
        // keeps a sysfs of another namespace (BridgePorts.swift).
        try host.setBridgePort(
            h.index, hairpin: conf.hairpinMode ? true : nil, isolated: conf.portIsolation ? true : nil)
        h = try host.link(index: h.index) ?? h
        return (h, c)
    }

    /// Sets `ips[].interface` to the container interface (2), fills missing gateways with the
    /// network's first address when the bridge is the gateway, and adds the default routes for
    /// isDefaultGateway unless IPAM already gave one with a gateway. Returns the gateway
    /// address to put on the bridge per family.
    private func calculateGateways(_ conf: BridgeConfig, _ result: inout Result) -> [IPNetwork] {
        var gateways: [IPNetwork] = []
        for i in result.ips.indices {
            result.ips[i].interface = 2
            let addr = result.ips[i].address
            if result.ips[i].gateway == nil && conf.isGateway {
                result.ips[i].gateway = addr.firstAddress.advanced(by: 1)
            }
            guard conf.isGateway, let gw = result.ips[i].gateway,
                !gateways.contains(where: { $0.family == addr.family })
            else { continue }
            gateways.append(IPNetwork(address: gw, prefixLength: addr.prefixLength)!)
            if conf.isDefaultGateway {
                let any = IPNetwork(address: IPAddress(family: addr.family, value: 0), prefixLength: 0)!
                // De-duplicated: an IPAM default route (with or without gw) is not added twice.
                if !result.routes.contains(where: { $0.dst == any }) {
                    result.routes.append(Result.Route(dst: any, gw: gw))
                }
            }
        }
        return gateways
    }

    /// Inside the container namespace: DAD sysctls, addresses, link up, routes.
    private func configureContainer(_ conf: BridgeConfig, _ result: Result, link: Link, _ nl: any RouteSocket) throws {
        let ifname = link.name
        let hasV6 = result.ips.contains { $0.address.family == .v6 }
        if hasV6 {
            try? kernel.writeSysctl("net/ipv6/conf/lo/disable_ipv6", "0")
            try? kernel.writeSysctl("net/ipv6/conf/\(ifname)/disable_ipv6", "0")
            try? kernel.writeSysctl("net/ipv6/conf/\(ifname)/keep_addr_on_down", "1")
            // DAD costs about 2 s per address; it is opt-in (enabledad), as in the reference.
            try? kernel.writeSysctl("net/ipv6/conf/\(ifname)/enhanced_dad", conf.enabledad ? "1" : "0")
            try? kernel.writeSysctl("net/ipv6/conf/\(ifname)/accept_dad", conf.enabledad ? "1" : "0")
        }
        try? kernel.writeSysctl("net/ipv4/conf/\(ifname)/arp_notify", "1")
        for ip in result.ips {
            do { try nl.addAddress(ip.address, link: link.index) } catch { if !error.isExists { throw error } }
        }
        try nl.setLink(link.index, LinkChange(up: true))
        let v6 = result.ips.filter { $0.address.family == .v6 }
        if v6.contains(where: { $0.gateway != nil }) { try settleAddresses(v6.map(\.address), link: link, nl) }
        for (i, r) in result.routes.enumerated() {
            let gw = r.gw ?? result.ips.first { $0.address.family == r.dst.family }?.gateway
            let k = try r.kernelValues(path: "routes[\(i)]")
            let route = Netlink.Route(
                destination: r.dst, gateway: gw, interface: link.index, table: k.table ?? 254,
                priority: k.priority, scope: k.scope, mtu: k.mtu, advmss: k.advmss)
            do { try nl.addRoute(route) } catch { if !error.isExists { throw error } }
        }
    }

    /// Waits until DAD has finished for `addresses` on `link`, as the reference's SettleAddresses
    /// does when there is an IPv6 gateway, so that the addresses ADD returns are usable (a tentative
    /// address cannot be bound or used as a source). Without enabledad the pod has accept_dad=0 and
    /// nothing is ever tentative: one address dump. With it, DAD takes about 1 s; checked every
    /// 10 ms for up to 5 s. An address that failed DAD (another host on the link has it) is an error.
    private func settleAddresses(_ addresses: [IPNetwork], link: Link, _ nl: any RouteSocket) throws {
        let tentative: UInt32 = 0x40, dadFailed: UInt32 = 0x08  // IFA_F_TENTATIVE, IFA_F_DADFAILED
        for _ in 0..<500 {
            let mine = try nl.interfaceAddresses(family: .v6).filter {
                $0.interface == link.index && addresses.contains($0.network)
            }
            if let failed = mine.first(where: { $0.flags & dadFailed != 0 }) {
                throw CNIError(.internal, "link \(link.name) has address \(failed.network) in DADFAILED state")
            }
            if !mine.contains(where: { $0.flags & tentative != 0 }) { return }
            usleep(10_000)
        }
        throw CNIError(.internal, "link \(link.name) still has tentative addresses after 5 seconds")
    }

    /// Puts each gateway address on the bridge. Another address of the same family on the bridge
    /// (for v6, an overlapping one) is an error unless forceAddress, which replaces it.
    private func ensureGatewayAddresses(
        _ conf: BridgeConfig, _ gateways: [IPNetwork], bridge: Link, _ nl: any RouteSocket
    ) throws {
        for gw in gateways {
            let existing = try nl.addresses(link: bridge.index, family: gw.family)
            if existing.contains(gw) { continue }
            for old in existing where gw.family == .v4 || old.overlaps(gw) {
                guard conf.forceAddress else {
                    throw CNIError(.internal, "\"\(bridge.name)\" already has an IP address different from \(gw)")
                }
                try nl.deleteAddress(old, link: bridge.index)
            }
            // EEXIST: a parallel ADD on the same network added it first.
            do { try nl.addAddress(gw, link: bridge.index) } catch { if !error.isExists { throw error } }
            let key = gw.family == .v4 ? "net/ipv4/ip_forward" : "net/ipv6/conf/all/forwarding"
            if (try? kernel.readSysctl(key)) != "1" { try kernel.writeSysctl(key, "1") }
        }
    }

    /// Polls the host end until the kernel reports it operationally up (the container end must be
    /// up first). Checks every millisecond for up to 2 s; the reference sleeps 50 ms at once.
    private func waitOperUp(_ index: Int32, _ nl: any RouteSocket) throws {
        var state: UInt8 = 0
        for i in 0..<2000 {
            guard let l = try nl.link(index: index) else { throw CNIError(.internal, "host veth disappeared") }
            if l.isOperUp { return }
            state = l.operState
            usleep(i < 100 ? 200 : 1000)
        }
        throw CNIError(.internal, "bridge port in error state: operstate \(state)")
    }
}
