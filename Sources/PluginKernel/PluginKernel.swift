// The kernel as the CNI plugins use it, as values: bridge, loopback and portmap take a
// `PluginKernel` instead of calling NetlinkSession(), NetworkNamespace(path:) and /proc/sys
// themselves, so their logic (gateway addresses, forceAddress, rollback, every spec version's
// result) runs in-process against an in-memory kernel (TestSupport's InMemoryKernel) without root.
//
// Its own small target over Netlink and NetNS rather than a part of Netlink: the seam spans both
// (a route socket is opened inside a namespace, a veth's peer goes to a namespace by its handle,
// sysctls are per namespace), and Netlink knows nothing of namespaces. The overlay daemon has its
// own, different protocol (Overlay's DataPath): it never enters a namespace.
//
// The real implementation, `SystemKernel`, adds nothing on the plugins' path: each requirement is
// the NetlinkSession, NetworkNamespace or sysctl call the plugins made before, one for one.

import Addressing
import NetNS
import Netlink

/// A NETLINK_ROUTE socket bound to the network namespace it was opened in, with the operations
/// the plugins use. Each has the semantics of the `NetlinkSession` method of the same name (and
/// its iproute2 twin, named there).
public protocol RouteSocket: AnyObject {
    func link(named name: String) throws(NetlinkError) -> Link?
    func link(index: Int32) throws(NetlinkError) -> Link?
    func links() throws(NetlinkError) -> [Link]
    func addBridge(name: String, mtu: Int?) throws(NetlinkError)
    func addVeth(name: String, peerName: String, peerNamespaceFD: Int32?, mtu: Int?, mac: MACAddress?)
        throws(NetlinkError)
    func setLink(_ index: Int32, _ change: LinkChange) throws(NetlinkError)
    func setBridgePort(_ index: Int32, hairpin: Bool?, isolated: Bool?) throws(NetlinkError)
    func deleteLink(_ index: Int32) throws(NetlinkError)

    func addresses(link index: Int32, family: IPFamily?) throws(NetlinkError) -> [IPNetwork]
    func addAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError)
    func deleteAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError)
    /// The addresses of every link with their flags (IFA_F_TENTATIVE while DAD runs).
    func interfaceAddresses(family: IPFamily?) throws(NetlinkError) -> [InterfaceAddress]

    /// Unicast routes of `family` in `table`.
    func routes(family: IPFamily, table: UInt32) throws(NetlinkError) -> [Route]
    func addRoute(_ route: Route) throws(NetlinkError)
}

/// An open handle on a network namespace, with `NetworkNamespace`'s semantics.
public protocol NamespaceHandle: AnyObject {
    /// The descriptor a veth peer is moved through (IFLA_NET_NS_FD).
    var fd: Int32 { get }
    var path: String { get }
    /// Runs `body` with the calling thread inside this namespace, then switches back. Route
    /// sockets opened and sysctls written in `body` are this namespace's.
    func run<T>(_ body: () throws -> T) throws -> T
}

/// The kernel: namespaces, route sockets and sysctls, each in the calling thread's namespace.
public protocol PluginKernel: Sendable {
    /// Opens the namespace at `path`: `NetNSError.notFound` when there is none, `.notANamespace`
    /// when the path is something else (`NetworkNamespace(path:)`).
    func namespace(path: String) throws(NetNSError) -> any NamespaceHandle
    /// The calling thread's current namespace (`NetworkNamespace.current()`).
    func currentNamespace() throws(NetNSError) -> any NamespaceHandle
    /// Opens a route socket in the calling thread's current namespace (`NetlinkSession()`).
    func routeSocket() throws(NetlinkError) -> any RouteSocket
    /// Writes `/proc/sys/<key>` in the calling thread's namespace (`writeSysctl`).
    func writeSysctl(_ key: String, _ value: String) throws(NetNSError)
    /// Reads `/proc/sys/<key>` without its trailing newline (`readSysctl`).
    func readSysctl(_ key: String) throws(NetNSError) -> String
    /// Deletes `link`, found through `socket` in `namespace`, without making the caller wait for
    /// the kernel's unregister. When this returns, the link is down, holds no address and no
    /// longer carries its name, so the name is free for a new ADD; the link itself is gone soon
    /// after (`DeferredUnregister`).
    func deleteLinkDeferred(_ link: Link, through socket: any RouteSocket, in namespace: any NamespaceHandle)
        throws(NetlinkError)
}

extension RouteSocket {
    /// For a kernel without DAD (an in-memory one): every address, permanent and never tentative.
    public func interfaceAddresses(family: IPFamily?) throws(NetlinkError) -> [InterfaceAddress] {
        var out: [InterfaceAddress] = []
        for link in try links() {
            out += try addresses(link: link.index, family: family).map {
                InterfaceAddress(network: $0, interface: link.index)
            }
        }
        return out
    }
}

extension NetlinkSession: RouteSocket {}
extension NetworkNamespace: NamespaceHandle {}

/// The running kernel.
public struct SystemKernel: PluginKernel {
    public init() {}

    public func namespace(path: String) throws(NetNSError) -> any NamespaceHandle { try NetworkNamespace(path: path) }
    public func currentNamespace() throws(NetNSError) -> any NamespaceHandle { try NetworkNamespace.current() }
    public func routeSocket() throws(NetlinkError) -> any RouteSocket { try NetlinkSession() }
    public func writeSysctl(_ key: String, _ value: String) throws(NetNSError) { try NetNS.writeSysctl(key, value) }
    public func readSysctl(_ key: String) throws(NetNSError) -> String { try NetNS.readSysctl(key) }
    public func deleteLinkDeferred(
        _ link: Link, through socket: any RouteSocket,
        in namespace: any NamespaceHandle
    ) throws(NetlinkError) {
        try DeferredUnregister.detachAndDelete(link, socket, namespaceFD: namespace.fd)
    }
}
