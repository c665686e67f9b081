// A simulated cluster for end-to-end tests of podnetd: the topology of scripts/demo.sh, made of
// network namespaces on this machine.
//
//   <id>-sw        the underlay switch: bridge br0, one veth per host, 192.168.50.0/24
//   <id>-etcd      a real etcd at 192.168.50.2, also listening on that namespace's own 127.0.0.1,
//                  which the test's etcdctl uses: cutting the etcd host off the switch
//                  (`disconnect()`) hides etcd from the daemons but not from the test
//   <id>-etcd<m>   with `etcdMembers` > 1, member m of an etcd cluster at 192.168.50.<m+1>; the
//                  members talk to each other over the switch, so a member cut off the switch
//                  (`partition(member:)`) is reachable by neither the nodes nor its peers
//   <id>-n<i>      node i at 192.168.50.<10+i>, running the built podnetd ($PODNET_BIN_DIR)
//   <id>-n<i>p<j>  pod j of node i, attached by the built flannel plugin (bridge + host-local)
//
// With `ipv6` `.dual` or `.only`, every underlay host also has fd00:50::<last byte of its IPv4
// address>/64 on eth0 (no DAD), and the network config enables IPv6 (`IPv6Network`
// fd00:10:244::/56) next to IPv4, or instead of it: pods get an address of each enabled family.
//
// With `racks = 2` the nodes are spread over two routed racks (Routers.swift has the routers):
//
//   <id>-sw        rack 1's switch, 192.168.50.0/24, as above (etcd stays at 192.168.50.2)
//   <id>-sw2       rack 2's switch, 192.168.60.0/24
//   <id>-r1, -r2   rack r's router (BIRD or FRR, AS 65000+r) at .1 on its rack, the two joined by
//                  a veth link 192.168.255.1/30 - 192.168.255.2/30, static routes between the racks
//   <id>-n<i>      node i is in rack 1 when i is odd, rack 2 when even, at 192.168.50.<10+i> or
//                  192.168.60.<10+i>, with a default route via its rack's router (etcd's namespaces
//                  too, via rack 1's): the underlay is routed statically, BGP carries the pod routes
//
// `Cluster.with(options) { cluster in ... }` always tears everything down, also when the body
// throws: it stops the daemons (SIGTERM, then SIGKILL), the routers and stand-in speakers, stops
// etcd, kills whatever still runs in the cluster's namespaces, deletes them and the cluster's
// directory. Namespaces of a test process that died without cleaning up (the pid is in the name,
// racks' included) are removed by the next cluster.
//
// Everything here is synchronous: commands run through `ip netns exec`, so the test process never
// changes namespace and no Swift task has to care which thread it runs on.

import Addressing
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public struct ClusterOptions: Sendable {
    /// flannel's `Backend.Type`: "vxlan", "host-gw" or "ipip".
    public var backend = "vxlan"
    /// flannel's `Network`.
    public var network = "10.244.0.0/16"
    /// flannel's `SubnetLen` (nil: left out, flannel's default).
    public var subnetLength: Int?
    /// Nodes started by `with` (more can be added later).
    public var nodes = 3
    /// Pods attached on every node once its daemon is ready.
    public var podsPerNode = 1
    /// `--reconcile-interval` of every daemon.
    public var reconcileInterval = 10
    /// More podnetd arguments, for every daemon.
    public var daemonArguments: [String] = []
    /// etcd serves https and requires client certificates; the daemons get the files.
    public var tls = false
    /// etcd has auth enabled; the daemons log in as this user, who may read and write the
    /// network prefix only.
    public var credentials: (user: String, password: String)?
    /// `--etcd-prefix`.
    public var prefix = "/coreos.com/network"
    /// Members of the etcd cluster (1 to 3); the daemons get every member's endpoint.
    public var etcdMembers = 1
    /// 1: one switch, as always; 2: two routed racks (see the top of this file).
    public var racks = 1
    /// The router of each rack (with `racks = 2`).
    public var routers: [RouterKind] = [.bird, .bird]
    /// The nodes' AS number; the routers peer with them as this AS.
    public var clusterAS = 64512
    /// Prefixes a rack's router also announces to its nodes (rack -> prefixes, BIRD blackhole
    /// routes exported to the nodes only), for tests of hostile routers.
    public var routerExtraRoutes: [Int: [String]] = [:]
    /// The raw JSON object used as the network config's "Backend" when set (else
    /// `{"Type":"<backend>"}`), e.g. for the bgp backend's keys.
    public var backendJSON: String?
    /// The families of the network config (the underlay is dual-stack whenever IPv6 is on).
    public var ipv6 = IPv6Mode.off
    /// flannel's `IPv6Network`, with `ipv6` on.
    public var ipv6Network = "fd00:10:244::/56"

    /// Which families the cluster's network config enables.
    public enum IPv6Mode: String, Sendable, CaseIterable {
        /// IPv4 only: `Network`.
        case off
        /// `Network` and `IPv6Network` (`EnableIPv6`).
        case dual
        /// `IPv6Network` only (`EnableIPv4` false, `EnableIPv6`).
        case only
    }

    /// The families pods get addresses of, IPv4 first.
    public var families: [IPFamily] {
        switch ipv6 {
        case .off: [.v4]
        case .dual: [.v4, .v6]
        case .only: [.v6]
        }
    }

    public init(backend: String = "vxlan", nodes: Int = 3, podsPerNode: Int = 1) {
        self.backend = backend
        self.nodes = nodes
        self.podsPerNode = podsPerNode
    }

    /// The network config as flanneld's `<prefix>/config` holds it.
    public var configJSON: String {
        let v4 = Cluster.configJSON(
            network: network, subnetLength: subnetLength, backend: backend, backendJSON: backendJSON)
        switch ipv6 {
        case .off: return v4
        case .dual: return #"{"EnableIPv6":true,"IPv6Network":"\#(ipv6Network)","# + v4.dropFirst()
        case .only:
            let backendObject = backendJSON ?? #"{"Type":"\#(backend)"}"#
            return
                #"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"\#(ipv6Network)","Backend":\#(backendObject)}"#
        }
    }
}

/// A lease as read from etcd.
public struct ClusterLease: Hashable, Sendable, CustomStringConvertible {
    /// e.g. "10.244.3.0/24" (an IPv6-only lease's: its IPv6 subnet).
    public var subnet: String
    public var publicIP: String
    public var backendType: String
    public var vtepMAC: String?
    /// The etcd key.
    public var key: String = ""
    /// The IPv6 side: subnet (e.g. "fd00:10:244:3::/64"), PublicIPv6, BackendV6Data.VtepMAC.
    public var ipv6Subnet: String?
    public var publicIPv6: String?
    public var ipv6VtepMAC: String?

    public var description: String {
        "\(subnet) at \(publicIP) (\(backendType)\(vtepMAC.map { " \($0)" } ?? ""))"
            + (ipv6Subnet.map { ", \($0) at \(publicIPv6 ?? "-")\(ipv6VtepMAC.map { " \($0)" } ?? "")" } ?? "")
    }

    /// The subnet, public IP and VTEP MAC of `family`, when the lease has that family.
    public func side(_ family: IPFamily) -> (subnet: String, publicIP: String, vtepMAC: String?)? {
        let v6Only = subnet.contains(":")
        switch family {
        case .v4: return v6Only ? nil : (subnet, publicIP, vtepMAC)
        case .v6:
            if v6Only { return publicIPv6.map { (subnet, $0, ipv6VtepMAC) } }
            guard let ipv6Subnet, let publicIPv6 else { return nil }
            return (ipv6Subnet, publicIPv6, ipv6VtepMAC)
        }
    }
}

