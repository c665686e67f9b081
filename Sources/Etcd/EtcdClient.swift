// An etcd v3 client over the HTTP/JSON gateway (`POST /v3/<service>/<method>`), which every etcd
// since 3.4 serves on its client port. Why the gateway and not gRPC: it needs only an HTTP client,
// and its JSON is small and fixed (flannel.md §10 lists every field this client reads).
//
// Files: Configuration (endpoints, TLS, credentials, backoff), Transport (HTTP, failover,
// timeouts, errors), Auth (tokens), Codec (the gateway's JSON), KV, Lease, Watch, Lines (stream
// framing). Every method throws `EtcdError`, naming the request and the endpoint.

import Logging

/// A client for one etcd cluster.
///
/// ```swift
/// let etcd = try EtcdClient(configuration: .init(endpoints: ["http://127.0.0.1:2379"]), logger: logger)
/// let leases = try await etcd.range(.prefix("/coreos.com/network/subnets/"))
/// for try await update in etcd.watch(.prefix("/coreos.com/network/subnets/"),
///                                    fromRevision: leases.header.revision + 1) { ... }
/// await etcd.shutdown()
/// ```
///
/// Call ``shutdown()`` when done: it closes the connections.
public final class EtcdClient: Sendable {
    let transport: Transport
    public let configuration: Configuration

    /// Checks the configuration and loads the TLS files; connects lazily, at the first request.
    public init(configuration: Configuration, logger: Logger = Logger(label: "podnet.etcd")) throws(EtcdError) {
        self.configuration = configuration
        transport = try Transport(configuration: configuration, logger: logger)
    }

    /// Closes every connection; requests made afterwards fail.
    public func shutdown() async {
        await transport.shutdown()
    }

    /// The endpoints as base URLs, in the order they are tried.
    public var endpoints: [String] { transport.endpoints }

    /// The endpoint requests go to first: the last one that answered.
    public var currentEndpoint: String { transport.endpoints[transport.preferredIndex] }

    /// Counters since the client was made, for metrics.
    public var statistics: Statistics { transport.statistics.withLock { $0 } }
}
