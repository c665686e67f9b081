// How to reach etcd: endpoints, timeouts, reconnect backoff, TLS files and credentials. The names
// follow flanneld's flags (`--etcd-endpoints`, `--etcd-cafile`, `--etcd-certfile`,
// `--etcd-keyfile`, `--etcd-username`, `--etcd-password`).

extension EtcdClient {
    public struct Configuration: Sendable {
        /// Base URLs, e.g. `http://127.0.0.1:2379` or `https://10.0.0.1:2379`. Without a scheme an
        /// endpoint is `https` when ``tls`` is set, else `http`. Tried in order; after a failure
        /// the client stays on the endpoint that answered.
        public var endpoints: [String]
        /// The gateway's path prefix: `/v3` since etcd 3.4.
        public var basePath = "/v3"
        /// Limit for one request on one endpoint, and for a watch to be created or to answer a
        /// ping. A simple token whose index is ahead of the server's makes etcd wait forever, so
        /// every request has this limit.
        public var requestTimeout: Duration = .seconds(5)
        /// Limit for establishing a connection (TCP and TLS).
        public var connectTimeout: Duration = .seconds(2)
        /// Delay between reconnect attempts of watches and keepalives.
        public var reconnectBackoff = Backoff()
        /// A watch stream that has been quiet this long is pinged (a progress request); no answer
        /// within ``requestTimeout`` means the connection is dead, and the watch reconnects.
        public var watchPingInterval: Duration = .seconds(10)
        public var tls: TLS?
        public var credentials: Credentials?
        /// HTTP/1.1 connections kept per endpoint; each open watch holds one.
        public var maxConnectionsPerEndpoint = 16

        public init(endpoints: [String]) {
            self.endpoints = endpoints
        }
    }

    /// Files for TLS, all PEM. Used for `https` endpoints.
    public struct TLS: Sendable, Hashable {
        /// CA bundle that signed the server's certificate; the system's roots when `nil`.
        public var caFile: String?
        /// Client certificate (chain) and its key, for servers started with `--client-cert-auth`.
        public var certificateFile: String?
        public var keyFile: String?

        public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certificateFile = certificateFile
            self.keyFile = keyFile
        }
    }

    /// etcd username and password. The client exchanges them for a token
    /// (`/v3/auth/authenticate`), sends it as `Authorization: <token>`, and exchanges them again
    /// when etcd says the token is no longer valid.
    public struct Credentials: Sendable, Hashable {
        public var username: String
        public var password: String

        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
    }

    /// Exponential backoff: `initial`, doubling per consecutive failure, never above `maximum`,
    /// each delay shortened by up to 20 % at random so that many clients do not reconnect in step.
    public struct Backoff: Sendable, Hashable {
        public var initial: Duration
        public var maximum: Duration

        public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
            self.initial = initial
            self.maximum = max(initial, maximum)
        }

        /// The delay after `failures` consecutive failures (1 for the first).
        public func delay(afterFailures failures: Int) -> Duration {
            var delay = initial
            for _ in 1..<max(1, min(failures, 64)) where delay < maximum {
                delay *= 2
            }
            return min(delay, maximum) * Double.random(in: 0.8...1.0)
        }
    }

    /// Counters for metrics: how often the client talked to etcd and what went wrong.
    public struct Statistics: Hashable, Sendable {
        /// Requests sent (each attempt on each endpoint, including watch connections).
        public var requests = 0
        /// Requests that ended in an error for the caller.
        public var errors = 0
        /// Times the client moved to another endpoint because the current one failed.
        public var failovers = 0
        /// Tokens obtained with the username and password.
        public var authentications = 0
        /// Times a watch lost its stream and reconnected.
        public var watchReconnects = 0
        /// Watches etcd confirmed as created (each stream counts, a reconnected one again): from
        /// then on the watch sees every change.
        public var watchesCreated = 0
        public init() {}
    }
}

extension EtcdClient.Configuration {
    /// The endpoints as base URLs without a trailing slash; throws for an unusable one.
    func normalizedEndpoints() throws(EtcdError) -> [String] {
        guard !endpoints.isEmpty else { throw .invalidConfiguration("no etcd endpoints given") }
        return try endpoints.map { (raw: String) throws(EtcdError) -> String in
            var url = raw.trimmingWhitespace()
            while url.hasSuffix("/") { url.removeLast() }
            if !url.contains("://") { url = (tls == nil ? "http://" : "https://") + url }
            guard url.hasPrefix("http://") || url.hasPrefix("https://"),
                url.split(separator: "/", omittingEmptySubsequences: true).count == 2
            else {
                throw .invalidConfiguration("endpoint \"\(raw)\" is not http(s)://host:port")
            }
            return url
        }
    }
}

extension Duration {
    /// `250ms`, for log metadata.
    var logText: String {
        let (seconds, attoseconds) = components
        return "\(seconds * 1000 + attoseconds / 1_000_000_000_000_000)ms"
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