/// The peer entries a node's kernel holds, each kind as sorted text lines (duplicates kept, so
/// that "exactly one per peer" can be checked by comparing with the expectation).
public struct KernelEntries: Equatable, Sendable, CustomStringConvertible {
    /// Main-table routes with a gateway into the overlay network: "<dst> via <gw> dev <dev>[ onlink]".
    public var routes: [String] = []
    /// IPv4 neighbours on the tunnel device: "<address> lladdr <mac> <state>".
    public var neighbours: [String] = []
    /// FDB entries of the tunnel device with a remote: "<mac> dst <address>".
    public var fdb: [String] = []

    public init(routes: [String] = [], neighbours: [String] = [], fdb: [String] = []) {
        self.routes = routes.sorted(); self.neighbours = neighbours.sorted(); self.fdb = fdb.sorted()
    }

    public var description: String {
        "routes: \(routes)\nneighbours: \(neighbours)\nfdb: \(fdb)"
    }
}

public final class Cluster: @unchecked Sendable {
    public let id: String
    public let options: ClusterOptions
    /// Holds etcd's data, the TLS files and every node's files and log.
    public let directory: String
    public let switchNamespace: TestNamespace
    public let etcd: ClusterEtcd
    public private(set) var nodes: [ClusterNode] = []
    /// The folder holding podnetd, flannel, bridge and host-local.
    public let binaries: String
    private var namespaces: [TestNamespace] = []
    /// Each rack's switch: `switchNamespace`, then `<id>-sw2` with `racks = 2`.
    public private(set) var rackSwitches: [TestNamespace] = []
    /// Each rack's router, in rack order (none with one rack).
    public private(set) var routers: [ClusterRouter] = []
    private var standIns: [StandInSpeaker] = []

    public static let underlayPrefix = "192.168.50"

    /// The first three octets of rack `rack`'s underlay /24: 192.168.50 for rack 1, 192.168.60
    /// for rack 2.
    public static func underlayPrefix(rack: Int) -> String { "192.168.\(40 + 10 * rack)" }

    // MARK: Life cycle

    /// Builds the cluster, runs `body`, and tears everything down whatever happens.
    public static func with<T>(
        _ options: ClusterOptions = ClusterOptions(),
        _ body: (Cluster) throws -> T
    ) throws -> T {
        let cluster = try Cluster(options: options)
        defer { cluster.teardown() }
        try cluster.setUp()
        return try body(cluster)
    }

    private init(options: ClusterOptions) throws {
        for tool in ["podnetd", "flannel", "bridge", "host-local"] {
            guard FileManager.default.isExecutableFile(atPath: pluginDirectory + "/" + tool) else {
                throw TestFailure("\(pluginDirectory)/\(tool) not found: run scripts/build.sh and set PODNET_BIN_DIR")
            }
        }
        for tool in ["etcd", "etcdctl"] where EtcdServer.executable(tool) == nil {
            throw TestFailure(
                "\(tool) is not installed: run scripts/deps.sh (Debian packages etcd-server, etcd-client)")
        }
        guard options.racks == 1 || (options.racks == 2 && options.routers.count == 2) else {
            throw TestFailure("racks must be 1, or 2 with one router kind per rack")
        }
        guard options.racks == 1 || options.ipv6 == .off else {
            throw TestFailure("racks are routed over IPv4 only: use one rack with ipv6")
        }
        Self.reapLeftovers()
        self.options = options
        binaries = pluginDirectory
        id = "podnet-t-c\(getpid())x\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        directory = try temporaryDirectory()
        switchNamespace = TestNamespace(name: id + "-sw")
        etcd = ClusterEtcd(
            id: id, members: max(1, min(options.etcdMembers, 3)), directory: directory + "/etcd",
            prefix: options.prefix)
    }

    private func setUp() throws {
        try addNamespace(switchNamespace)
        try switchNamespace.sh("ip link add br0 type bridge && ip link set br0 up")
        rackSwitches = [switchNamespace]
        for m in etcd.members {
            try attach(m.namespace, address: m.address, port: m.index == 1 ? "sw-etcd" : "sw-etcd\(m.index)")
        }
        if options.racks > 1 {
            try setUpRacks()
            for m in etcd.members { try m.namespace.sh("ip route add default via \(routers[0].address)") }
        }
        if options.tls {
            let tls = try makeTLSFiles(in: directory + "/tls", name: "cluster")
            etcd.tls = tls
        }
        try etcd.start()
        if let c = options.credentials { try etcd.enableAuth(user: c.user, password: c.password) }
        try etcd.put(options.prefix + "/config", options.configJSON)
        let made = try (0..<options.nodes).map { _ in try addNode(start: false) }
        for node in made { try node.start() }
        for node in made { try node.waitUntilReady() }
        for node in made {
            for _ in 0..<options.podsPerNode { try node.addPod() }
        }
    }

