// The node agent's start-up, as flanneld's (main.go): pick the interface, wait for a network
// config that is valid (also on this node), register the backend (its tunnel device), acquire
// the subnet lease, program the peers, install the traffic rules (removing the other netfilter
// backend's first) and the blackhole route, write subnet.env, then hand back the services that
// keep all this true: the lease keeper, the peer watcher, the repairer, the rule resync (and, for
// the bgp backend, `BGPRouting`, its speaker).
// The caller (podnetd) starts the health server before this and runs the services in a
// ServiceGroup; stopping them leaves the data path and the lease in place, so pods keep talking
// while the daemon restarts.
//
// Everything the agent touches comes in as a value: the lease registry (etcd in podnetd, in
// memory in tests), the data path (netlink, or the fake kernel), the traffic rules, the clock
// its services wait on. Kernel and netfilter calls run on `BlockingThreads`.

import Addressing
import FoundationEssentials
import Logging
import Metrics
import Overlay
import ServiceLifecycle

public struct NodeAgent: Sendable {
    public struct Options: Sendable {
        /// Interfaces to use, by name or IPv4 address: the first that exists with a usable IPv4
        /// address wins.
        public var interfaces: [String] = []
        /// Regular expressions (unanchored, as Go's MatchString) over interface addresses, then
        /// names, one regex after the other, checked after `interfaces`.
        public var interfaceRegexes: [String] = []
        /// The interface the kernel would send to this address through (`--iface-can-reach`,
        /// `ip route get`), checked after `interfaceRegexes`.
        public var interfaceCanReach: IPAddress?
        /// The address to advertise to peers (default: the interface's).
        public var publicIP: IPAddress?
        /// The IPv6 address to advertise to peers when the config enables IPv6 (default: the
        /// interface's global IPv6 address).
        public var publicIPv6: IPAddress?
        public var subnetFile = "/run/flannel/subnet.env"
        /// How long before the lease expires it is renewed.
        public var renewMargin: Duration = .seconds(3600)
        /// What FLANNEL_IPMASQ says (the rules themselves are the `rules` the agent is given).
        public var ipMasq = false
        /// Time between two repairs.
        public var reconcileInterval: Duration = .seconds(10)
        /// Time between two checks of the traffic rules and the blackhole route (--iptables-resync).
        public var resyncInterval: Duration = .seconds(5)
        /// Whether a blackhole route for the node's own subnet is kept (--ip-blackhole-route).
        public var blackholeRoute = false
        /// Exit (the lease keeper fails with `LeaseLost`) when this node's lease is deleted,
        /// instead of acquiring it again.
        public var exitOnLeaseLoss = false

        public init() {}
    }

    public var options: Options
    public let registry: any LeaseRegistry
    public let dataPath: any DataPath
    public let threads: BlockingThreads
    /// Marked ready once subnet.env is written (/readyz).
    public let readiness: Readiness
    /// What the services and the wait for a config sleep on: `ContinuousClock()` but in tests.
    public let clock: any Clock<Duration>
    /// The traffic rules (masquerade, forward) for the network config and this node's lease (its
    /// subnet of each family); the config says which netfilter backend (`EnableNFTables`).
    public let rules: @Sendable (_ config: NetworkConfig, _ lease: Lease) -> any RuleKeeper
    public let logger: Logger

    public init(
        options: Options, registry: any LeaseRegistry, dataPath: any DataPath, threads: BlockingThreads,
        readiness: Readiness, clock: any Clock<Duration>,
        rules: @escaping @Sendable (_ config: NetworkConfig, _ lease: Lease) -> any RuleKeeper, logger: Logger
    ) {
        self.options = options; self.registry = registry; self.dataPath = dataPath; self.threads = threads
        self.readiness = readiness; self.clock = clock; self.rules = rules; self.logger = logger
    }

