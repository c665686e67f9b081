// podnetd: the per-node overlay daemon. This is its wiring: flags, the etcd client, the health
// server, and the node agent (NodeAgent: start-up as flanneld's main.go, then lease renewal, the
// peer watch and periodic repair) run as one ServiceGroup. SIGTERM stops the daemon and leaves
// the data path and the lease in place, so pods keep talking while it restarts. The command line
// is flanneld's too: Go's flag syntax and FLANNELD_* variables are rewritten first (GoCommandLine).

import Addressing
import ArgumentParser
import Etcd
import EtcdLeases
import FoundationEssentials
import Glibc
import Logging
import Metrics
import Netfilter
import NodeAgent
import Overlay
import Prometheus
import ServiceLifecycle

@main
struct Podnetd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "podnetd", abstract: "Pod network overlay daemon (flanneld-compatible etcd layout).",
        version: "podnetd 0.9.0")

    /// Rewrites flanneld's command line and environment (see GoCommandLine), then parses and runs.
    static func main() async {
        // Two malloc arenas, not glibc's eight per core: the event loop, the cooperative pool and
        // the blocking threads each took an arena of their own, and memory freed in one was never
        // reused by another (5000 peers: 4 MB less peak RSS). podnetd allocates little after
        // start-up, so the shared arenas cost it nothing measurable.
        setMallocArenaMax(2)
        do {
            let arguments = try GoCommandLine.podnetd.rewrite(
                Array(CommandLine.arguments.dropFirst()), environment: ProcessInfo.processInfo.environment)
            await main(arguments)
        } catch {
            exit(withError: ValidationError(error.description))
        }
    }

    @Option(help: "Comma-separated etcd endpoints.") var etcdEndpoints = "http://127.0.0.1:2379"
    @Option(help: "etcd key prefix of the network.") var etcdPrefix = "/coreos.com/network"
    @Option(help: "CA file for etcd's TLS certificate.") var etcdCafile: String?
    @Option(help: "Client certificate for etcd.") var etcdCertfile: String?
    @Option(help: "Client key for etcd.") var etcdKeyfile: String?
    @Option(help: "etcd user name.") var etcdUsername: String?
    @Option(help: "etcd password.") var etcdPassword: String?
    @Option(help: "Interface to use, by name or IP address; repeatable, the first that matches wins.")
    var iface: [String] = []
    @Option(help: "Regular expression over interface IPv4 addresses, then names; repeatable, checked after --iface.")
    var ifaceRegex: [String] = []
    @Option(help: "Use the interface the kernel routes this IP address through.") var ifaceCanReach: String?
    @Option(help: "Address to advertise to peers (default: the interface's).") var publicIP: String?
    @Option(
        name: .customLong("public-ipv6"),
        help: "IPv6 address to advertise to peers; used only with EnableIPv6, which podnetd does not run yet.")
    var publicIPv6: String?
    @Option(help: "Where to write subnet.env.") var subnetFile = "/run/flannel/subnet.env"
    @Option(help: "Minutes before the lease expires to renew it (1-1439).") var subnetLeaseRenewMargin = 60
    @Flag(inversion: .prefixedNo, help: "Masquerade traffic leaving the overlay (FLANNEL-POSTRTG rules).")
    var ipMasq = false
    @Flag(inversion: .prefixedNo, help: "Masquerade without --random-fully (fully-random in nftables).")
    var ipMasqFullyRandomDisable = false
    @Flag(inversion: .prefixedNo, help: "Accept forwarded overlay traffic (FLANNEL-FWD rules).")
    var iptablesForwardRules = true
    @Option(help: "Seconds between checks of the traffic rules and the blackhole route.") var iptablesResync = 5
    @Flag(inversion: .prefixedNo, help: "Keep a blackhole route for this node's subnet.")
    var ipBlackholeRoute = false
    @Option(help: "Address of the /healthz, /readyz and /metrics server.") var healthzIP = "0.0.0.0"
    @Option(help: "Port of the HTTP server (0: off).") var healthzPort = 0
    @Option(help: "HTTP connections open at once; one more closes the oldest.") var healthzMaxConnections = 64
    @Option(help: "Seconds an HTTP connection may send nothing before it is closed.") var healthzIdleTimeout = 5
    @Option(help: "Seconds an HTTP connection may take to send its request before it is closed.")
    var healthzHeaderTimeout = 10
    @Option(help: "Seconds between repairs of the kernel state.") var reconcileInterval = 10
    @Flag(inversion: .prefixedNo, help: "Exit when this node's lease is deleted, instead of acquiring it again.")
    var exitOnLeaseLoss = false
    @Option(name: .customLong("v"), help: "Log verbosity as flanneld's -v: 0 info, 1-5 debug, 6 and more trace.")
    var verbosity = 0

    func validate() throws {
        guard (1...1439).contains(subnetLeaseRenewMargin) else {
            throw ValidationError("--subnet-lease-renew-margin must be between 1 and 1439 minutes")
        }
        if let publicIP, IPAddress(publicIP)?.family != .v4 {
            throw ValidationError("--public-ip \(publicIP) is not an IPv4 address")
        }
        if let publicIPv6, IPAddress(publicIPv6)?.family != .v6 {
            throw ValidationError("--public-ipv6 \(publicIPv6) is not an IPv6 address")
        }
        if let ifaceCanReach, IPAddress(ifaceCanReach) == nil {
            throw ValidationError("--iface-can-reach \(ifaceCanReach) is not an IP address")
        }
        guard (1...86_400).contains(iptablesResync) else {
            throw ValidationError("--iptables-resync must be between 1 and 86400 seconds")
        }
        guard (1...86_400).contains(reconcileInterval) else {
            throw ValidationError("--reconcile-interval must be between 1 and 86400 seconds")
        }
        guard (0...65_535).contains(healthzPort) else {
            throw ValidationError("--healthz-port must be between 0 and 65535")
        }
        guard (1...65_536).contains(healthzMaxConnections) else {
            throw ValidationError("--healthz-max-connections must be between 1 and 65536")
        }
        guard (1...86_400).contains(healthzIdleTimeout), (1...86_400).contains(healthzHeaderTimeout) else {
            throw ValidationError(
                "--healthz-idle-timeout and --healthz-header-timeout must be between 1 and 86400 seconds")
        }
        if (etcdCertfile == nil) != (etcdKeyfile == nil) {
            throw ValidationError("--etcd-certfile and --etcd-keyfile go together")
        }
    }

    func run() async throws {
        let level: Logger.Level = verbosity >= 6 ? .trace : verbosity >= 1 ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "podnetd")
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
            let limits = HealthServer.Limits(
                maxConnections: healthzMaxConnections, idleTimeout: .seconds(healthzIdleTimeout),
                headerTimeout: .seconds(healthzHeaderTimeout))
            health = try await HealthServer(
                host: healthzIP, port: healthzPort, readiness: readiness, registry: prometheus,
                limits: limits, logger: logger
            ).start()
        }
        var options = NodeAgent.Options()
        options.interfaces = iface
        options.interfaceRegexes = ifaceRegex
        options.interfaceCanReach = ifaceCanReach.flatMap { IPAddress($0) }
        options.publicIP = publicIP.flatMap { IPAddress($0) }
        options.publicIPv6 = publicIPv6.flatMap { IPAddress($0) }
        options.subnetFile = subnetFile
        options.renewMargin = .seconds(subnetLeaseRenewMargin * 60)
        options.ipMasq = ipMasq
        options.reconcileInterval = .seconds(reconcileInterval)
        options.resyncInterval = .seconds(iptablesResync)
        options.blackholeRoute = ipBlackholeRoute
        options.exitOnLeaseLoss = exitOnLeaseLoss
        var traffic = FlannelTrafficRules.Options()
        traffic.masquerade = ipMasq
        traffic.forward = iptablesForwardRules
        traffic.fullyRandom = !ipMasqFullyRandomDisable
        let agent = NodeAgent(
            options: options, registry: EtcdLeaseRegistry(client: client, prefix: etcdPrefix, logger: logger),
            dataPath: try KernelDataPath(), threads: BlockingThreads(), readiness: readiness,
            clock: ContinuousClock(),
            rules: { [traffic] config, lease in
                // The rules of each family the config enables, for the lease's subnet of it.
                func pair(_ family: IPFamily) -> (network: IPNetwork, subnet: IPNetwork)? {
                    guard let range = config.range(family), let subnet = lease.subnet(family) else { return nil }
                    return (range.network, subnet)
                }
                return FlannelTrafficRules(
                    ipv4: pair(.v4), ipv6: pair(.v6), backend: config.enableNFTables ? .nftables : .iptables,
                    options: traffic)
            },
            logger: logger)
        var services = try await agent.start()
        if let health { services.append(health) }
        // Last, so that a graceful shutdown reaches it first: STOPPING=1 before the rest stops.
        services.append(ReadinessNotifier(notifier: .fromEnvironment, logger: logger))
        // Named by type: the default name is the service's value printed by reflection, which walks
        // the agent's whole state (every peer) and costs milliseconds per start.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services.map { .init(service: $0, serviceName: _typeName(type(of: $0), qualified: false)) },
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("stopped; the data path and the lease stay in place")
    }
}

/// flanneld's masquerade and forward rules, in the backend the network config asks for, are the
/// rules the agent keeps.
extension FlannelTrafficRules: RuleKeeper {
    public func removeLeftovers() throws -> Bool { try removeOtherBackend() }
}

/// glibc's mallopt(M_ARENA_MAX, n). The Glibc module does not export malloc.h, so the function is
/// looked up by name and called with the C calling convention.
private func setMallocArenaMax(_ n: Int32) {
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(nil, "mallopt") else { return }
    _ = unsafeBitCast(symbol, to: Mallopt.self)(-8, n)  // M_ARENA_MAX is -8
}