    /// Stops everything and deletes every namespace and file of the cluster. Safe to call twice.
    public func teardown() {
        for node in nodes { node.kill() }
        for s in standIns { s.stop() }
        standIns = []
        for r in routers { r.stop() }
        etcd.stop()
        // Whatever still runs inside (a ping, iperf3, a daemon started by hand) keeps a namespace
        // alive after `ip netns delete`: end it first.
        for ns in namespaces.reversed() { Self.killProcesses(in: ns.name) }
        for ns in namespaces.reversed() { _ = try? run(["/usr/sbin/ip", "netns", "delete", ns.name]) }
        namespaces = []
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { teardown() }

    // MARK: Topology

    /// Adds node `nodes.count + 1` on the switch; starts its daemon unless `start` is false.
    @discardableResult
    public func addNode(start: Bool = true, arguments: [String] = []) throws -> ClusterNode {
        let index = nodes.count + 1
        guard index < 240 else { throw TestFailure("too many nodes") }
        let rack = (index - 1) % options.racks + 1
        let node = ClusterNode(
            cluster: self, index: index, namespace: TestNamespace(name: "\(id)-n\(index)"),
            address: "\(Self.underlayPrefix(rack: rack)).\(10 + index)", directory: "\(directory)/n\(index)",
            arguments: arguments, rack: rack)
        try FileManager.default.createDirectory(atPath: node.directory, withIntermediateDirectories: true)
        try attach(node.namespace, address: node.address, port: "sw-n\(index)", switch: rackSwitches[rack - 1])
        nodes.append(node)
        if options.racks > 1 {
            let router = routers[rack - 1]
            try node.namespace.sh("ip route add default via \(router.address)")
            try router.addNeighbour(node.address)
        }
        if start {
            try node.start()
            try node.waitUntilReady()
        }
        return node
    }

    func addNamespace(_ ns: TestNamespace) throws {
        try sh("ip netns add \(ns.name)")
        namespaces.append(ns)
        try ns.sh("ip link set lo up")
    }

    /// Starts `argv` in `namespace` (one of the cluster's) in the background, its output appended
    /// to `log`; the tear-down ends it with everything else running in the cluster's namespaces.
    public func background(in namespace: TestNamespace, _ argv: [String], log: String) throws -> Process {
        try spawnDaemon(in: namespace, argv[0], Array(argv.dropFirst()), log: log)
    }

    /// A new namespace with `address`/24 on eth0, plugged into `switch` (rack 1's by default) as
    /// `port`.
    private func attach(_ ns: TestNamespace, address: String, port: String, switch sw: TestNamespace? = nil) throws {
        try addNamespace(ns)
        try (sw ?? switchNamespace).sh(
            "ip link add \(port) type veth peer name eth0 netns \(ns.name) && ip link set \(port) master br0 up")
        try ns.sh("ip addr add \(address)/24 dev eth0 && ip link set eth0 up")
        if options.ipv6 != .off { try ns.sh("ip addr add \(Self.underlayIPv6(address))/64 dev eth0 nodad") }
    }

    /// The IPv6 underlay address of the host at IPv4 `address`: fd00:50::<last byte>.
    public static func underlayIPv6(_ address: String) -> String {
        "fd00:50::\(address.split(separator: ".").last ?? "0")"
    }

    /// Rack 2's switch, the two routers and the link between them, and starts the routers (they
    /// learn their nodes as `addNode` adds them).
    private func setUpRacks() throws {
        let sw2 = TestNamespace(name: id + "-sw2")
        try addNamespace(sw2)
        try sw2.sh("ip link add br0 type bridge && ip link set br0 up")
        rackSwitches.append(sw2)
        for rack in 1...2 {
            let router = try ClusterRouter(
                rack: rack, kind: options.routers[rack - 1], namespace: TestNamespace(name: "\(id)-r\(rack)"),
                network: options.network, clusterAS: options.clusterAS,
                extraRoutes: options.routerExtraRoutes[rack] ?? [], directory: "\(directory)/r\(rack)")
            try attach(router.namespace, address: router.address, port: "sw-r\(rack)", switch: rackSwitches[rack - 1])
            routers.append(router)
        }
        let (r1, r2) = (routers[0], routers[1])
        // The link is made from inside r1, so the root namespace never holds either end.
        try r1.namespace.sh(
            """
            ip link add r12 type veth peer name r21 netns \(r2.namespace.name) &&
            ip addr add \(r1.linkAddress)/30 dev r12 && ip link set r12 up &&
            ip route add \(Self.underlayPrefix(rack: 2)).0/24 via \(r2.linkAddress) &&
            sysctl -qw net.ipv4.ip_forward=1
            """)
        try r2.namespace.sh(
            """
            ip addr add \(r2.linkAddress)/30 dev r21 && ip link set r21 up &&
            ip route add \(Self.underlayPrefix(rack: 1)).0/24 via \(r1.linkAddress) &&
            sysctl -qw net.ipv4.ip_forward=1
            """)
        for r in routers { try r.start() }
    }

    // MARK: Racks

    /// Rack `rack`'s router (1 or 2).
    public func router(rack: Int) throws -> ClusterRouter {
        guard (1...routers.count).contains(rack) else {
            throw TestFailure("rack \(rack) has no router (racks: \(options.racks))")
        }
        return routers[rack - 1]
    }

    /// The router's main-table routes into the pod network, "<prefix> via <gateway>", sorted.
    public func routerRoutes(rack: Int) throws -> [String] { try router(rack: rack).kernelRoutes() }

    /// The router's sessions in a few lines (`birdc show protocols`, `vtysh show bgp summary`).
    public func routerBGPState(rack: Int) throws -> String { try router(rack: rack).bgpState() }

    /// Stops rack `rack`'s router (its sessions close, its kernel routes go).
    public func stopRouter(rack: Int) throws { try router(rack: rack).stop() }

    /// Starts a stopped router again, with every node it knew.
    public func startRouter(rack: Int) throws { try router(rack: rack).start() }

    /// Stops and starts rack `rack`'s router.
    public func restartRouter(rack: Int) throws { try router(rack: rack).restart() }

    /// Every router's sessions, kernel routes and log tails, for failure messages.
    public func routersReport() -> String { routers.map { $0.report() }.joined(separator: "\n") }

    /// Starts a stand-in BGP speaker (BIRD, the cluster AS) on `node`, peering with its rack's
    /// router and announcing `prefixes`; the tear-down stops it.
    public func startStandInSpeaker(on node: ClusterNode, announcing prefixes: [String]) throws -> StandInSpeaker {
        let speaker = try StandInSpeaker(node: node, router: router(rack: node.rack), prefixes: prefixes)
        standIns.append(speaker)
        return speaker
    }

    // MARK: State

    /// Every lease in etcd.
    public func leases() throws -> [ClusterLease] {
        let out = try etcd.etcdctl("get", "--prefix", options.prefix + "/subnets/")
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var result: [ClusterLease] = []
        var i = 0
        while i + 1 < lines.count {
            let key = lines[i], value = lines[i + 1]
            i += 2
            guard let name = key.split(separator: "/").last else { continue }
            let parts = name.split(separator: "&").map { part -> String? in
                guard let dash = part.lastIndex(of: "-") else { return nil }
                return "\(part[..<dash])/\(part[part.index(after: dash)...])"
            }
            guard let first = parts.first ?? nil else { continue }
            let ipv6 = parts.count > 1 ? parts[1] : nil
            // flanneld's IPv6-only key: 0.0.0.0-0&<v6>-<len>.
            let (subnet, ipv6Subnet) = first == "0.0.0.0/0" && ipv6 != nil ? (ipv6!, nil) : (first, ipv6)
            guard let o = (try? JSONSerialization.jsonObject(with: Data(value.utf8))) as? [String: Any],
                let publicIP = o["PublicIP"] as? String
            else { continue }
            let data = o["BackendData"] as? [String: Any]
            let data6 = o["BackendV6Data"] as? [String: Any]
            result.append(
                ClusterLease(
                    subnet: subnet, publicIP: publicIP, backendType: (o["BackendType"] as? String) ?? "",
                    vtepMAC: (data?["VtepMAC"] as? String)?.lowercased(), key: key, ipv6Subnet: ipv6Subnet,
                    publicIPv6: o["PublicIPv6"] as? String, ipv6VtepMAC: (data6?["VtepMAC"] as? String)?.lowercased()))
        }
        return result
    }

    /// The entries `node` must hold for `leases` (etcd's by default): per lease of another node
    /// with this cluster's backend one route, and for vxlan one neighbour and one FDB entry.
    public func expectedEntries(
        on node: ClusterNode, leases: [ClusterLease]? = nil,
        backend: String? = nil, family: IPFamily? = nil
    ) throws -> KernelEntries {
        let backend = backend ?? options.backend
        let family = family ?? options.families[0]
        let own = try node.subnet()
        let device = family == .v4 ? "flannel.1" : "flannel-v6.1"
        var expected = KernelEntries()
        for l in try leases ?? self.leases() where l.subnet != own && l.backendType == backend {
            guard let side = l.side(family) else { continue }
            let gateway = String(side.subnet.split(separator: "/")[0])
            switch backend {
            case "vxlan":
                guard let mac = side.vtepMAC else { continue }
                expected.routes.append("\(side.subnet) via \(gateway) dev \(device) onlink")
                expected.neighbours.append("\(gateway) lladdr \(mac) PERMANENT")
                expected.fdb.append("\(mac) dst \(side.publicIP)")
            case "host-gw", "bgp":
                // bgp: on one L2 segment every node learns every other's subnet from the mesh,
                // next hop the node itself.
                expected.routes.append("\(side.subnet) via \(side.publicIP) dev eth0")
            case "ipip":
                expected.routes.append("\(l.subnet) via \(l.publicIP) dev flannel.ipip onlink")
            default:
                throw TestFailure("unknown backend \(backend)")
            }
        }
        return KernelEntries(routes: expected.routes, neighbours: expected.neighbours, fdb: expected.fdb)
    }

    // MARK: Traffic

    /// Pings every pod from every other pod (all sources at once, one ping each, retried once);
    /// returns the pairs that failed, "source -> destination", empty when the mesh is green.
    public func pingMatrixFailures(timeout: Int = 2, family: IPFamily? = nil) throws -> [String] {
        let family = family ?? options.families[0]
        let pods = try nodes.flatMap(\.pods).map { p in
            guard let a = p.address(family) else { throw TestFailure("\(p.name) has no address of \(family)") }
            return ClusterPod(name: p.name, namespace: p.namespace, address: a)
        }
        func round(_ pairs: [(ClusterPod, ClusterPod)]) throws -> [(ClusterPod, ClusterPod)] {
            let bySource = Dictionary(grouping: pairs, by: { $0.0.namespace.name })
            let failed = LockedPairs()
            let sources = Array(bySource.values)
            DispatchQueue.concurrentPerform(iterations: sources.count) { i in
                let group = sources[i]
                let script =
                    group.map { "(ping -c 1 -W \(timeout) \($0.1.address) >/dev/null 2>&1 || echo \($0.1.address)) &" }
                    .joined(separator: "\n") + "\nwait"
                let out = (try? group[0].0.namespace.sh(script)) ?? group.map(\.1.address).joined(separator: "\n")
                let bad = Set(out.split(separator: "\n").map(String.init))
                failed.append(group.filter { bad.contains($0.1.address) })
            }
            return failed.pairs
        }
        var pairs: [(ClusterPod, ClusterPod)] = []
        for a in pods { for b in pods where a.namespace.name != b.namespace.name { pairs.append((a, b)) } }
        let failed = try round(try round(pairs))
        return failed.map { "\($0.0.name) (\($0.0.address)) -> \($0.1.name) (\($0.1.address))" }.sorted()
    }

    // MARK: Helpers

    /// A network config in flanneld's schema.
    public static func configJSON(
        network: String, subnetLength: Int? = nil, backend: String, backendJSON: String? = nil
    ) -> String {
        let len = subnetLength.map { #","SubnetLen":\#($0)"# } ?? ""
        // In the default network the nodes lease from 10.244.1.0 to 10.244.199.0: the tests' fake
        // and hostile leases use 10.244.200.0 and above, and must never land on a node's own subnet
        // (a node puts its own lease back when another writer overwrites it).
        let max = network == "10.244.0.0/16" && subnetLength == nil ? #","SubnetMax":"10.244.199.0""# : ""
        let backendObject = backendJSON ?? #"{"Type":"\#(backend)"}"#
        return #"{"Network":"\#(network)"\#(len)\#(max),"Backend":\#(backendObject)}"#
    }

    /// Kills every process inside namespace `name` (all of them were started by the cluster).
    static func killProcesses(in name: String) {
        for _ in 0..<3 {
            let pids = ((try? run(["/usr/sbin/ip", "netns", "pids", name]))?.stdout ?? "")
                .split(separator: "\n").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
            if pids.isEmpty { return }
            for pid in pids { Glibc.kill(pid, SIGCONT); Glibc.kill(pid, SIGKILL) }
            usleep(100_000)
        }
    }

    /// Removes the namespaces of clusters whose test process no longer exists.
    private static func reapLeftovers() {
        let names = ((try? run(["/usr/sbin/ip", "netns", "list"]))?.stdout ?? "")
            .split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        for name in names where name.hasPrefix("podnet-t-c") {
            let rest = name.dropFirst("podnet-t-c".count)
            guard let x = rest.firstIndex(of: "x"), let owner = Int32(rest[..<x]), Glibc.kill(owner, 0) != 0,
                errno == ESRCH
            else { continue }
            killProcesses(in: name)
            _ = try? run(["/usr/sbin/ip", "netns", "delete", name])
        }
    }

    /// A CA, and server and client certificates signed by it, the server's valid for etcd's
    /// underlay addresses and 127.0.0.1.
    public func makeTLSFiles(in dir: String, name: String) throws -> EtcdTLSFiles {
        try EtcdTLSFiles.generate(in: dir, name: name, addresses: etcd.members.map(\.address))
    }
}

// MARK: - etcd

/// One etcd member, run in its own namespace with `ip netns exec`.
public final class ClusterEtcdMember: @unchecked Sendable {
    /// 1, 2, 3; member 1 is at 192.168.50.2.
    public let index: Int
    public let namespace: TestNamespace
    public let address: String
    let directory: String
    var process: Process?
    /// Cut off the switch by `partition(member:)`.
    public internal(set) var isPartitioned = false

    init(index: Int, namespace: TestNamespace, directory: String) {
        self.index = index; self.namespace = namespace; self.directory = directory
        address = "\(Cluster.underlayPrefix).\(1 + index)"
    }

    public var name: String { "m\(index)" }
    public var logFile: String { directory + "/etcd.log" }
    public var pid: Int32? { process?.processIdentifier }
    public var isRunning: Bool { process?.isRunning ?? false }
}

/// The cluster's etcd: one member (by default) or several, each in its own namespace.
public final class ClusterEtcd: @unchecked Sendable {
    /// Member 1's address.
    public static let address = "\(Cluster.underlayPrefix).2"
    public let members: [ClusterEtcdMember]
    public let directory: String
    public let prefix: String
    public internal(set) var tls: EtcdTLSFiles?
    private var rootPassword: String?

    init(id: String, members count: Int, directory: String, prefix: String) {
        members = (1...count).map { i in
            ClusterEtcdMember(
                index: i, namespace: TestNamespace(name: i == 1 ? "\(id)-etcd" : "\(id)-etcd\(i)"),
                directory: count == 1 ? directory : "\(directory)/m\(i)")
        }
        self.directory = directory; self.prefix = prefix
    }

    var scheme: String { tls == nil ? "http" : "https" }
    /// Member 1's namespace.
    public var namespace: TestNamespace { members[0].namespace }
    /// The endpoint of member 1.
    public var endpoint: String { clientURL(members[0]) }
    /// Every member's endpoint, in member order: what the daemons get.
    public var endpoints: [String] { members.map(clientURL) }
    public var logFile: String { members[0].logFile }
    public var isRunning: Bool { members.contains(where: \.isRunning) }

    public func clientURL(_ m: ClusterEtcdMember) -> String { "\(scheme)://\(m.address):2379" }
    private func peerURL(_ m: ClusterEtcdMember) -> String {
        members.count == 1 ? "http://127.0.0.1:2380" : "\(scheme)://\(m.address):2380"
    }

    /// Starts every member that is not running (same data on a restart) and waits until each
    /// answers. The members of a new cluster start together: none is healthy before a quorum runs.
    public func start() throws {
        for m in members where !m.isRunning { try launch(m) }
        for m in members { try waitUntilHealthy(m) }
    }

    /// Starts one stopped member again and waits until it answers.
    public func start(member m: ClusterEtcdMember) throws {
        guard !m.isRunning else { return }
        try launch(m)
        try waitUntilHealthy(m)
    }

    private func launch(_ m: ClusterEtcdMember) throws {
        try FileManager.default.createDirectory(atPath: m.directory, withIntermediateDirectories: true)
        let urls = "\(scheme)://127.0.0.1:2379,\(clientURL(m))"
        let cluster = members.map { "podnet-\($0.name)=\(peerURL($0))" }.joined(separator: ",")
        let name = members.count == 1 ? "podnet-cluster" : "podnet-\(m.name)"
        let initial = members.count == 1 ? "podnet-cluster=\(peerURL(m))" : cluster
        var args = [
            "--name", name, "--data-dir", m.directory + "/data", "--logger", "zap",
            "--listen-client-urls", urls, "--advertise-client-urls", clientURL(m),
            "--listen-peer-urls", peerURL(m), "--initial-advertise-peer-urls", peerURL(m),
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", namespace.name,
        ]
        if let tls {
            args += [
                "--cert-file", tls.serverCertFile, "--key-file", tls.serverKeyFile,
                "--trusted-ca-file", tls.caFile, "--client-cert-auth",
            ]
            if members.count > 1 {
                args += [
                    "--peer-cert-file", tls.serverCertFile, "--peer-key-file", tls.serverKeyFile,
                    "--peer-trusted-ca-file", tls.caFile, "--peer-client-cert-auth",
                ]
            }
        }
        m.process = try spawn(in: m.namespace, EtcdServer.executable("etcd")!, args, log: m.logFile)
    }

    private func waitUntilHealthy(_ m: ClusterEtcdMember) throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            guard m.isRunning else { break }
            if (try? etcdctl(on: m, ["endpoint", "health", "--command-timeout=1s"])) != nil { return }
            usleep(100_000)
        }
        let text = (try? String(contentsOfFile: m.logFile, encoding: .utf8)) ?? ""
        stop()
        throw TestFailure(
            "etcd \(m.name) did not become healthy; its log ends:\n"
                + text.split(separator: "\n").suffix(15).joined(separator: "\n"))
    }

