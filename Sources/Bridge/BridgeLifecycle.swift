// bridge DEL, CHECK, GC and STATUS.

import Addressing
import CNI
import NetNS
import Netlink
import PluginKernel

extension Bridge {
    /// Removes the container interface (and with it the host end), the masquerade rules and the
    /// IP. Every step runs even when an earlier one failed; a namespace that is gone, an empty
    /// CNI_NETNS or a path that is not a namespace is not an error. Idempotent. The interface is
    /// detached at once and unregistered in the background (DeferredUnregister).
    public func del(_ request: Request) throws {
        let conf = try BridgeConfig(request)
        var errors: [CNIError] = []
        // The address families the attachment had, when known: the teardown of the masquerade
        // rules then reads only those (nil: both, as nothing tells).
        var families = Set((request.prevResult?.ips ?? []).map(\.address.family))
        if !request.env.netns.isEmpty {
            do {
                let netns = try kernel.namespace(path: request.env.netns)
                try netns.run {
                    let nl = try kernel.routeSocket()
                    if let l = try nl.link(named: request.env.ifname) {
                        families.formUnion(
                            try nl.addresses(link: l.index, family: nil).filter(\.address.isGlobalUnicast).map(\.family)
                        )
                        do { try kernel.deleteLinkDeferred(l, through: nl, in: netns) } catch let e as NetlinkError
                            where e.isNotFound
                        {}
                    }
                }
            } catch NetNSError.notFound, NetNSError.notANamespace {
                logStderr(
                    "bridge DEL: \(request.env.netns) is not a network namespace (any more); nothing to remove inside it"
                )
            } catch {
                errors.append(CNIError.wrap(error, "failed to delete \(request.env.ifname) in \(request.env.netns)"))
            }
        }
        if conf.ipMasq {
            do {
                try masquerade(conf).teardown(
                    network: request.name, containerID: request.env.containerID,
                    ifname: request.env.ifname, families: families.isEmpty ? nil : families)
            } catch { errors.append(CNIError.wrap(error, "failed to remove masquerade rules")) }
        }
        if let ipamType = request.ipamType {
            do { try ipam.run(ipamType, command: .del, request: request, stdin: nil) } catch { errors.append(error) }
        }
        if let first = errors.first {
            var e = first
            if errors.count > 1 { e.details = errors.dropFirst().map(\.description).joined(separator: "; ") }
            throw e
        }
    }

    /// Verifies what the reference verifies (bridge, both veth ends, addresses and routes in the
    /// container, the IPAM reservation) and, in addition, the masquerade rules.
    public func check(_ request: Request) throws {
        let conf = try BridgeConfig(request)
        let netns: any NamespaceHandle
        do { netns = try kernel.namespace(path: request.env.netns) } catch {
            throw CNIError(.invalidEnvironment, "failed to open netns \"\(request.env.netns)\": \(error)")
        }
        if let ipamType = request.ipamType { try ipam.run(ipamType, command: .check, request: request, stdin: nil) }
        guard let prev = request.prevResult else { throw CNIError(.internal, "Required prevResult missing") }
        let host = try kernel.routeSocket()
        let ifname = request.env.ifname

        guard let brIface = prev.interfaces.first(where: { $0.name == conf.bridge }),
            let br = try host.link(named: conf.bridge), br.kind == "bridge"
        else {
            throw CNIError(.internal, "bridge \(conf.bridge) from prevResult not found")
        }
        if let mac = brIface.mac, MACAddress(mac) != br.mac {
            throw CNIError(
                .internal, "bridge \(conf.bridge) MAC \(br.mac?.description ?? "-") does not match prevResult \(mac)")
        }
        if br.isPromiscuous != conf.promiscMode {
            throw CNIError(
                .internal,
                "bridge \(conf.bridge) promiscuous mode is \(br.isPromiscuous), config says \(conf.promiscMode)")
        }
        guard let cIface = prev.interfaces.first(where: { $0.name == ifname }) else {
            throw CNIError(.internal, "interface \(ifname) not in prevResult")
        }
        guard cIface.sandbox == request.env.netns else {
            throw CNIError(
                .internal,
                "Sandbox in prevResult \(cIface.sandbox ?? "") doesn't match configured netns: \(request.env.netns)")
        }
        let (cLink, addrs, routes) = try netns.run { () throws -> (Link?, [IPNetwork], [Netlink.Route]) in
            let nl = try kernel.routeSocket()
            guard let l = try nl.link(named: ifname) else { return (nil, [], []) }
            return (
                l, try nl.addresses(link: l.index, family: nil),
                try nl.routes(family: .v4, table: 254) + nl.routes(family: .v6, table: 254)
            )
        }
        guard let cLink, cLink.kind == "veth" else {
            throw CNIError(.internal, "container veth \(ifname) not found in \(request.env.netns)")
        }
        if let mac = cIface.mac, MACAddress(mac) != cLink.mac {
            throw CNIError(
                .internal, "interface \(ifname) MAC \(cLink.mac?.description ?? "-") does not match prevResult \(mac)")
        }
        let hostMatch = try prev.interfaces.contains { i in
            guard i.name != ifname, i.name != conf.bridge, let h = try host.link(named: i.name) else { return false }
            return h.kind == "veth" && h.index == cLink.parentIndex && h.master == br.index
                && (i.mac == nil || MACAddress(i.mac!) == h.mac)
        }
        guard hostMatch else { throw CNIError(.internal, "host veth of \(ifname) on bridge \(conf.bridge) not found") }
        for ip in prev.ips where ip.interface == nil || ip.interface == prev.interfaces.firstIndex(of: cIface) {
            guard addrs.contains(ip.address) else {
                throw CNIError(.internal, "Failed to match addr \(ip.address) on interface \(ifname)")
            }
        }
        for r in prev.routes {
            guard routes.contains(where: { $0.destination == r.dst.network && (r.gw == nil || $0.gateway == r.gw) })
            else {
                throw CNIError(
                    .internal,
                    "Failed to match route \(r.dst) via \(r.gw.map(\.description) ?? "-") in \(request.env.netns)")
            }
        }
        if conf.ipMasq {
            let present = try masquerade(conf).check(
                network: request.name, containerID: request.env.containerID,
                ifname: ifname, addresses: prev.ips.map(\.address))
            guard present else {
                throw CNIError(.internal, "masquerade rules for \(request.env.containerID) are missing")
            }
        }
    }

    /// Forwards GC to the IPAM plugin and removes the masquerade rules of every attachment of this
    /// network that is not in `cni.dev/valid-attachments` (both backends).
    public func gc(_ request: Request) throws {
        let conf = try BridgeConfig(request)
        var errors: [CNIError] = []
        if let valid = try request.validAttachments {
            do { try masquerade(conf).gc(network: request.name, valid: valid) } catch {
                errors.append(CNIError.wrap(error, "failed to remove stale masquerade rules"))
            }
        }
        if let ipamType = request.ipamType {
            do { try ipam.run(ipamType, command: .gc, request: request, stdin: nil) } catch { errors.append(error) }
        }
        if let e = errors.first { throw e }
    }

    /// Forwards STATUS to the IPAM plugin.
    public func status(_ request: Request) throws {
        _ = try BridgeConfig(request)
        if let ipamType = request.ipamType { try ipam.run(ipamType, command: .status, request: request, stdin: nil) }
    }
}
