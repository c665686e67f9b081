// Real routers for the two-rack topology (`ClusterOptions.racks = 2`): one namespace per rack,
// running BIRD 2 or FRR (zebra + bgpd), between the rack's switch and a point-to-point link to the
// other rack's router.
//
//   <id>-r<r>   router of rack r: eth0 = 192.168.<40+10r>.1/24 on the rack's switch, r12 / r21 =
//               192.168.255.<r>/30 on the link between the routers; ip_forward on; a static route
//               to the other rack's underlay prefix via the link, so the underlay (etcd, node to
//               node) never depends on BGP
//
// Each router has AS 65000+r and speaks eBGP with the other router and with every node of its
// rack (explicit neighbours, remote AS = the cluster AS; the router connects out and listens, as
// the node does). What it does with routes:
//   - from nodes: everything is imported; BGP routes are installed in the router's own main table
//     (BIRD: `protocol kernel`, `proto bird`; FRR: through zebra, `proto bgp`, with `nhid`);
//   - to the other router and to the nodes: only BGP routes inside the pod network (never the
//     router's connected or static underlay routes);
//   - to the nodes, AS override: every node has the same AS, so a route from the other rack (or
//     from a neighbour in the same rack) carries the cluster AS in its AS_PATH and a standard
//     speaker would drop it as a loop. BIRD deletes the cluster AS from `bgp_path` in its export
//     filter to the nodes (its own AS is prepended afterwards); FRR replaces it with its own AS
//     (`neighbor X as-override`). FRR also echoes a node's own route back to it (AS_PATH
//     `65002 65002` after the override): the node's speaker must ignore its own subnet.
//   - graceful restart: helper on the node sessions (BIRD `graceful restart on`, FRR
//     `bgp graceful-restart`), hold time 9 s toward nodes, BGP defaults (BIRD 240, FRR 180)
//     between the routers. Connect retry and error wait are 1 s, so sessions come back quickly.
//
// A node added to the cluster while its router runs is added to the router's configuration at
// once (BIRD: the file is rewritten and `birdc configure` reloads it without touching running
// sessions; FRR: `vtysh` adds the neighbour and the file is rewritten for the next start).
//
// BIRD runs as `bird -f` with its own control socket; FRR's zebra and bgpd run without watchfrr,
// each with its own pid file, zserv socket and vty directory (`-i`, `-z`, `--vty_socket`, `-P 0`),
// in a directory owned by user frr, which both drop to. Every file, log included, is in the
// cluster's directory (`<dir>/r<r>`).

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The routing daemon of a rack's router.
public enum RouterKind: String, Sendable, CaseIterable, CustomStringConvertible {
    /// BIRD 2 (Debian `bird2`).
    case bird
    /// FRR's zebra and bgpd (Debian `frr`), without watchfrr.
    case frr

    /// Whether the daemon's executables are installed (scripts/deps.sh installs both).
    public var isInstalled: Bool {
        switch self {
        case .bird: ["/usr/sbin/bird", "/usr/sbin/birdc"].allSatisfy(FileManager.default.isExecutableFile)
        case .frr:
            ["/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "/usr/bin/vtysh"].allSatisfy(
                FileManager.default.isExecutableFile) && getpwnam("frr") != nil
        }
    }

    public var description: String { rawValue }
}

/// The router of one rack.
public final class ClusterRouter: @unchecked Sendable {
    /// 1 or 2.
    public let rack: Int
    public let kind: RouterKind
    public let namespace: TestNamespace
    /// Its address on the rack's switch, the nodes' default gateway: 192.168.50.1, 192.168.60.1.
    public let address: String
    /// Its end of the link between the routers: 192.168.255.<rack>.
    public let linkAddress: String
    /// The other router's end of the link.
    public let peerLinkAddress: String
    /// 65000 + rack.
    public let asNumber: Int
    /// The other router's AS.
    public let peerASNumber: Int
    /// The nodes' AS.
    public let clusterAS: Int
    /// The pod network: what the routers pass on and what `kernelRoutes()` lists.
    public let network: String
    /// Prefixes announced to the nodes only, as blackhole routes (BIRD).
    public let extraRoutes: [String]
    /// Holds the configuration, sockets, pid files and logs.
    public let directory: String
    /// The node addresses it peers with.
    public private(set) var neighbours: [String] = []
    private var bird: BIRDProcess?
    private var zebra: Process?
    private var bgpd: Process?

