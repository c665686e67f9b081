// What podnetctl needs to know of the node: the daemon's etcd and interface flags, each read from
// the command line, else from its FLANNELD_* variable (as podnetd reads them), else podnetd's
// default; and what it gathers with them, bounded by --timeout.

import Addressing
import ArgumentParser
import Etcd
import EtcdLeases
import FoundationEssentials
import Logging
import NodeAgent
import Overlay

#if canImport(Glibc)
    import Glibc
#endif

/// podnetd's flags that podnetctl uses; unset ones come from FLANNELD_* or podnetd's defaults.
struct NodeOptions: ParsableArguments {
    @Option(help: "Comma-separated etcd endpoints (FLANNELD_ETCD_ENDPOINTS).") var etcdEndpoints: String?
    @Option(help: "etcd key prefix of the network (FLANNELD_ETCD_PREFIX).") var etcdPrefix: String?
    @Option(help: "CA file for etcd's TLS certificate.") var etcdCafile: String?
    @Option(help: "Client certificate for etcd.") var etcdCertfile: String?
    @Option(help: "Client key for etcd.") var etcdKeyfile: String?
    @Option(help: "etcd user name.") var etcdUsername: String?
    @Option(help: "etcd password.") var etcdPassword: String?
    @Option(help: "podnetd's --iface; repeatable.") var iface: [String] = []
    @Option(help: "podnetd's --iface-regex; repeatable.") var ifaceRegex: [String] = []
    @Option(help: "podnetd's --iface-can-reach.") var ifaceCanReach: String?
    @Option(help: "podnetd's --public-ip.") var publicIP: String?
    @Option(name: .customLong("public-ipv6"), help: "podnetd's --public-ipv6.") var publicIPv6: String?
    @Option(help: "podnetd's subnet file.") var subnetFile: String?
    @Option(help: "podnetd's health server address.") var healthzIP: String?
    @Option(help: "podnetd's health server port (0: do not ask the daemon).") var healthzPort: Int?
    @Option(help: "Seconds to wait for etcd and the daemon before giving up (exit 2).") var timeout = 5

    var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The flag's value, else its FLANNELD_* variable's.
    func value(_ given: String?, _ flag: String) -> String? {
        given ?? environment[GoCommandLine.environmentName(flag)].flatMap { $0.isEmpty ? nil : $0 }
    }
    func values(_ given: [String], _ flag: String) -> [String] {
        if !given.isEmpty { return given }
        return environment[GoCommandLine.environmentName(flag)].map { [$0] } ?? []
    }

    var prefix: String { value(etcdPrefix, "etcd-prefix") ?? "/coreos.com/network" }
    var subnetPath: String { value(subnetFile, "subnet-file") ?? "/run/flannel/subnet.env" }
    var healthPort: Int { healthzPort ?? value(nil, "healthz-port").flatMap { Int($0) } ?? 0 }
    var healthAddress: String {
        let ip = value(healthzIP, "healthz-ip") ?? "0.0.0.0"
        return ip == "0.0.0.0" ? "127.0.0.1" : ip
    }

    func validate() throws {
        guard (1...3600).contains(timeout) else {
            throw ValidationError("--timeout must be between 1 and 3600 seconds")
        }
    }

    /// The etcd client podnetd would make.
    func etcdClient() throws -> EtcdClient {
        let endpoints = value(etcdEndpoints, "etcd-endpoints") ?? "http://127.0.0.1:2379"
        var config = EtcdClient.Configuration(endpoints: endpoints.split(separator: ",").map(String.init))
        // Longer than the --timeout bound on the whole exchange (`withEtcd`), so that bound is what
        // ends a wait on a silent etcd, with its own message, not a request's time-out racing it.
        config.requestTimeout = .seconds(timeout + 2)
        config.connectTimeout = .seconds(min(timeout, 2))
        let ca = value(etcdCafile, "etcd-cafile"), cert = value(etcdCertfile, "etcd-certfile")
        let key = value(etcdKeyfile, "etcd-keyfile")
        if ca != nil || cert != nil { config.tls = .init(caFile: ca, certificateFile: cert, keyFile: key) }
        if let user = value(etcdUsername, "etcd-username") {
            config.credentials = .init(username: user, password: value(etcdPassword, "etcd-password") ?? "")
        }
        return try EtcdClient(configuration: config, logger: quiet)
    }

    /// podnetd's interface options.
    var agentOptions: NodeAgent.Options {
        var o = NodeAgent.Options()
        o.interfaces = values(iface, "iface")
        o.interfaceRegexes = values(ifaceRegex, "iface-regex")
        o.interfaceCanReach = value(ifaceCanReach, "iface-can-reach").flatMap { IPAddress($0) }
        o.publicIP = value(publicIP, "public-ip").flatMap { IPAddress($0) }
        o.publicIPv6 = value(publicIPv6, "public-ipv6").flatMap { IPAddress($0) }
        return o
    }
}

/// podnetctl could not tell (exit 2): etcd unreachable, no config, a kernel it cannot read.
struct CannotTell: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` with a client for the node's etcd, failing with `CannotTell` after `timeout`
/// seconds; the client is shut down whatever happens.
func withEtcd<T: Sendable>(
    _ options: NodeOptions, _ body: @escaping @Sendable (EtcdLeaseRegistry) async throws -> T
) async throws -> T {
    let client: EtcdClient
    do { client = try options.etcdClient() } catch { throw CannotTell("cannot make an etcd client: \(error)") }
    let registry = EtcdLeaseRegistry(
        client: client, prefix: options.prefix, logger: quiet)
    let seconds = options.timeout
    do {
        let result = try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body(registry) }
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw CannotTell("etcd did not answer within \(seconds) s (--timeout)")
            }
            return value
        }
        await client.shutdown()
        return result
    } catch let e as CannotTell {
        await client.shutdown()
        throw e
    } catch {
        await client.shutdown()
        throw CannotTell("cannot read etcd: \(error)")
    }
}