    /// Stops every member (SIGTERM, SIGKILL after 10 s), keeping the data.
    public func stop() {
        for m in members { stop(member: m) }
    }

    public func stop(member m: ClusterEtcdMember) {
        guard let process = m.process else { return }
        terminate(process, grace: 10)
        m.process = nil
    }

    /// SIGKILL: the member dies at once, as in a crash; its data stays.
    public func kill(member m: ClusterEtcdMember) {
        guard let process = m.process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        m.process = nil
    }

    /// SIGSTOP: etcd keeps its connections but answers nothing until `thaw()`.
    public func freeze() throws { try signalEtcd(SIGSTOP, members[0].process) }

    /// SIGCONT.
    public func thaw() throws { try signalEtcd(SIGCONT, members[0].process) }

    /// Cuts the etcd host off the switch (its eth0 down): the daemons lose etcd, the test's
    /// etcdctl (over the namespace's loopback) does not.
    public func disconnect() throws { try partition(member: members[0]) }
    public func reconnect() throws { try heal(member: members[0]) }

    /// Cuts `member` off the switch: neither the nodes nor the other members reach it, and it
    /// reaches nobody; it keeps running. (In the member's own namespace: nothing else changes.)
    public func partition(member m: ClusterEtcdMember) throws {
        try m.namespace.sh("ip link set eth0 down")
        m.isPartitioned = true
    }