    init(
        rack: Int, kind: RouterKind, namespace: TestNamespace, network: String, clusterAS: Int,
        extraRoutes: [String], directory: String
    ) throws {
        guard rack == 1 || rack == 2 else { throw TestFailure("racks are 1 and 2, not \(rack)") }
        guard kind.isInstalled else {
            throw TestFailure("\(kind) is not installed: run scripts/deps.sh (Debian packages bird2, frr)")
        }
        if kind == .frr && !extraRoutes.isEmpty {
            throw TestFailure("routerExtraRoutes are implemented for BIRD routers only (rack \(rack) runs FRR)")
        }
        self.rack = rack; self.kind = kind; self.namespace = namespace; self.network = network
        self.clusterAS = clusterAS; self.extraRoutes = extraRoutes; self.directory = directory
        address = Cluster.underlayPrefix(rack: rack) + ".1"
        linkAddress = "192.168.255.\(rack)"
        peerLinkAddress = "192.168.255.\(3 - rack)"
        asNumber = 65000 + rack
        peerASNumber = 65000 + 3 - rack
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if kind == .frr {
            // zebra and bgpd drop to user frr: they create their pid files, sockets and logs here.
            try sh("chown frr:frr '\(directory)'")
        }
    }

    public var name: String { "r\(rack)" }

    public var isRunning: Bool {
        switch kind {
        case .bird: bird?.isRunning ?? false
        case .frr: (zebra?.isRunning ?? false) && (bgpd?.isRunning ?? false)
        }
    }

    // MARK: Life cycle

    /// Starts the daemon(s) and waits until they answer on their control sockets.
    public func start() throws {
        guard !isRunning else { return }
        switch kind {
        case .bird:
            let b = BIRDProcess(namespace: namespace, directory: directory)
            try b.start(config: birdConfig())
            bird = b
        case .frr:
            try startFRR()
        }
    }

    /// Stops the daemon(s): SIGTERM, SIGKILL after `grace` seconds. BIRD and zebra remove the
    /// routes they installed; the nodes see their sessions close.
    public func stop(grace: Double = 5) {
        bird?.stop(grace: grace)
        if let bgpd { terminate(bgpd, grace: grace) }
        if let zebra { terminate(zebra, grace: grace) }
        bgpd = nil; zebra = nil
    }

    /// Stops and starts again with the same configuration.
    public func restart() throws {
        stop()
        try start()
    }

    /// Peers with the node at `address` (remote AS = the cluster AS); a running router takes it
    /// into its configuration at once.
    func addNeighbour(_ address: String) throws {
        guard !neighbours.contains(address) else { return }
        neighbours.append(address)
        guard isRunning else { return }
        switch kind {
        case .bird:
            try bird?.reconfigure(birdConfig())
        case .frr:
            try writeFile(directory + "/bgpd.conf", bgpdConfig())
            try vtysh(
                ["configure terminal", "router bgp \(asNumber)", "neighbor \(address) peer-group NODES"], daemon: "bgpd"
            )
        }
    }

    // MARK: State

    /// The main table's routes into the pod network, as "<prefix> via <gateway>", sorted
    /// (read with `ip -j route`, the same for BIRD and FRR).
    public func kernelRoutes() throws -> [String] {
        let pods = try IPv4Prefix(network)
        let out = try sh("ip -n \(namespace.name) -j -4 route show table main")
        guard let list = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [[String: Any]] else {
            throw TestFailure("\(name): `ip -j route` printed no JSON array: \(out.prefix(300))")
        }
        return list.compactMap { r -> String? in
            guard let dst = r["dst"] as? String, let prefix = try? IPv4Prefix(dst.contains("/") ? dst : dst + "/32"),
                pods.contains(prefix)
            else { return nil }
            return "\(dst) via \(r["gateway"] as? String ?? r["type"] as? String ?? "?")"
        }.sorted()
    }

