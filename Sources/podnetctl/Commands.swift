// The subcommands that read etcd and the kernel: status, check, leases. Each gathers the same
// facts (`Facts.gather`) and renders them with NodeCheck; only the output and the exit status differ.

import Addressing
import ArgumentParser
import AsyncHTTPClient
import Etcd
import EtcdLeases
import FoundationEssentials
import Logging
import NodeAgent
import NodeCheck
import Overlay

#if canImport(Glibc)
    import Glibc
#endif

/// Output format and colour, shared by the subcommands.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON (schema: docs/podnetctl-json.md).") var json = false

    var colour: Bool {
        useColour(isTTY: isatty(STDOUT_FILENO) == 1, environment: ProcessInfo.processInfo.environment)
    }
}

/// Everything status and check report on.
struct Facts {
    var report: NodeReport

    static func gather(_ options: NodeOptions) async throws -> Facts {
        let subnetEnv = readSubnetEnv(at: options.subnetPath)
        // etcd first (the config's families say which addresses the interface must have), then the
        // kernel, then this node's TTL.
        let (data, leases) = try await withEtcd(options) { r in (try await r.config(), try await r.leases().leases) }
        guard let data else { throw CannotTell("no network config at \(options.prefix)/config") }
        let config: NetworkConfig
        do { config = try NetworkConfig(json: data) } catch {
            throw CannotTell("the network config at \(options.prefix)/config is invalid: \(error)")
        }
        let dataPath: KernelDataPath
        let interface: ExternalInterface
        do {
            dataPath = try KernelDataPath()
            interface = try options.agentOptions.findInterface(
                dataPath: dataPath, logger: quiet, families: config.families)
        } catch {
            throw CannotTell("cannot find the node's interface: \(error)")
        }
        // As the daemon: the interface's addresses, and the public addresses when they differ.
        let nodeAddresses = interface.nodeAddresses
        // This node's lease: subnet.env's subnet, else the lease of its public address.
        let fromFile = subnetEnv.flatMap(primarySubnet)
        var own =
            fromFile.flatMap { s in leases.first { $0.subnet == s } }
            ?? ownLease(in: leases, publicIP: interface.publicIP(config.primary.family) ?? interface.publicIP)
        if let id = own?.etcdLease {
            own?.expiration = try await withEtcd(options) { r in
                try await r.client.timeToLive(LeaseID(rawValue: id)).remaining.map {
                    Date().addingTimeInterval($0.seconds)
                }
            }
        }
        var inspection: Inspection?
        if let own {
            let peers = config.peers(from: leases, own: own.subnet, nodeAddresses: nodeAddresses)
            do {
                inspection = try config.inspect(
                    interface: interface, ownSubnet: own.subnet, peers: peers, dataPath: dataPath)
            } catch {
                throw CannotTell("cannot read the kernel's state: \(error)")
            }
        }
        var daemon: DaemonStatus?
        if options.healthPort > 0 {
            daemon = await askDaemon(host: options.healthAddress, port: options.healthPort, timeout: options.timeout)
        }
        let report = NodeReport(
            config: config, own: own, leases: leases, nodeAddresses: nodeAddresses,
            inspection: inspection, subnetEnv: subnetEnv, subnetEnvPath: options.subnetPath, daemon: daemon)
        return Facts(report: report)
    }
}

extension Duration {
    /// Whole and fractional seconds.
    var seconds: Double {
        let (s, a) = components
        return Double(s) + Double(a) / 1e18
    }
}

/// GET /healthz and /readyz from the daemon's health server.
func askDaemon(host: String, port: Int, timeout: Int) async -> DaemonStatus {
    let endpoint = "http://\(host):\(port)"
    func get(_ path: String) async -> (status: Int?, error: String?) {
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = .GET
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(Int64(timeout)))
            return (Int(response.status.code), nil)
        } catch {
            return (nil, "\(error)")
        }
    }
    let healthz = await get("/healthz")
    guard let healthStatus = healthz.status else {
        return DaemonStatus(endpoint: endpoint, healthy: nil, ready: nil, detail: "no answer: \(healthz.error ?? "")")
    }
    let readyz = await get("/readyz")
    let detail = readyz.status == 200 ? nil : readyz.status.map { "/readyz answered \($0)" } ?? readyz.error
    return DaemonStatus(
        endpoint: endpoint, healthy: healthStatus == 200, ready: readyz.status.map { $0 == 200 }, detail: detail)
}

/// The lease subnet a subnet.env names: FLANNEL_SUBNET's network, or in an IPv6-only cluster's file
/// (no IPv4 keys) FLANNEL_IPV6_SUBNET's.
func primarySubnet(_ env: [String: String]) -> IPNetwork? {
    (env["FLANNEL_SUBNET"] ?? env["FLANNEL_IPV6_SUBNET"]).flatMap { IPNetwork($0)?.network }
}

/// The library loggers' output is not podnetctl's.
let quiet = Logger(label: "podnetctl", factory: { _ in SwiftLogNoOpLogHandler() })

/// Runs `body`; `CannotTell` is printed and exits 2.
func reporting(_ body: () async throws -> Void) async throws {
    do { try await body() } catch let e as CannotTell {
        let line = Array("podnetctl: \(e.description)\n".utf8)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        throw ExitCode(2)
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "This node's lease, the daemon's health, subnet.env, and every peer next to its kernel state.")
    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await reporting {
            let facts = try await Facts.gather(node)
            print(output.json ? json(facts.report) : renderTable(facts.report, colour: output.colour), terminator: "")
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Compare etcd and the kernel quietly: exit 0 consistent, 1 drift (one line per problem), 2 cannot tell.")
    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await reporting {
            let facts = try await Facts.gather(node)
            if output.json {
                print(json(facts.report), terminator: "")
            } else {
                print(renderProblems(facts.report), terminator: "")
            }
            if !facts.report.problems.isEmpty { throw ExitCode(1) }
        }
    }
}

struct Leases: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The cluster's leases: subnet, public address, backend, VTEP MAC, expiry.")
    @OptionGroup var node: NodeOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        try await reporting {
            let leases = try await withEtcd(node) { r in
                var leases = try await r.leases().leases
                // Each lease's time left, asked concurrently.
                let left = try await withThrowingTaskGroup(of: (Int, Date?).self) { group in
                    for (i, l) in leases.enumerated() {
                        guard let id = l.etcdLease else { continue }
                        group.addTask {
                            let ttl = try await r.client.timeToLive(LeaseID(rawValue: id))
                            return (i, ttl.remaining.map { Date().addingTimeInterval($0.seconds) })
                        }
                    }
                    return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
                }
                for (i, date) in left { leases[i].expiration = date }
                return leases
            }
            let own = readSubnetEnv(at: node.subnetPath).flatMap(primarySubnet)
            print(output.json ? json(leases) : renderLeases(leases, own: own), terminator: "")
        }
    }
}
