// The kernel operations the overlay needs, as a protocol: `KernelDataPath` performs them over one
// netlink socket, `RecordingDataPath` (in TestSupport) keeps an in-memory kernel and records every call, so the
// objects handed to the kernel can be checked where the kernel cannot run them (no ipip module).

import Addressing
import NetNS
import Netlink
import Synchronization

/// Netlink, as the overlay uses it. Each method has the semantics of the `NetlinkSession` method
/// of the same name (and its iproute2 twin).
public protocol DataPath: AnyObject, Sendable {
    func link(named name: String) throws(NetlinkError) -> Link?
    func links() throws(NetlinkError) -> [Link]
    func addVXLAN(name: String, _ attributes: VXLANAttributes, mtu: Int?, mac: MACAddress?) throws(NetlinkError)
    func addIPIP(name: String, _ attributes: IPIPAttributes, mtu: Int?) throws(NetlinkError)
    func setLink(_ index: Int32, _ change: LinkChange) throws(NetlinkError)
    func deleteLink(_ index: Int32) throws(NetlinkError)

    func addresses(link index: Int32, family: IPFamily?) throws(NetlinkError) -> [IPNetwork]
    /// The addresses of every link, with their flags and scope (to choose among them).
    func interfaceAddresses(family: IPFamily?) throws(NetlinkError) -> [InterfaceAddress]
    func addAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError)
    func deleteAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError)

    /// Unicast routes of `family` in `table`; only those leaving through `interface` when it is set.
    func routes(family: IPFamily, table: UInt32, interface: Int32?) throws(NetlinkError) -> [Route]
    /// Blackhole routes of `family` in `table`; `routes` never lists them.
    func blackholeRoutes(family: IPFamily, table: UInt32) throws(NetlinkError) -> [Route]
    /// Adds a route of any type; `.exists` when one with its destination, table and priority is there.
    func addRoute(_ route: Route) throws(NetlinkError)
    func replaceRoute(_ route: Route) throws(NetlinkError)
    func deleteRoute(_ route: Route) throws(NetlinkError)
    /// The route the kernel would use to reach `destination` (`ip route get`).
    func lookupRoute(to destination: IPAddress) throws(NetlinkError) -> RouteLookup

    func neighbours(interface: Int32, family: IPFamily) throws(NetlinkError) -> [Neighbour]
    func replaceNeighbour(_ neighbour: Neighbour) throws(NetlinkError)
    func deleteNeighbour(_ address: IPAddress, interface: Int32) throws(NetlinkError)

    func fdbEntries(interface: Int32) throws(NetlinkError) -> [FDBEntry]
    func replaceFDB(_ entry: FDBEntry) throws(NetlinkError)
    func deleteFDB(_ entry: FDBEntry) throws(NetlinkError)

    /// Writes `/proc/sys/<key>` in the data path's network namespace, e.g.
    /// `net/ipv6/conf/flannel-v6.1/accept_ra`: what netlink cannot set.
    func writeSysctl(_ key: String, _ value: String) throws(NetNSError)
}

/// The kernel, through one NETLINK_ROUTE socket bound to the network namespace it was opened in.
/// Calls are serialised on the socket, so one data path can be shared by tasks.
public final class KernelDataPath: DataPath {
    private let session: Mutex<NetlinkSession>
    /// The namespace the socket was opened in, for what /proc/sys must write there: /proc/sys/net
    /// shows the namespace of the thread that opens a file, which may be another by the time a
    /// sysctl is written. Nil when it could not be opened: sysctls then go to the calling thread's.
    private let namespace: Mutex<NetworkNamespace?>

    /// Opens the socket in the calling thread's network namespace: inside
    /// `NetworkNamespace.run { }` to program another namespace from anywhere.
    public init() throws(NetlinkError) {
        session = Mutex(try NetlinkSession())
        namespace = Mutex(try? NetworkNamespace.current())
    }