    /// Whether the session with the node at `address` is established.
    public func isEstablished(with address: String) -> Bool {
        switch kind {
        case .bird:
            guard let i = neighbours.firstIndex(of: address) else { return false }
            return ((try? bird?.birdc("show protocols node\(i + 1)")) ?? "").contains("Established")
        case .frr:
            // {"192.168.60.12":{"remoteAs":64512,...,"bgpState":"Established",...}}
            let out = (try? vtysh(["show bgp neighbors \(address) json"], daemon: "bgpd")) ?? ""
            let o = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [String: Any]
            return (o?[address] as? [String: Any])?["bgpState"] as? String == "Established"
        }
    }

    /// The sessions, in a few lines: `birdc show protocols` or `vtysh show bgp summary`.
    public func bgpState() -> String {
        switch kind {
        case .bird:
            return (try? bird?.birdc("show protocols")) ?? "(BIRD does not answer)"
        case .frr:
            return (try? vtysh(["show bgp summary"], daemon: "bgpd")) ?? "(bgpd does not answer)"
        }
    }

    /// The end of the daemons' logs.
    public func logTail(_ lines: Int = 20) -> String {
        let files =
            kind == .bird
            ? [directory + "/bird.log", directory + "/bird.out"]
            : [directory + "/zebra.log", directory + "/bgpd.log", directory + "/frr.out"]
        return files.map { f in
            let text = (try? String(contentsOfFile: f, encoding: .utf8)) ?? ""
            return "--- \(f):\n" + text.split(separator: "\n").suffix(lines).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// State, kernel routes and log tails, for failure messages.
    public func report() -> String {
        """
        router \(name) (\(kind), AS \(asNumber)) sessions:
        \(bgpState())
        kernel routes: \((try? kernelRoutes())?.description ?? "?")
        \(logTail())
        """
    }

    // MARK: BIRD

    /// BIRD's configuration; the node sessions share a template.
    func birdConfig() throws -> String {
        let podSet = "[ \(try IPv4Prefix(network).text)+ ]"
        let extras =
            extraRoutes.isEmpty
            ? ""
            : "protocol static extra {\n  ipv4;\n" + extraRoutes.map { "  route \($0) blackhole;\n" }.joined() + "}\n"
        let nodes = neighbours.enumerated().map { i, a in
            "protocol bgp node\(i + 1) from nodes { neighbor \(a) as \(clusterAS); }\n"
        }.joined()
        return """
            log "\(directory)/bird.log" all;
            router id \(linkAddress);
            protocol device { scan time 10; }
            # BGP routes into this namespace's main table.
            protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
            \(extras)
            # To the nodes: pod routes with the cluster AS taken out of the path (AS override), and
            # the extra routes of a test; never the connected or static underlay routes.
            filter to_nodes {
              if proto = "extra" then accept;
              if source != RTS_BGP then reject;
              if net !~ \(podSet) then reject;
              bgp_path.delete(\(clusterAS));
              accept;
            }
            template bgp nodes {
              local \(address) as \(asNumber);
              hold time 9;
              graceful restart on;
              connect delay time 1; connect retry time 1; error wait time 1, 5;
              ipv4 { import all; export filter to_nodes; };
            }
            protocol bgp rack\(3 - rack) {
              local \(linkAddress) as \(asNumber);
              neighbor \(peerLinkAddress) as \(peerASNumber);
              connect delay time 1; connect retry time 1; error wait time 1, 5;
              ipv4 { import all; export where source = RTS_BGP && net ~ \(podSet); };
            }
            \(nodes)
            """
    }

    // MARK: FRR

    private func startFRR() throws {
        try writeFile(directory + "/zebra.conf", "hostname \(name)\nlog file \(directory)/zebra.log informational\n")
        try writeFile(directory + "/bgpd.conf", bgpdConfig())
        let common = ["-z", directory + "/zserv.api", "--vty_socket", directory, "-A", "127.0.0.1", "-P", "0"]
        let log = directory + "/frr.out"
        zebra = try spawnDaemon(
            in: namespace, "/usr/lib/frr/zebra",
            ["-f", directory + "/zebra.conf", "-i", directory + "/zebra.pid"] + common, log: log)
        try waitForFRR("zebra", command: "show version")
        bgpd = try spawnDaemon(
            in: namespace, "/usr/lib/frr/bgpd",
            ["-f", directory + "/bgpd.conf", "-i", directory + "/bgpd.pid"] + common, log: log)
        try waitForFRR("bgpd", command: "show bgp summary")
    }

    private func waitForFRR(_ daemon: String, command: String) throws {
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if (try? vtysh([command], daemon: daemon)) != nil { return }
            guard (daemon == "zebra" ? zebra : bgpd)?.isRunning == true else { break }
            usleep(50_000)
        }
        let tail = logTail()
        stop()
        throw TestFailure("\(name): FRR's \(daemon) did not answer within 15 s\n\(tail)")
    }

    /// Runs vtysh commands against this router's daemons (one `-c` each); returns the output.
    @discardableResult
    func vtysh(_ commands: [String], daemon: String) throws -> String {
        let r = try run(
            ["/usr/bin/vtysh", "--vty_socket", directory, "-d", daemon] + commands.flatMap { ["-c", $0] })
        guard r.status == 0 else {
            throw TestFailure("vtysh \(commands) on \(name) exited \(r.status): \(r.stdout) \(r.stderr)")
        }
        return r.stdout
    }

    /// bgpd's configuration: node neighbours in peer group NODES (as-override, pod routes out,
    /// everything in); the other router with pod routes out.
    func bgpdConfig() -> String {
        let nodes = neighbours.map { " neighbor \($0) peer-group NODES\n" }.joined()
        let peer = peerLinkAddress
        let pods = (try? IPv4Prefix(network).text) ?? network
        return """
            frr defaults traditional
            hostname \(name)
            log file \(directory)/bgpd.log informational
            !
            ip prefix-list PODS seq 5 permit \(pods) le 32
            route-map PODS permit 10
             match ip address prefix-list PODS
            exit
            route-map ALL permit 10
            exit
            !
            router bgp \(asNumber)
             bgp router-id \(linkAddress)
             no bgp ebgp-requires-policy
             bgp graceful-restart
             neighbor NODES peer-group
             neighbor NODES remote-as \(clusterAS)
             neighbor NODES update-source \(address)
             neighbor NODES timers 3 9
             neighbor NODES timers connect 1
             neighbor NODES advertisement-interval 0
            \(nodes) neighbor \(peer) remote-as \(peerASNumber)
             neighbor \(peer) timers connect 1
             neighbor \(peer) advertisement-interval 0
             !
             address-family ipv4 unicast
              neighbor NODES as-override
              neighbor NODES route-map ALL in
              neighbor NODES route-map PODS out
              neighbor \(peer) route-map ALL in
              neighbor \(peer) route-map PODS out
             exit-address-family
            exit
            !

            """
    }
}

// MARK: - BIRD processes

/// One `bird -f` in a namespace, with its control socket, pid file and log in `directory`.
final class BIRDProcess: @unchecked Sendable {
    let namespace: TestNamespace
    let directory: String
    private var process: Process?