    public func heal(member m: ClusterEtcdMember) throws {
        try m.namespace.sh("ip link set eth0 up")
        m.isPartitioned = false
    }

    /// The members that run and are not partitioned: where the test's etcdctl goes.
    public var reachableMembers: [ClusterEtcdMember] {
        members.filter { $0.isRunning && (!$0.isPartitioned || members.count == 1) }
    }

    /// The current leader, as the reachable members see it, or nil during an election.
    public func leader() throws -> ClusterEtcdMember? {
        for m in reachableMembers {
            guard let status = try? memberStatus(m) else { continue }
            if status.leader != 0, status.leader == status.id { return m }
        }
        return nil
    }

    /// Makes `member` the leader (`etcdctl move-leader`) and waits until it is.
    public func moveLeader(to target: ClusterEtcdMember) throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if try leader() === target { return }
            if let current = try leader(), let id = try? memberStatus(target).id {
                _ = try? etcdctl(on: current, ["move-leader", String(id, radix: 16)])
            }
            usleep(200_000)
        }
        throw TestFailure("etcd \(target.name) did not become the leader")
    }

    /// Member ID and the leader's ID as `member` sees them.
    private func memberStatus(_ m: ClusterEtcdMember) throws -> (id: UInt64, leader: UInt64) {
        let out = try etcdctl(on: m, ["endpoint", "status", "-w", "json", "--command-timeout=2s"])
        guard let list = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [[String: Any]],
            let status = list.first?["Status"] as? [String: Any], let header = status["header"] as? [String: Any],
            let id = (header["member_id"] as? NSNumber)?.uint64Value,
            let leader = (status["leader"] as? NSNumber)?.uint64Value
        else {
            throw TestFailure("cannot read the status of \(m.name) from \(out)")
        }
        return (id, leader)
    }

    /// Runs etcdctl inside a reachable member's namespace, against its 127.0.0.1, with the TLS
    /// files and root login when set up; returns its output, throws when it fails. With several
    /// members a failure is retried for up to 15 s (a write during an election fails until a new
    /// leader is there).
    @discardableResult
    public func etcdctl(_ args: String...) throws -> String { try etcdctl(args) }

    @discardableResult
    public func etcdctl(_ args: [String]) throws -> String {
        let deadline = Date().addingTimeInterval(members.count == 1 ? 0 : 15)
        while true {
            guard let m = reachableMembers.first else { throw TestFailure("no etcd member is reachable") }
            do {
                return try etcdctl(on: m, args)
            } catch {
                if Date() >= deadline { throw error }
                usleep(200_000)
            }
        }
    }

    /// Runs etcdctl against one member.
    @discardableResult
    public func etcdctl(on m: ClusterEtcdMember, _ args: [String]) throws -> String {
        var argv = [
            "/usr/sbin/ip", "netns", "exec", m.namespace.name, EtcdServer.executable("etcdctl")!,
            "--endpoints", "\(scheme)://127.0.0.1:2379",
        ]
        if let tls { argv += ["--cacert", tls.caFile, "--cert", tls.clientCertFile, "--key", tls.clientKeyFile] }
        if let rootPassword { argv += ["--user", "root:\(rootPassword)"] }
        let r = try run(argv + args, env: ["ETCDCTL_API": "3"])
        guard r.status == 0 else {
            throw TestFailure("etcdctl \(args.joined(separator: " ")) on \(m.name) exited \(r.status): \(r.stderr)")
        }
        return r.stdout
    }

    public func put(_ key: String, _ value: String) throws { try etcdctl("put", key, value) }
    public func delete(_ key: String) throws { try etcdctl("del", key) }

    /// The key of a subnet's lease, e.g. "10.244.3.0/24" -> "<prefix>/subnets/10.244.3.0-24".
    public func leaseKey(_ subnet: String) -> String {
        prefix + "/subnets/" + subnet.replacingOccurrences(of: "/", with: "-")
    }

    /// Puts a lease for a node that does not exist (no etcd lease: a reservation), in flannel's
    /// value layout.
    public func putLease(subnet: String, publicIP: String, backend: String = "vxlan", vtepMAC: String? = nil) throws {
        let data = backend == "vxlan" ? #","BackendData":{"VNI":1,"VtepMAC":"\#(vtepMAC ?? "")"}"# : ""
        try put(leaseKey(subnet), #"{"PublicIP":"\#(publicIP)","PublicIPv6":null,"BackendType":"\#(backend)"\#(data)}"#)
    }

    /// The store's current revision.
    public func revision() throws -> Int64 {
        let out = try etcdctl("endpoint", "status", "-w", "json")
        guard let list = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [[String: Any]],
            let status = list.first?["Status"] as? [String: Any], let header = status["header"] as? [String: Any],
            let revision = (header["revision"] as? NSNumber)?.int64Value
        else {
            throw TestFailure("cannot read the revision from \(out)")
        }
        return revision
    }

    /// Turns auth on: user root (role root) and `user` with read and write access to the prefix.
    func enableAuth(user: String, password: String) throws {
        let rootPassword = "root-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        try etcdctl("user", "add", "root:\(rootPassword)")
        try etcdctl("role", "add", "root")
        try etcdctl("user", "grant-role", "root", "root")
        try etcdctl("user", "add", "\(user):\(password)")
        try etcdctl("role", "add", "podnet")
        try etcdctl("role", "grant-permission", "podnet", "--prefix=true", "readwrite", prefix + "/")
        try etcdctl("user", "grant-role", user, "podnet")
        try etcdctl("auth", "enable")
        self.rootPassword = rootPassword
    }
}