    private func with<T: Sendable>(_ body: (NetlinkSession) throws(NetlinkError) -> T) throws(NetlinkError) -> T {
        try session.withLock { (s: inout NetlinkSession) throws(NetlinkError) -> T in try body(s) }
    }

    public func link(named name: String) throws(NetlinkError) -> Link? {
        try with { s throws(NetlinkError) in try s.link(named: name) }
    }
    public func links() throws(NetlinkError) -> [Link] { try with { s throws(NetlinkError) in try s.links() } }
    public func addVXLAN(name: String, _ attributes: VXLANAttributes, mtu: Int?, mac: MACAddress?) throws(NetlinkError)
    {
        try with { s throws(NetlinkError) in try s.addVXLAN(name: name, attributes, mtu: mtu, mac: mac) }
    }
    public func addIPIP(name: String, _ attributes: IPIPAttributes, mtu: Int?) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.addIPIP(name: name, attributes, mtu: mtu) }
    }
    public func setLink(_ index: Int32, _ change: LinkChange) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.setLink(index, change) }
    }
    public func deleteLink(_ index: Int32) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.deleteLink(index) }
    }

    public func addresses(link index: Int32, family: IPFamily?) throws(NetlinkError) -> [IPNetwork] {
        try with { s throws(NetlinkError) in try s.addresses(link: index, family: family) }
    }
    public func interfaceAddresses(family: IPFamily?) throws(NetlinkError) -> [InterfaceAddress] {
        try with { s throws(NetlinkError) in try s.interfaceAddresses(family: family) }
    }
    public func addAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.addAddress(address, link: index) }
    }
    public func deleteAddress(_ address: IPNetwork, link index: Int32) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.deleteAddress(address, link: index) }
    }

    public func routes(family: IPFamily, table: UInt32, interface: Int32?) throws(NetlinkError) -> [Route] {
        try with { s throws(NetlinkError) in try s.routes(family: family, table: table, interface: interface) }
    }
    public func blackholeRoutes(family: IPFamily, table: UInt32) throws(NetlinkError) -> [Route] {
        try with { s throws(NetlinkError) in try s.blackholeRoutes(family: family, table: table) }
    }
    public func addRoute(_ route: Route) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.addRoute(route) }
    }
    public func replaceRoute(_ route: Route) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.replaceRoute(route) }
    }
    public func deleteRoute(_ route: Route) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.deleteRoute(route) }
    }
    public func lookupRoute(to destination: IPAddress) throws(NetlinkError) -> RouteLookup {
        try with { s throws(NetlinkError) in try s.lookupRoute(to: destination) }
    }

    public func neighbours(interface: Int32, family: IPFamily) throws(NetlinkError) -> [Neighbour] {
        try with { s throws(NetlinkError) in try s.neighbours(interface: interface, family: family) }
    }
    public func replaceNeighbour(_ neighbour: Neighbour) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.replaceNeighbour(neighbour) }
    }
    public func deleteNeighbour(_ address: IPAddress, interface: Int32) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.deleteNeighbour(address, interface: interface) }
    }

    public func fdbEntries(interface: Int32) throws(NetlinkError) -> [FDBEntry] {
        try with { s throws(NetlinkError) in try s.fdbEntries(interface: interface) }
    }
    public func replaceFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.replaceFDB(entry) }
    }
    public func deleteFDB(_ entry: FDBEntry) throws(NetlinkError) {
        try with { s throws(NetlinkError) in try s.deleteFDB(entry) }
    }

    /// Writes the sysctl with the calling thread in the socket's namespace for the moment of the
    /// write (setns there and back), so that it lands where the netlink calls do.
    public func writeSysctl(_ key: String, _ value: String) throws(NetNSError) {
        try namespace.withLock { (ns: inout NetworkNamespace?) throws(NetNSError) in
            guard let ns else { return try NetNS.writeSysctl(key, value) }
            do {
                try ns.run { try NetNS.writeSysctl(key, value) }
            } catch let error as NetNSError {
                throw error
            } catch {
                throw .system(call: "write /proc/sys/\(key)", errno: 0)
            }
        }
    }
}