    init(namespace: TestNamespace, directory: String) {
        self.namespace = namespace; self.directory = directory
    }

    var configFile: String { directory + "/bird.conf" }
    var socket: String { directory + "/bird.ctl" }
    var isRunning: Bool { process?.isRunning ?? false }

    /// Checks the configuration (`bird -p`), starts BIRD and waits until it answers.
    func start(config: String) throws {
        try writeFile(configFile, config)
        let check = try run(["/usr/sbin/bird", "-p", "-c", configFile])
        guard check.status == 0 else { throw TestFailure("BIRD refuses \(configFile): \(check.stderr)") }
        process = try spawnDaemon(
            in: namespace, "/usr/sbin/bird",
            ["-f", "-c", configFile, "-s", socket, "-P", directory + "/bird.pid"], log: directory + "/bird.out")
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if (try? birdc("show status")) != nil { return }
            guard isRunning else { break }
            usleep(50_000)
        }
        let out = (try? String(contentsOfFile: directory + "/bird.out", encoding: .utf8)) ?? ""
        stop(grace: 1)
        throw TestFailure("BIRD in \(namespace.name) did not answer within 15 s: \(out.suffix(500))")
    }

    /// Rewrites the configuration and reloads it (`birdc configure`): new protocols start,
    /// unchanged ones keep their sessions.
    func reconfigure(_ config: String) throws {
        try writeFile(configFile, config)
        let out = try birdc("configure")
        guard out.contains("Reconfigured") || out.contains("Reconfiguration in progress") else {
            throw TestFailure("birdc configure in \(namespace.name): \(out)")
        }
    }