// MARK: - Nodes

/// One node: a namespace on the switch running podnetd, and its pods.
public final class ClusterNode: @unchecked Sendable {
    public unowned let cluster: Cluster
    public let index: Int
    public let namespace: TestNamespace
    /// The underlay address (the node's public IP).
    public let address: String
    public let directory: String
    /// The rack it is in: 1, or with `racks = 2`, 1 for odd and 2 for even indices.
    public let rack: Int
    /// Arguments added to this node's daemon on every start.
    public var arguments: [String]
    /// Environment variables of this node's daemon (`FLANNELD_*`, `NOTIFY_SOCKET`).
    public var environment: [String: String] = [:]
    /// Writes the command line as flanneld's units do, in Go's flag syntax: `-name=value`.
    public var goStyleCommandLine = false
    public private(set) var pods: [ClusterPod] = []
    private var process: Process?
    private var logOffset: UInt64 = 0

    init(
        cluster: Cluster, index: Int, namespace: TestNamespace, address: String, directory: String,
        arguments: [String], rack: Int = 1
    ) {
        self.cluster = cluster; self.index = index; self.namespace = namespace; self.address = address
        self.directory = directory; self.arguments = arguments; self.rack = rack
    }

    public var name: String { "n\(index)" }
    /// The IPv6 underlay address (the node's PublicIPv6) when the cluster has IPv6.
    public var ipv6Address: String? { cluster.options.ipv6 == .off ? nil : Cluster.underlayIPv6(address) }
    public var subnetFile: String { directory + "/subnet.env" }
    public var logFile: String { directory + "/podnetd.log" }
    public var pid: Int32? { process?.processIdentifier }
    public var isRunning: Bool { process?.isRunning ?? false }
    /// The daemon's exit status once it has exited, else nil.
    public var exitStatus: Int32? {
        guard let process, !process.isRunning else { return nil }
        return process.terminationStatus
    }

    /// The daemon's command line.
    public func commandLine(extra: [String] = []) -> [String] {
        let o = cluster.options
        var args = [
            cluster.binaries + "/podnetd", "--etcd-endpoints", cluster.etcd.endpoints.joined(separator: ","),
            "--etcd-prefix", o.prefix,
            "--iface", "eth0", "--subnet-file", subnetFile, "--healthz-port", "0",
            "--reconcile-interval", "\(o.reconcileInterval)",
        ]
        if let tls = cluster.etcd.tls {
            args += [
                "--etcd-cafile", tls.caFile, "--etcd-certfile", tls.clientCertFile, "--etcd-keyfile", tls.clientKeyFile,
            ]
        }
        if let c = o.credentials { args += ["--etcd-username", c.user, "--etcd-password", c.password] }
        let all = args + o.daemonArguments + arguments + extra
        return goStyleCommandLine ? Self.goStyle(all) : all
    }

    /// `--name value` as `-name=value`, `--flag` as `-flag`.
    static func goStyle(_ argv: [String]) -> [String] {
        var out = [argv[0]]
        var i = 1
        while i < argv.count {
            let name = argv[i].drop { $0 == "-" }
            if i + 1 < argv.count, !argv[i + 1].hasPrefix("--"), !argv[i].contains("=") {
                out.append("-\(name)=\(argv[i + 1])")
                i += 2
            } else {
                out.append("-\(name)")
                i += 1
            }
        }
        return out
    }

    /// Starts the daemon (its output appended to `logFile`); `extra` arguments for this start only.
    public func start(extra: [String] = []) throws {
        guard !isRunning else { throw TestFailure("\(name): podnetd is already running") }
        logOffset = (try? FileManager.default.attributesOfItem(atPath: logFile)[.size] as? UInt64) ?? 0
        let argv = commandLine(extra: extra)
        process = try spawn(in: namespace, argv[0], Array(argv.dropFirst()), log: logFile, environment: environment)
    }

