// The loopback plugin: brings `lo` up in the pod's namespace. containerd's CRI calls it for every
// pod sandbox. DEL is a no-op success: the namespace's lo goes away with the namespace.

import Addressing
import CNI
import Netlink
import PluginKernel

public struct Loopback: CNIPlugin {
    let kernel: any PluginKernel

    /// The kernel is a value so that tests can run the plugin against an in-memory one.
    public init(kernel: any PluginKernel = SystemKernel()) {
        self.kernel = kernel
    }

    public func add(_ request: Request) throws -> Result {
        let ifname = request.env.ifname
        let addrs = try inNamespace(request) { nl throws -> [IPNetwork] in
            guard let lo = try nl.link(named: ifname) else {
                throw CNIError(.internal, "interface \(ifname) not found in \(request.env.netns)")
            }
            if !lo.isUp { try nl.setLink(lo.index, LinkChange(up: true)) }
            return try nl.addresses(link: lo.index, family: nil)
        }
        // The reference reports lo with an all-zero MAC and its loopback addresses.
        return Result(
            interfaces: [.init(name: ifname, mac: "00:00:00:00:00:00", sandbox: request.env.netns)],
            ips: addrs.filter(\.address.isLoopback).map { .init(address: $0, interface: 0) })
    }

    public func del(_ request: Request) throws {}

    public func check(_ request: Request) throws {
        let ifname = request.env.ifname
        let up = try inNamespace(request) { nl in try nl.link(named: ifname)?.isUp ?? false }
        if !up { throw CNIError(.internal, "\(ifname) is down in \(request.env.netns)") }
    }

    public func gc(_ request: Request) throws {}
    public func status(_ request: Request) throws {}

    private func inNamespace<T>(_ request: Request, _ body: (any RouteSocket) throws -> T) throws -> T {
        let netns: any NamespaceHandle
        do { netns = try kernel.namespace(path: request.env.netns) } catch {
            throw CNIError(.invalidEnvironment, "failed to open netns \"\(request.env.netns)\": \(error)")
        }
        return try netns.run { try body(try kernel.routeSocket()) }
    }
}