    /// Runs one birdc command; its output.
    @discardableResult
    func birdc(_ command: String) throws -> String {
        let r = try run(["/usr/sbin/birdc", "-s", socket] + command.split(separator: " ").map(String.init))
        guard r.status == 0, !r.stdout.contains("Unable to connect") else {
            throw TestFailure("birdc \(command) in \(namespace.name) exited \(r.status): \(r.stdout) \(r.stderr)")
        }
        return r.stdout
    }

    func stop(grace: Double) {
        if let process { terminate(process, grace: grace) }
        process = nil
    }

    func kill() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }
}

// MARK: - A stand-in node speaker

/// A BIRD instance in a node's namespace standing in for podnetd's BGP backend: AS = the
/// cluster AS, one eBGP session to the rack's router, announcing `prefixes` as blackhole routes
/// and installing what it learns in the node's main table (`proto bird`), with standard loop
/// detection, graceful restart on (restart time 120 s, BIRD's default). The cluster's tear-down
/// stops it.
public final class StandInSpeaker: @unchecked Sendable {
    public let node: ClusterNode
    public let prefixes: [String]
    private let bird: BIRDProcess
    private let config: String

    init(node: ClusterNode, router: ClusterRouter, prefixes: [String]) throws {
        self.node = node; self.prefixes = prefixes
        let dir = node.directory + "/bird"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        bird = BIRDProcess(namespace: node.namespace, directory: dir)
        let routes = prefixes.map { "  route \($0) blackhole;\n" }.joined()
        config = """
            log "\(dir)/bird.log" all;
            router id \(node.address);
            protocol device { scan time 10; }
            protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
            protocol static announced {
              ipv4;
            \(routes)}
            protocol bgp uplink {
              local \(node.address) as \(node.cluster.options.clusterAS);
              neighbor \(router.address) as \(router.asNumber);
              hold time 9;
              graceful restart on;
              connect delay time 1; connect retry time 1; error wait time 1, 5;
              ipv4 { import all; export where proto = "announced"; };
            }

            """
        try start()
    }

    /// Starts BIRD (again) and waits until it answers.
    public func start() throws {
        guard !bird.isRunning else { return }
        try bird.start(config: config)
    }

    /// SIGKILL, as in a crash: no NOTIFICATION, the kernel closes the TCP session, the node's
    /// kernel routes stay.
    public func kill() { bird.kill() }

    /// `birdc show route all <prefix>`: "*" after the protocol name marks the best route.
    public func route(_ prefix: String) throws -> String { try bird.birdc("show route all \(prefix)") }

    /// Whether BIRD holds a best (usable) BGP route for `prefix`.
    public func hasBestRoute(_ prefix: String) -> Bool {
        ((try? route(prefix)) ?? "").split(separator: "\n").contains { $0.contains("[uplink") && $0.contains("] *") }
    }

    public func state() -> String { (try? bird.birdc("show protocols all uplink")) ?? "(BIRD does not answer)" }

    public func stop() { bird.stop(grace: 5) }

    public var isRunning: Bool { bird.isRunning }
}

/// `spawn`, with SIGTERM, SIGINT and SIGHUP unblocked in the child. The test's threads block
/// them (SigBlk in /proc/<pid>/status), posix_spawn copies the calling thread's mask and exec keeps
/// it, and BIRD and FRR never unblock them: they would ignore SIGTERM and `terminate` would wait
/// its whole grace time and SIGKILL them (no Cease NOTIFICATION, kernel routes left behind).
func spawnDaemon(in ns: TestNamespace, _ executable: String, _ args: [String], log: String) throws -> Process {
    var signals = sigset_t()
    var saved = sigset_t()
    sigemptyset(&signals)
    for s in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, s) }
    pthread_sigmask(SIG_UNBLOCK, &signals, &saved)
    defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
    return try spawn(in: ns, executable, args, log: log)
}

/// Writes a text file in full.
func writeFile(_ path: String, _ text: String) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
}