    /// Waits until this start of the daemon has written the subnet file; throws with the log's
    /// end when it exits or takes longer than `timeout` seconds.
    public func waitUntilReady(timeout: Double = 15) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if currentLog.contains("subnet file written") { return }
            guard isRunning else { break }
            usleep(20_000)
        }
        throw TestFailure(
            "\(name): podnetd \(isRunning ? "is not ready after \(timeout) s" : "exited (\(exitStatus ?? -1))"); its log ends:\n\(logTail())"
        )
    }

    /// SIGTERM, then SIGKILL after `grace` seconds; returns the exit status.
    @discardableResult
    public func stop(grace: Double = 10) -> Int32? {
        guard let process else { return nil }
        terminate(process, grace: grace)
        return process.terminationStatus
    }

    /// SIGTERM and start again.
    public func restart(extra: [String] = []) throws {
        stop()
        try start(extra: extra)
        try waitUntilReady()
    }

    /// SIGKILL, for tear-down.
    func kill() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGCONT)
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGSTOP: the daemon stops without closing anything.
    public func freeze() throws {
        guard let pid, isRunning else { throw TestFailure("\(name): podnetd is not running") }
        Glibc.kill(pid, SIGSTOP)
    }

    /// SIGCONT.
    public func thaw() throws {
        guard let pid, isRunning else { throw TestFailure("\(name): podnetd is not running") }
        Glibc.kill(pid, SIGCONT)
    }

    /// Starts `argv` inside this node's namespace in the background, its output appended to
    /// `log`; the caller stops it (the cluster's tear-down kills it too).
    public func background(_ argv: [String], log: String) throws -> Process {
        try spawn(in: namespace, argv[0], Array(argv.dropFirst()), log: log)
    }

    /// Waits for the daemon to exit by itself; its status, or nil after `timeout` seconds.
    public func waitForExit(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let s = exitStatus { return s }
            usleep(50_000)
        }
        return exitStatus
    }

    /// Everything the daemon logged, over all its starts.
    public var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    /// What the daemon logged since it was last started.
    public var currentLog: String {
        guard let h = FileHandle(forReadingAtPath: logFile) else { return "" }
        defer { try? h.close() }
        try? h.seek(toOffset: logOffset)
        return String(decoding: (try? h.readToEnd()) ?? Data(), as: UTF8.self)
    }

    public func logTail(_ lines: Int = 20) -> String {
        log.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// FLANNEL_SUBNET of the subnet file as the lease's subnet ("10.244.3.0/24"); in an IPv6-only
    /// cluster, FLANNEL_IPV6_SUBNET's.
    public func subnet() throws -> String {
        if cluster.options.ipv6 == .only { return try ipv6Subnet() }
        let text = try String(contentsOfFile: subnetFile, encoding: .utf8)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("FLANNEL_SUBNET=") }) else {
            throw TestFailure("\(name): no FLANNEL_SUBNET in \(subnetFile)")
        }
        let value = line.dropFirst("FLANNEL_SUBNET=".count)
        let parts = value.split(separator: "/")
        guard parts.count == 2, let ip = IPv4(parts[0]), let len = Int(parts[1]) else {
            throw TestFailure("\(name): cannot read FLANNEL_SUBNET=\(value)")
        }
        return "\(ip.masked(len))/\(len)"
    }

    /// FLANNEL_IPV6_SUBNET of the subnet file as the lease's IPv6 subnet ("fd00:10:244:3::/64").
    public func ipv6Subnet() throws -> String {
        guard let value = try subnetEnv()["FLANNEL_IPV6_SUBNET"], let n = IPNetwork(value) else {
            throw TestFailure("\(name): no FLANNEL_IPV6_SUBNET in \(subnetFile)")
        }
        return n.network.description
    }

    /// The subnet of `family` from the subnet file.
    public func subnet(_ family: IPFamily) throws -> String {
        family == .v4 ? try subnet() : try ipv6Subnet()
    }

    /// The subnet file's `KEY=value` pairs.
    public func subnetEnv() throws -> [String: String] {
        let text = try String(contentsOfFile: subnetFile, encoding: .utf8)
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            if let eq = line.firstIndex(of: "=") { out[String(line[..<eq])] = String(line[line.index(after: eq)...]) }
        }
        return out
    }

    // MARK: Kernel

    /// The peer entries in this node's kernel: routes with a gateway into the cluster's network
    /// (any device), and the neighbours and FDB entries of `device` when it exists.
    public func kernelEntries(device: String? = nil, family: IPFamily? = nil) throws -> KernelEntries {
        let family = family ?? cluster.options.families[0]
        let device = device ?? (family == .v4 ? "flannel.1" : "flannel-v6.1")
        let networkText = family == .v4 ? cluster.options.network : cluster.options.ipv6Network
        guard let network = IPNetwork(networkText) else { throw TestFailure("not a network: \(networkText)") }
        let flag = family == .v4 ? "-4" : "-6"
        // One shell for the three reads, with `ip -n` (no mount namespace as with `ip netns
        // exec`), so that polling is quick.
        let ns = namespace.name
        let out = try sh(
            """
            ip -n \(ns) -j \(flag) route show table main; echo; echo @@
            ip -n \(ns) -j \(flag) neigh show dev \(device) 2>/dev/null || echo '[]'; echo; echo @@
            bridge -n \(ns) -j fdb show dev \(device) 2>/dev/null || echo '[]'
            """)
        let parts = out.components(separatedBy: "\n@@\n").map { text -> [[String: Any]] in
            (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [[String: Any]] ?? []
        }
        guard parts.count == 3 else {
            throw TestFailure("\(name): cannot read the kernel's entries from: \(out.prefix(300))")
        }
        var entries = KernelEntries()
        for r in parts[0] {
            guard let dst = r["dst"] as? String, let gateway = r["gateway"] as? String, let dev = r["dev"] as? String,
                let prefix = IPNetwork(dst.contains("/") ? dst : dst + (family == .v4 ? "/32" : "/128")),
                network.contains(prefix.address), prefix.prefixLength >= network.prefixLength
            else { continue }
            let onlink = (r["flags"] as? [String])?.contains("onlink") == true
            entries.routes.append("\(dst) via \(gateway) dev \(dev)\(onlink ? " onlink" : "")")
        }
        for n in parts[1] {
            let state = (n["state"] as? [String])?.joined(separator: ",") ?? "?"
            entries.neighbours.append(
                "\(n["dst"] as? String ?? "?") lladdr \((n["lladdr"] as? String ?? "-").lowercased()) \(state)")
        }
        for f in parts[2] {
            guard let dst = f["dst"] as? String, IPAddress(dst)?.family == family else { continue }
            entries.fdb.append("\((f["mac"] as? String ?? "?").lowercased()) dst \(dst)")
        }
        return KernelEntries(routes: entries.routes, neighbours: entries.neighbours, fdb: entries.fdb)
    }

    /// Starts recording this node's route and neighbour changes (see `KernelMonitor`).
    public func monitor() throws -> KernelMonitor { try KernelMonitor(self) }

    public func hasLink(_ name: String) throws -> Bool {
        try json("ip -j link show").contains { $0["ifname"] as? String == name }
    }

    /// Link names of podnet's tunnel devices (flannel.<VNI>, flannel-v6.<VNI>, flannel.ipip) on
    /// this node.
    public func tunnelDevices() throws -> [String] {
        try json("ip -j link show").compactMap { $0["ifname"] as? String }
            .filter { $0.hasPrefix("flannel.") || $0.hasPrefix("flannel-v6.") }.sorted()
    }

    /// `ip -j -d link show <name>`: the device's index, MAC and kind.
    public func link(_ name: String) throws -> (index: Int, mac: String, kind: String?) {
        guard let l = try json("ip -j -d link show \(name)").first else {
            throw TestFailure("\(name) does not exist on \(self.name)")
        }
        let kind = (l["linkinfo"] as? [String: Any])?["info_kind"] as? String
        return ((l["ifindex"] as? NSNumber)?.intValue ?? -1, (l["address"] as? String ?? "").lowercased(), kind)
    }

    /// The JSON array a command in this namespace prints.
    public func json(_ command: String) throws -> [[String: Any]] {
        let out = try namespace.sh(command)
        if out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return [] }
        guard let list = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [[String: Any]] else {
            throw TestFailure("\(name): `\(command)` printed no JSON array: \(out.prefix(300))")
        }
        return list
    }

    // MARK: Pods

    /// A pod attached through the flannel plugin (bridge + host-local delegates), as a runtime
    /// would: the plugin runs inside the node's namespace.
    @discardableResult
    public func addPod() throws -> ClusterPod {
        let j = pods.count + 1
        let ns = TestNamespace(name: "\(namespace.name)p\(j)")
        try cluster.addNamespace(ns)
        let config = #"""
            {"cniVersion":"1.0.0","name":"cbr0","type":"flannel","subnetFile":"\#(subnetFile)",
             "dataDir":"\#(directory)/flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true},
             "ipam":{"dataDir":"\#(directory)/ipam"}}
            """#
        let call = PluginCall(containerID: "\(name)-pod\(j)", netns: ns.path, path: cluster.binaries)
        let r = try runPlugin("flannel", "ADD", call, config: config, host: namespace, directory: cluster.binaries)
        guard r.status == 0, let ips = r.json["ips"] as? [[String: Any]] else {
            throw TestFailure("\(name): flannel ADD failed (\(r.status)): \(r.stdout) \(r.stderr)")
        }
        let addresses = ips.compactMap { ($0["address"] as? String).flatMap(IPNetwork.init)?.address }
        let families = cluster.options.families
        guard let primary = addresses.first(where: { $0.family == families[0] }),
            Set(addresses.map(\.family)) == Set(families)
        else {
            throw TestFailure("\(name): flannel ADD gave \(addresses), not one address of each of \(families)")
        }
        let pod = ClusterPod(
            name: "\(name)p\(j)", namespace: ns, address: primary.description,
            ipv6Address: families == [.v4, .v6] ? addresses.first { $0.family == .v6 }?.description : nil)
        pods.append(pod)
        return pod
    }
}

/// Pod pairs collected from concurrent pings.
private final class LockedPairs: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(ClusterPod, ClusterPod)] = []
    func append(_ more: [(ClusterPod, ClusterPod)]) { lock.withLock { items += more } }
    var pairs: [(ClusterPod, ClusterPod)] { lock.withLock { items } }
}

/// A node's route and neighbour changes as they happen (`ip -ts monitor route neigh`), each with
/// the time the monitor received it: "within 2 s" is timed from the kernel's own notifications,
/// not from polling, whose every round costs processes (and, on a busy machine, most of the 2 s).
public final class KernelMonitor: @unchecked Sendable {
    private let process: Process
    private let file: String

    init(_ node: ClusterNode) throws {
        file = node.directory + "/monitor-\(UInt32.random(in: 0...UInt32.max)).log"
        process = try spawn(
            in: node.namespace, "/usr/sbin/ip", ["-ts", "monitor", "route", "neigh"], log: file,
            environment: ["TZ": "UTC"])
        try waitUntilSubscribed()
    }

    /// Waits until the monitor's netlink socket has joined its multicast groups: from then on the
    /// kernel queues every route and neighbour change for it, even before it reads them.
    private func waitUntilSubscribed(timeout: Double = 10) throws {
        let pid = process.processIdentifier
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if Self.hasSubscribedNetlinkSocket(pid) { return }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        stop()
        throw TestFailure(
            "ip monitor did not subscribe to route and neighbour changes within \(timeout) s: "
                + ((try? String(contentsOfFile: file, encoding: .utf8)) ?? ""))
    }

    /// Whether process `pid` holds a NETLINK_ROUTE socket bound to multicast groups: one of its
    /// `socket:[inode]` descriptors with a non-zero Groups column in its namespace's
    /// /proc/<pid>/net/netlink (`sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`).
    static func hasSubscribedNetlinkSocket(_ pid: Int32) -> Bool {
        let descriptors = "/proc/\(pid)/fd"
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: descriptors),
            let table = try? String(contentsOfFile: "/proc/\(pid)/net/netlink", encoding: .utf8)
        else { return false }
        let inodes = Set(
            fds.compactMap { fd -> Substring? in
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: descriptors + "/" + fd),
                    target.hasPrefix("socket:["), target.hasSuffix("]")
                else { return nil }
                return target.dropFirst("socket:[".count).dropLast()
            })
        return table.split(separator: "\n").dropFirst().contains { line in
            let columns = line.split(separator: " ")
            return columns.count >= 10 && columns[1] == "0" && (UInt32(columns[3], radix: 16) ?? 0) != 0
                && inodes.contains(columns[9])
        }
    }

    /// Every event so far: "[2026-11-22T01:13:46.307364] Deleted 10.244.3.0/24 via ...".
    public func events() -> [(time: Date, line: String)] {
        let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("["), let close = line.firstIndex(of: "]"),
                let time = Self.parse(line[line.index(after: line.startIndex)..<close])
            else { return nil }
            return (time, String(line[line.index(after: close)...]).trimmingCharacters(in: .whitespaces))
        }
    }

    /// The time of the last event in `from...to` whose line contains one of `texts`.
    public func lastEvent(containing texts: [String], from: Date, to: Date = .distantFuture) -> Date? {
        events().filter { e in e.time >= from && e.time <= to && texts.contains { e.line.contains($0) } }.last?.time
    }

    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }

    /// "2026-11-22T01:13:46.307364", UTC.
    static func parse(_ text: Substring) -> Date? {
        let parts = text.split(whereSeparator: { "-T:.".contains($0) }).map { Int($0) }
        guard parts.count == 7, !parts.contains(nil) else { return nil }
        var c = DateComponents()
        (c.year, c.month, c.day, c.hour, c.minute, c.second) = (
            parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]
        )
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar.date(from: c).map { $0.addingTimeInterval(Double(parts[6]!) / 1e6) }
    }
}

/// A pod: its namespace and its eth0 address (and, in a dual-stack cluster, its IPv6 one).
public struct ClusterPod: Sendable {
    public let name: String
    public let namespace: TestNamespace
    /// Its address of the cluster's first family (IPv4, or IPv6 in an IPv6-only cluster).
    public let address: String
    /// Dual stack: its IPv6 address.
    public var ipv6Address: String?

    public init(name: String, namespace: TestNamespace, address: String, ipv6Address: String? = nil) {
        self.name = name; self.namespace = namespace; self.address = address; self.ipv6Address = ipv6Address
    }

    /// Its address of `family`, if it has one.
    public func address(_ family: IPFamily) -> String? {
        if ipv6Address != nil { return family == .v4 ? address : ipv6Address }
        return (IPAddress(address)?.family == family) ? address : nil
    }

    /// Whether one ping to `address` gets an answer within `timeout` seconds.
    public func ping(_ address: String, timeout: Int = 2) -> Bool {
        (try? namespace.sh("ping -c 1 -W \(timeout) \(address) >/dev/null")) != nil
    }

    /// Starts `ping -i <interval>` to `address` in the background; `stop()` returns its counts.
    public func startPing(_ address: String, interval: Double = 0.1) throws -> BackgroundPing {
        try BackgroundPing(from: namespace, to: address, interval: interval)
    }
}

/// A ping running in the background, stopped with SIGINT so that it prints its summary.
public final class BackgroundPing: @unchecked Sendable {
    private let process: Process
    private let output: String

    init(from ns: TestNamespace, to address: String, interval: Double) throws {
        output = try temporaryDirectory() + "/ping.out"
        process = try spawn(in: ns, "/usr/bin/ping", ["-i", "\(interval)", "-W", "1", address], log: output)
    }

    /// Stops it; returns (transmitted, received).
    public func stop() throws -> (transmitted: Int, received: Int) {
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGINT)
            process.waitUntilExit()
        }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: (output as NSString).deletingLastPathComponent)
        // "30 packets transmitted, 29 received, 3.33333% packet loss, time 2904ms"
        guard let line = text.split(separator: "\n").first(where: { $0.contains("packets transmitted") }) else {
            throw TestFailure("ping printed no summary: \(text.suffix(300))")
        }
        let numbers = line.split(separator: ",").map { $0.split(separator: " ").first.flatMap { Int($0) } ?? -1 }
        return (numbers[0], numbers.count > 1 ? numbers[1] : 0)
    }

    deinit {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }
}

// MARK: - Processes

/// Starts `executable` inside `ns` (`ip netns exec` execs it in place, so the process is the
/// program itself), stdin from /dev/null, stdout and stderr appended to `log`.
func spawn(
    in ns: TestNamespace, _ executable: String, _ args: [String], log: String,
    environment: [String: String] = [:]
) throws -> Process {
    if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    defer { try? output.close() }
    try output.seekToEnd()
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
    p.arguments = ["netns", "exec", ns.name, executable] + args
    p.environment = ["PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"].merging(environment) { $1 }
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = output
    p.standardError = output
    try p.run()
    return p
}

/// SIGTERM (after SIGCONT, for a frozen process), SIGKILL after `grace` seconds; waits for it.
func terminate(_ p: Process, grace: Double) {
    guard p.isRunning else { return }
    kill(p.processIdentifier, SIGCONT)
    kill(p.processIdentifier, SIGTERM)
    let deadline = Date().addingTimeInterval(grace)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
}

// MARK: - IPv4 arithmetic, just enough for the checks above

struct IPv4: CustomStringConvertible {
    var value: UInt32

    init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".")
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard let b = UInt8(p) else { return nil }
            v = v << 8 | UInt32(b)
        }
        value = v
    }

    init(value: UInt32) { self.value = value }

    func masked(_ length: Int) -> IPv4 {
        IPv4(value: length == 0 ? 0 : value & ~UInt32(0) << (32 - UInt32(length)))
    }

    var description: String { "\(value >> 24).\(value >> 16 & 255).\(value >> 8 & 255).\(value & 255)" }
}

public struct IPv4Prefix: Equatable, Sendable {
    var address: UInt32
    public var length: Int

    public init(_ text: String) throws {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let ip = IPv4(parts[0]), let len = Int(parts[1]), (0...32).contains(len) else {
            throw TestFailure("not an IPv4 prefix: \(text)")
        }
        address = ip.masked(len).value
        length = len
    }

    /// Whether `other` lies inside this prefix.
    public func contains(_ other: IPv4Prefix) -> Bool {
        other.length >= length && IPv4(value: other.address).masked(length).value == address
    }

    /// "a.b.c.d/len", host bits cleared.
    public var text: String { "\(IPv4(value: address))/\(length)" }

    /// Whether the two prefixes share an address.
    public func overlaps(_ other: IPv4Prefix) -> Bool { contains(other) || other.contains(self) }
}
