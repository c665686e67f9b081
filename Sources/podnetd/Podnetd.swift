// podnetd: the per-node overlay daemon. Start-up follows flanneld (main.go): wait for the
// network config in etcd, pick the interface, register the backend (tunnel device), acquire the
// subnet lease, program the peers, write subnet.env, then run: lease renewal, the peer watch,
// periodic repair and the HTTP endpoints. SIGTERM stops the daemon and leaves the data path and
// the lease in place, so pods keep talking while it restarts.

import Addressing
import ArgumentParser
import Etcd
import FoundationEssentials
import Logging
import Metrics
import Netfilter
import Overlay
import Prometheus
import ServiceLifecycle

@main
struct Podnetd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "podnetd", abstract: "Pod network overlay daemon (flanneld-compatible etcd layout).")

    @Option(help: "Comma-separated etcd endpoints.") var etcdEndpoints = "http://127.0.0.1:2379"
    @Option(help: "etcd key prefix of the network.") var etcdPrefix = "/coreos.com/network"
    @Option(help: "CA file for etcd's TLS certificate.") var etcdCafile: String?
    @Option(help: "Client certificate for etcd.") var etcdCertfile: String?
    @Option(help: "Client key for etcd.") var etcdKeyfile: String?
    @Option(help: "etcd user name.") var etcdUsername: String?
    @Option(help: "etcd password.") var etcdPassword: String?
    @Option(help: "Interface to use (name); repeatable, the first that exists wins.") var iface: [String] = []
    @Option(help: "Regular expression over interface names; repeatable, checked after --iface.") var ifaceRegex: [String] = []
    @Option(help: "Address to advertise to peers (default: the interface's).") var publicIP: String?
    @Option(help: "Where to write subnet.env.") var subnetFile = "/run/flannel/subnet.env"
    @Option(help: "Minutes before the lease expires to renew it (1-1439).") var subnetLeaseRenewMargin = 60
    @Flag(help: "Masquerade traffic leaving the overlay (FLANNEL-POSTRTG rules).") var ipMasq = false
    @Option(help: "Address of the /healthz, /readyz and /metrics server.") var healthzIP = "0.0.0.0"
    @Option(help: "Port of the HTTP server (0: off).") var healthzPort = 0
    @Option(help: "HTTP connections open at once; one more closes the oldest.") var healthzMaxConnections = 64
    @Option(help: "Seconds an HTTP connection may send nothing before it is closed.") var healthzIdleTimeout = 5
    @Option(help: "Seconds an HTTP connection may take to send its request before it is closed.") var healthzHeaderTimeout = 10
    @Option(help: "Seconds between repairs of the kernel state.") var reconcileInterval = 10
    @Flag(help: "Exit when this node's lease is deleted, instead of acquiring it again.") var exitOnLeaseLoss = false

    func validate() throws {
        guard (1...1439).contains(subnetLeaseRenewMargin) else {
            throw ValidationError("--subnet-lease-renew-margin must be between 1 and 1439 minutes")
        }
        if publicIP != nil && IPAddress(publicIP!) == nil { throw ValidationError("--public-ip is not an IP address") }
        guard (1...86_400).contains(reconcileInterval) else {
            throw ValidationError("--reconcile-interval must be between 1 and 86400 seconds")
        }
        guard (0...65_535).contains(healthzPort) else { throw ValidationError("--healthz-port must be between 0 and 65535") }
        guard (1...65_536).contains(healthzMaxConnections) else {
            throw ValidationError("--healthz-max-connections must be between 1 and 65536")
        }
        guard (1...86_400).contains(healthzIdleTimeout), (1...86_400).contains(healthzHeaderTimeout) else {
            throw ValidationError("--healthz-idle-timeout and --healthz-header-timeout must be between 1 and 86400 seconds")
        }
        if (etcdCertfile == nil) != (etcdKeyfile == nil) {
            throw ValidationError("--etcd-certfile and --etcd-keyfile go together")
        }
    }

    func run() async throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "podnetd")
        logger.logLevel = .info
        let prometheus = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: prometheus))

        var etcdConfig = EtcdClient.Configuration(endpoints: etcdEndpoints.split(separator: ",").map(String.init))
        if etcdCafile != nil || etcdCertfile != nil {
            etcdConfig.tls = .init(caFile: etcdCafile, certificateFile: etcdCertfile, keyFile: etcdKeyfile)
        }
        if let etcdUsername { etcdConfig.credentials = .init(username: etcdUsername, password: etcdPassword ?? "") }
        let client = try EtcdClient(configuration: etcdConfig, logger: Logger(label: "podnet.etcd"))
        do {
            try await serve(client: client, prometheus: prometheus, logger: logger)
        } catch {
            logger.error("podnetd stopped: \(error)")
            await client.shutdown()
            throw ExitCode.failure
        }
        await client.shutdown()
    }

    private func serve(client: EtcdClient, prometheus: PrometheusCollectorRegistry, logger: Logger) async throws {
        // The health server first (flanneld's start-up order): /healthz answers and /metrics shows
        // podnet_config_valid while the daemon waits for a valid config; /readyz once subnet.env is written.
        let readiness = Readiness()
        var health: HealthServer.Listening?
        if healthzPort > 0 {
            let limits = HealthServer.Limits(maxConnections: healthzMaxConnections, idleTimeout: .seconds(healthzIdleTimeout),
                                             headerTimeout: .seconds(healthzHeaderTimeout))
            health = try await HealthServer(host: healthzIP, port: healthzPort, readiness: readiness, registry: prometheus,
                                            limits: limits, logger: logger).start()
        }
        let registry = EtcdLeaseRegistry(client: client, prefix: etcdPrefix, logger: logger)
        // The interface first: a config is checked against the node's addresses before use.
        let dataPath = try KernelDataPath()
        let interface = try findInterface(dataPath)
        logger.info("using interface", metadata: ["node.interface": "\(interface.name)", "node.public_ip": "\(interface.publicIP)"])
        let nodeAddresses = [interface.address.address] + (interface.publicIP == interface.address.address ? [] : [interface.publicIP])
        let config = try await waitForConfig(registry, nodeAddresses: nodeAddresses, logger)
        let network = try makeBackend(config, interface).registerNetwork(dataPath: dataPath, logger: Logger(label: "podnet.overlay"))

        let manager = SubnetManager(registry: registry, logger: logger)
        // The listing the lease was chosen from gives the peers: no second listing of every lease.
        let (lease, snapshot) = try await manager.acquireWithSnapshot(config: config, attributes: network.leaseAttributes,
                                                                      previous: SubnetFile.previousSubnet(at: subnetFile))
        try network.start(subnet: lease.subnet)
        let state = NodeState(lease: lease, config: config, nodeAddresses: nodeAddresses)
        let peers = await state.replacePeers(snapshot.leases, logger: logger)
        let report = try network.reconcile(peers: peers)
        logger.info("programmed the peers", metadata: ["overlay.peers": "\(peers.count)", "overlay.changes": "\(report.programmed.total + report.removed.total)"])

        let masq = ipMasq ? FlannelMasquerade(network: config.network, subnet: lease.subnet) : nil
        if let masq, try masq.ensure() {
            logger.info("installed the masquerade and forward rules", metadata: ["masq.network": "\(masq.network)", "masq.subnet": "\(masq.subnet)"])
        }
        try SubnetFile.write(SubnetFile.render(network: config.network, subnet: lease.subnet, mtu: network.mtu, ipMasq: ipMasq),
                             to: subnetFile)
        readiness.markReady()
        logger.info("subnet file written", metadata: ["node.subnet": "\(lease.subnet)", "node.subnet_file": "\(subnetFile)"])

        let keeperEvents = AsyncStream<KeeperEvent>.makeStream()
        var services: [any Service] = [
            LeaseKeeper(manager: manager, config: config, network: network, state: state, subnetFile: subnetFile,
                        renewMargin: .seconds(subnetLeaseRenewMargin * 60), ipMasq: ipMasq,
                        exitOnLoss: exitOnLeaseLoss, events: keeperEvents, logger: logger),
            PeerWatcher(registry: registry, network: network, state: state, startRevision: snapshot.revision,
                        leaseLost: keeperEvents.continuation, logger: logger),
            Repairer(network: network, state: state, masquerade: masq, keeper: keeperEvents.continuation,
                     interval: .seconds(reconcileInterval), logger: logger),
        ]
        if let health { services.append(health) }
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
        logger.info("stopped; the data path and the lease stay in place")
    }

    /// Reads `<prefix>/config` every second until it exists and is valid, also on this node (no
    /// subnet it could lease holds one of `nodeAddresses`). An invalid config is reported (once
    /// per change, and counted in `podnet_config_errors_total`) and waited out too: nothing is
    /// written meanwhile.
    private func waitForConfig(_ registry: EtcdLeaseRegistry, nodeAddresses: [IPAddress],
                               _ logger: Logger) async throws -> NetworkConfig {
        var lastProblem = ""
        let configValid = Gauge(label: "podnet_config_valid")
        while true {
            do {
                if let data = try await registry.config() {
                    let config = try NetworkConfig(json: data)
                    if let problem = config.problem(onNodeWith: nodeAddresses) { throw problem }
                    configValid.record(1)
                    if !lastProblem.isEmpty { logger.info("the network config is valid now") }
                    return config
                }
                if lastProblem != "missing" { logger.info("waiting for the network config at \(registry.prefix)/config") }
                lastProblem = "missing"
            } catch let e as ConfigError {
                configValid.record(0)
                if lastProblem != e.description {
                    Counter(label: "podnet_config_errors_total").increment()
                    logger.error("invalid network config (waiting for a valid one): \(e.description)")
                }
                lastProblem = e.description
            } catch {
                if lastProblem != "\(error)" { logger.warning("cannot read the network config: \(error)") }
                lastProblem = "\(error)"
            }
            try await Task.sleep(for: .seconds(1))
        }
    }

    private func findInterface(_ dataPath: any DataPath) throws -> ExternalInterface {
        let ip = publicIP.flatMap { IPAddress($0) }
        for name in iface {
            if let found = try? ExternalInterface.find(name: name, publicIP: ip, dataPath: dataPath) { return found }
        }
        if !ifaceRegex.isEmpty {
            let regexes = try ifaceRegex.map { try Regex($0) }
            for link in try dataPath.links() where regexes.contains(where: { link.name.wholeMatch(of: $0) != nil }) {
                if let found = try? ExternalInterface.find(name: link.name, publicIP: ip, dataPath: dataPath) { return found }
            }
        }
        guard iface.isEmpty && ifaceRegex.isEmpty else {
            throw ValidationError("none of the interfaces named by --iface/--iface-regex exists with an IPv4 address")
        }
        return try ExternalInterface.find(name: nil, publicIP: ip, dataPath: dataPath)
    }

    private func makeBackend(_ config: NetworkConfig, _ interface: ExternalInterface) -> any Backend {
        switch config.backendType {
        case "vxlan": VXLANBackend(interface: interface, network: config.network, config: config.vxlan)
        case "host-gw": HostGWBackend(interface: interface, network: config.network)
        default: IPIPBackend(interface: interface, network: config.network, config: config.ipip)
        }
    }
}