    /// Starts the node (see the file's note) and returns the services to run.
    public func start() async throws -> [any Service] {
        // The config first: its families say which addresses the interface must have; then the
        // config is checked against the node's addresses before use.
        let (config, interface) = try await waitForConfig()
        let nodeAddresses = interface.nodeAddresses
        let backend = try config.makeBackend(interface: interface)
        let dataPath = self.dataPath
        // The leases are listed while the device is made: the lease value needs the device's
        // MAC, the listing does not.
        async let listing = registry.leases()
        let network = try await threads.kernel {
            try backend.registerNetwork(dataPath: dataPath, logger: Logger(label: "podnet.overlay"))
        }

        let manager = SubnetManager(registry: registry, logger: logger)
        // The listing the lease was chosen from gives the peers: no second listing of every lease.
        let (lease, snapshot) = try await manager.acquireWithSnapshot(
            config: config, attributes: network.leaseAttributes,
            previous: SubnetFile.previousKey(at: options.subnetFile), listing: try await listing)
        try await threads.kernel { try network.start(subnet: lease.subnet, ipv6Subnet: lease.ipv6Subnet) }
        let state = NodeState(lease: lease, config: config, nodeAddresses: nodeAddresses)
        let peers = await state.replacePeers(snapshot.leases, logger: logger)
        let report = try await threads.kernel { try network.reconcile(peers: peers) }
        logger.info(
            "programmed the peers",
            metadata: [
                "overlay.peers": "\(peers.count)",
                "overlay.changes": "\(report.programmed.total + report.removed.total)",
            ])

        // As flanneld: the other backend's rules go first, so a node can switch either way.
        let rules = self.rules(config, lease)
        do {
            if try await threads.netfilter({ try rules.removeLeftovers() }) {
                logger.info("removed the traffic rules of the other netfilter backend")
            }
        } catch {
            logger.warning("could not remove the traffic rules of the other netfilter backend: \(error)")
        }
        _ = try await rules.ensure(on: threads, for: state, logger: logger)
        var blackhole: (@Sendable () throws -> Bool)?
        if options.blackholeRoute {
            let routes = [lease.subnet, lease.ipv6Subnet].compactMap { $0 }.map {
                BlackholeRoute(subnet: $0, dataPath: dataPath)
            }
            // Both run: `||` would skip the second once the first added its route.
            blackhole = { try routes.map { try $0.ensure() }.contains(true) }
        }
        if let blackhole, try await threads.kernel(blackhole) {
            logger.info("added the blackhole route", metadata: ["node.subnet": "\(lease.key)"])
        }
        try SubnetFile.write(
            SubnetFile.render(config: config, lease: lease, mtu: network.mtu, ipMasq: options.ipMasq),
            to: options.subnetFile)
        readiness.markReady()
        logger.info(
            "subnet file written",
            metadata: ["node.subnet": "\(lease.key)", "node.subnet_file": "\(options.subnetFile)"])

        let keeperEvents = AsyncStream<KeeperEvent>.makeStream()
        var routing: [any Service] = []
        if let bgp = network as? BGPNetwork {
            routing.append(
                BGPRouting(
                    network: bgp, subnetLength: config.subnetLength, nodeAddresses: nodeAddresses, threads: threads,
                    clock: clock, logger: logger))
        }
        return routing + [
            LeaseKeeper(
                manager: manager, config: config, network: network, state: state, subnetFile: options.subnetFile,
                renewMargin: options.renewMargin, ipMasq: options.ipMasq, exitOnLoss: options.exitOnLeaseLoss,
                events: keeperEvents, threads: threads, clock: clock, logger: logger),
            PeerWatcher(
                registry: registry, network: network, state: state, startRevision: snapshot.revision,
                leaseLost: keeperEvents.continuation, threads: threads, clock: clock, logger: logger),
            Repairer(
                network: network, state: state, keeper: keeperEvents.continuation,
                interval: options.reconcileInterval, threads: threads, clock: clock, logger: logger),
            RuleResync(
                rules: rules, blackhole: blackhole, state: state, interval: options.resyncInterval, threads: threads,
                clock: clock, logger: logger),
        ]
    }

    /// Reads the network config every second until it exists and is valid, also on this node: the
    /// interface the options choose has an address of each family it enables (else start-up fails:
    /// `NoInterface`), and no subnet it could lease holds one of the node's addresses. An invalid
    /// config is reported (once per change, and counted in `podnet_config_errors_total`) and waited
    /// out too: nothing is written meanwhile.
    public func waitForConfig() async throws -> (NetworkConfig, ExternalInterface) {
        var lastProblem = ""
        let configValid = Gauge(label: "podnet_config_valid")
        var chosen: (families: [IPFamily], interface: ExternalInterface)?
        while true {
            var config: NetworkConfig?
            do {
                if let data = try await registry.config() {
                    config = try NetworkConfig(json: data)
                } else {
                    if lastProblem != "missing" {
                        logger.info("waiting for the network config at \(registry.configKey)")
                    }
                    lastProblem = "missing"
                }
            } catch let e as ConfigError {
                report(e, &lastProblem, configValid)
            } catch {
                if lastProblem != "\(error)" { logger.warning("cannot read the network config: \(error)") }
                lastProblem = "\(error)"
            }
            if let config {
                if chosen?.families != config.families {
                    let families = config.families
                    let interface = try await threads.kernel { [self] in try findInterface(families: families) }
                    logger.info(
                        "using interface",
                        metadata: [
                            "node.interface": "\(interface.name)", "node.public_ip": "\(interface.publicIP)",
                            "node.public_ipv6": "\(interface.publicIPv6?.description ?? "-")",
                        ])
                    chosen = (families, interface)
                }
                let interface = chosen!.interface
                if let problem = config.problem(onNodeWith: interface.nodeAddresses) {
                    report(problem, &lastProblem, configValid)
                } else {
                    configValid.record(1)
                    if !lastProblem.isEmpty { logger.info("the network config is valid now") }
                    return (config, interface)
                }
            }
            try await clock.sleep(for: .seconds(1))
        }
    }

    private func report(_ e: ConfigError, _ lastProblem: inout String, _ configValid: Gauge) {
        configValid.record(0)
        if lastProblem != e.description {
            Counter(label: "podnet_config_errors_total").increment()
            logger.error("invalid network config (waiting for a valid one): \(e.description)")
        }
        lastProblem = e.description
    }
}

extension ExternalInterface {
    /// This node's underlay addresses (the interface's and the public IPs of each family): no
    /// peer's lease may claim them.
    public var nodeAddresses: [IPAddress] {
        var all: [IPAddress] = []
        let candidates: [IPAddress?] = [address.address, publicIP, ipv6Address?.address, publicIPv6]
        for ip in candidates.compactMap({ $0 })
        where !all.contains(ip) && !(ip.family == .v4 && ip.isUnspecified) {
            all.append(ip)
        }
        return all
    }
}
