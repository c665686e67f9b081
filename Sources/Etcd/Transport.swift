// The HTTP side of the client: one AsyncHTTPClient for every endpoint, failover between endpoints,
// a deadline on every request, the auth token, and the mapping of transport errors to EtcdError.
//
// Failover rule: a request moves to the next endpoint only when the failed attempt cannot have
// changed anything (the connection or TLS handshake failed, or the gateway said Unavailable), or
// when the request only reads. A write whose answer was lost (timeout, connection reset after
// sending) is reported as it is, since it may have been applied. When every endpoint failed the
// caller gets `EtcdError.unavailable` with one failure per endpoint.
//
// Endpoint choice: requests start on the preferred endpoint. Any request that finds an endpoint
// failing (refused, unreachable, timed out, or etcd answering Unavailable: a member without a
// leader) moves the preference off it at once, even when the request itself is not retried (a
// write whose answer was lost), and wakes the watches streaming from that endpoint so that they
// move too instead of waiting for their own liveness check: after a member is killed or cut off,
// the whole client is on a survivor within one request.

import AsyncHTTPClient
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// One failed attempt on one endpoint.
struct AttemptFailure: Error {
    var error: EtcdError
    /// Nothing reached etcd (or etcd did nothing): any request may be retried elsewhere.
    var nothingSent: Bool
}

/// An error line in a streamed answer (`{"error":{...}}`), thrown by a decoder.
struct FrameError: Error {
    var code: GRPCStatusCode
    var message: String
}

/// Thrown by ``withTimeout(_:_:)``.
struct TimeoutError: Error {}

/// Runs `body`, cancelling it and throwing ``TimeoutError`` after `duration`.
func withTimeout<T: Sendable>(
    _ duration: Duration,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: duration)
            throw TimeoutError()
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

final class Transport: Sendable {
    let http: HTTPClient
    /// Base URLs without a trailing slash.
    let endpoints: [String]
    let configuration: EtcdClient.Configuration
    let logger: Logger
    let auth: Authenticator?
    private let preferred = Mutex(0)
    /// Watches to wake when their endpoint fails: listener id -> (endpoint index, signal).
    private let failureListeners = Mutex<
        (next: UInt64, all: [UInt64: (index: Int, signal: AsyncStream<Void>.Continuation)])
    >((0, [:]))
    private let shutDown = Mutex(false)
    let statistics = Mutex(EtcdClient.Statistics())

    init(configuration: EtcdClient.Configuration, logger: Logger) throws(EtcdError) {
        self.configuration = configuration
        self.logger = logger
        endpoints = try configuration.normalizedEndpoints()
        var http = HTTPClient.Configuration()
        http.timeout = .init(connect: TimeAmount(min(configuration.connectTimeout, configuration.requestTimeout)))
        http.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = configuration.maxConnectionsPerEndpoint
        // Fail at once when an endpoint refuses connections, so the next one is tried, instead of
        // retrying the same endpoint until the connect timeout.
        http.connectionPool.retryConnectionEstablishment = false
        http.redirectConfiguration = .disallow
        if let tls = configuration.tls {
            try Self.applyTLS(tls, to: &http)
        }
        self.http = HTTPClient(
            eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: http,
            backgroundActivityLogger: logger)
        auth = configuration.credentials.map { Authenticator(credentials: $0) }
    }

    deinit {
        // A client dropped without shutdown(): shut the HTTP client down in the background (the
        // task keeps it alive until that is done).
        if !shutDown.withLock({ $0 }) {
            let http = self.http
            Task { try? await http.shutdown() }
        }
    }

    func shutdown() async {
        guard
            shutDown.withLock({
                let was = $0; $0 = true; return !was
            })
        else { return }
        try? await http.shutdown()
    }

    /// Loads the PEM files now, so a missing or unreadable file is an error at start-up rather
    /// than at the first request. (NIOSSL's types are reached through AsyncHTTPClient's
    /// configuration, so Etcd needs no NIOSSL product of its own.)
    private static func applyTLS(_ tls: EtcdClient.TLS, to http: inout HTTPClient.Configuration) throws(EtcdError) {
        if (tls.certificateFile == nil) != (tls.keyFile == nil) {
            throw .invalidConfiguration("a client certificate needs its key and a key its certificate")
        }
        http.tlsConfiguration = .makeClientConfiguration()
        http.tlsConfiguration?.minimumTLSVersion = .tlsv12
        do {
            if let path = tls.caFile {
                let blocks = try pemCertificates(path)
                http.tlsConfiguration?.trustRoots = .certificates(try blocks.map { try .init(bytes: $0, format: .pem) })
            }
            if let path = tls.certificateFile {
                http.tlsConfiguration?.certificateChain = try pemCertificates(path).map {
                    try .certificate(.init(bytes: $0, format: .pem))
                }
            }
            if let path = tls.keyFile {
                let key = Array(try readFile(path))
                http.tlsConfiguration?.privateKey = .privateKey(try .init(bytes: key, format: .pem))
            }
        } catch let error as EtcdError {
            throw error
        } catch {
            throw .invalidConfiguration("cannot load TLS files: \(error)")
        }
    }

    // MARK: Endpoints

    var preferredIndex: Int { preferred.withLock { $0 } }

    /// After a request succeeded on `index` having failed on `failed` (the endpoints before it):
    /// prefer `index`, unless another request already moved the preference elsewhere.
    private func prefer(_ index: Int, after failed: [Int]) {
        preferred.withLock { current in
            if failed.contains(current) { current = index }
        }
        statistics.withLock { $0.failovers += 1 }
        logger.info(
            "etcd failed over to another endpoint",
            metadata: ["etcd.endpoint": "\(endpoints[index])", "etcd.failed_endpoint": "\(endpoints[failed[0]])"])
    }

    /// A request found endpoint `index` failing: the next request starts on the next endpoint,
    /// and the watches on `index` reconnect now.
    func endpointFailed(_ index: Int, _ error: EtcdError) {
        guard endpoints.count > 1 else { return }
        let moved = preferred.withLock { current in
            guard current == index else { return false }
            current = (index + 1) % endpoints.count
            return true
        }
        if moved {
            logger.info(
                "etcd endpoint failing; preferring the next one",
                metadata: [
                    "etcd.failed_endpoint": "\(endpoints[index])",
                    "etcd.endpoint": "\(endpoints[(index + 1) % endpoints.count])", "etcd.error": "\(error)",
                ])
        }
        let signals = failureListeners.withLock { $0.all.values.filter { $0.index == index }.map(\.signal) }
        for signal in signals { signal.yield() }
    }

    /// A stream that yields when a request finds endpoint `index` failing; `stopListening(id)`
    /// when done.
    func listenForFailure(of index: Int) -> (id: UInt64, signals: AsyncStream<Void>) {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let id = failureListeners.withLock { listeners in
            let id = listeners.next
            listeners.next += 1
            listeners.all[id] = (index, continuation)
            return id
        }
        return (id, stream)
    }

    func stopListening(_ id: UInt64) {
        failureListeners.withLock { $0.all.removeValue(forKey: id) }?.signal.finish()
    }

    func count(_ update: (inout EtcdClient.Statistics) -> Void) {
        statistics.withLock { update(&$0) }
    }

    // MARK: Unary requests

    /// Sends `body` to `path` (e.g. `/kv/range`) and decodes the answer, trying every endpoint
    /// from the preferred one on. `idempotent` requests (reads) also fail over after a timeout or
    /// a broken connection.
    func call<T: WireDecodable>(
        _ path: String, _ body: String, idempotent: Bool,
        as type: T.Type = T.self
    ) async throws(EtcdError) -> T {
        try await call(path, body, idempotent: idempotent) { bytes in try decodeWire(T.self, from: bytes) }
    }

    func call<T>(
        _ path: String, _ body: String, idempotent: Bool,
        decode: (ByteBufferView) throws -> T
    ) async throws(EtcdError) -> T {
        let request = configuration.basePath + path
        var failures: [EtcdError] = []
        var failed: [Int] = []
        let first = preferredIndex
        for offset in 0..<endpoints.count {
            let index = (first + offset) % endpoints.count
            do {
                let result = try await attempt(endpoints[index], path, body, decode: decode)
                if offset > 0 { prefer(index, after: failed) }
                return result
            } catch {
                if error.error.isFailoverCandidate {
                    failed.append(index)
                    endpointFailed(index, error.error)
                }
                // Another endpoint may answer; but a write that may have been applied is not sent twice.
                guard error.error.isFailoverCandidate, error.nothingSent || idempotent else {
                    count { $0.errors += 1 }
                    throw error.error
                }
                logger.debug(
                    "etcd request failed on one endpoint",
                    metadata: [
                        "etcd.endpoint": "\(endpoints[index])", "etcd.request": "\(request)",
                        "etcd.error": "\(error.error)",
                    ])
                failures.append(error.error)
            }
        }
        count { $0.errors += 1 }
        throw .unavailable(request: request, failures: failures)
    }

    /// One request on one endpoint, authenticating first when credentials are configured, and
    /// once more if etcd says the token is no longer valid.
    private func attempt<T>(
        _ endpoint: String, _ path: String, _ body: String,
        decode: (ByteBufferView) throws -> T
    ) async throws(AttemptFailure) -> T {
        var reauthenticated = false
        while true {
            let token = try await auth?.token(on: endpoint, transport: self)
            let (status, bytes) = try await send(endpoint, path, body, token: token)
            if status == 200 {
                do {
                    return try decode(bytes.readableBytesView)
                } catch let frame as FrameError {
                    let error = EtcdError.server(
                        code: frame.code, message: frame.message,
                        request: configuration.basePath + path, endpoint: endpoint)
                    throw AttemptFailure(error: error, nothingSent: error.isServerUnavailable)
                } catch {
                    throw AttemptFailure(error: malformed(error, bytes, path, endpoint), nothingSent: false)
                }
            }
            let error = serverError(status: status, bytes, path, endpoint)
            if let auth, !reauthenticated, error.needsAuthentication {
                reauthenticated = true
                await auth.invalidate(token)
                logger.info(
                    "etcd token rejected, authenticating again",
                    metadata: ["etcd.endpoint": "\(endpoint)", "etcd.error": "\(error)"])
                continue
            }
            throw AttemptFailure(error: error, nothingSent: error.isServerUnavailable)
        }
    }

    /// POSTs `body` and collects the whole answer, within the request timeout.
    func send(
        _ endpoint: String, _ path: String, _ body: String,
        token: String?
    ) async throws(AttemptFailure) -> (status: UInt, body: ByteBuffer) {
        var prepared = makeRequest(endpoint, path, token: token)
        prepared.body = .bytes(ByteBuffer(string: body))
        let request = prepared
        count { $0.requests += 1 }
        let timeout = configuration.requestTimeout
        let http = self.http
        do {
            return try await withTimeout(timeout) {
                let response = try await http.execute(request, timeout: TimeAmount(timeout))
                let body = try await response.body.collect(upTo: 256 << 20)
                return (response.status.code, body)
            }
        } catch {
            throw classify(error, configuration.basePath + path, endpoint)
        }
    }

    // MARK: Streams

    /// Opens a streaming request (watch, keepalive) and returns the answer once its head arrived
    /// with status 200; the head must arrive within the request timeout.
    func open(
        _ endpoint: String, _ path: String, body: HTTPClientRequest.Body, token: String?,
        requireLeader: Bool = false
    ) async throws(AttemptFailure) -> HTTPClientResponse {
        var request = makeRequest(endpoint, path, token: token)
        request.body = body
        // gRPC metadata `hasleader: true` (the gateway turns `Grpc-Metadata-*` headers into
        // metadata), as etcd's own client sends on watches: a member that has lost its leader,
        // being cut off from the others, then ends the stream ("etcdserver: no leader") instead
        // of keeping it open and silent while the rest of the cluster moves on.
        if requireLeader { request.headers.add(name: "Grpc-Metadata-hasleader", value: "true") }
        // Go's HTTP/1.1 server, on the handler's first write, reads the rest of an unread request
        // body before it sends the response head, unless it answered `100 Continue`: without
        // this header a body that stays open (a watch) would never get an answer.
        request.headers.add(name: "Expect", value: "100-continue")
        count { $0.requests += 1 }
        let timeout = configuration.requestTimeout
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: TimeAmount(timeout))
        } catch {
            throw classify(error, configuration.basePath + path, endpoint)
        }
        if response.status.code == 200 { return response }
        let status = response.status.code
        do {
            let bytes = try await withTimeout(timeout) { try await response.body.collect(upTo: 1 << 20) }
            let error = serverError(status: status, bytes, path, endpoint)
            throw AttemptFailure(error: error, nothingSent: error.isServerUnavailable)
        } catch let failure as AttemptFailure {
            throw failure
        } catch {
            throw classify(error, configuration.basePath + path, endpoint)
        }
    }

    private func makeRequest(_ endpoint: String, _ path: String, token: String?) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: endpoint + configuration.basePath + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        // etcd wants the bare token, not "Bearer <token>".
        if let token { request.headers.add(name: "Authorization", value: token) }
        return request
    }

    // MARK: Errors

    /// The error of a non-200 answer: etcd's JSON error if there is one.
    func serverError(status: UInt, _ bytes: ByteBuffer, _ path: String, _ endpoint: String) -> EtcdError {
        let request = configuration.basePath + path
        if let wire = try? decodeWire(ErrorWire.self, from: bytes.readableBytesView), wire.code.rawValue != 0 {
            return .server(code: wire.code, message: wire.message, request: request, endpoint: endpoint)
        }
        let text = String(decoding: bytes.readableBytesView.prefix(200), as: UTF8.self)
        // Not etcd's JSON (a proxy, or not an etcd endpoint at all): a failure of the endpoint.
        return .connection(reason: "HTTP \(status): \(text)", request: request, endpoint: endpoint)
    }

    func malformed(_ error: any Error, _ bytes: ByteBuffer, _ path: String, _ endpoint: String) -> EtcdError {
        let text = String(decoding: bytes.readableBytesView.prefix(200), as: UTF8.self)
        return .malformedResponse(
            reason: "\(error) in \(text)", request: configuration.basePath + path,
            endpoint: endpoint)
    }

    /// Maps what AsyncHTTPClient, NIO and NIOSSL throw to an ``EtcdError``, and says whether the
    /// request can have reached etcd.
    func classify(_ error: any Error, _ request: String, _ endpoint: String) -> AttemptFailure {
        if let failure = error as? AttemptFailure { return failure }
        if let error = error as? EtcdError { return AttemptFailure(error: error, nothingSent: false) }
        let timeout = AttemptFailure(
            error: .timeout(
                after: configuration.requestTimeout, request: request,
                endpoint: endpoint), nothingSent: false)
        /// The connection failed before the request was written (`sent: false`) or after.
        func connection(_ reason: String, sent: Bool) -> AttemptFailure {
            AttemptFailure(error: .connection(reason: reason, request: request, endpoint: endpoint), nothingSent: !sent)
        }
        if error is TimeoutError { return timeout }
        if error is CancellationError || Task.isCancelled {
            return AttemptFailure(error: .cancelled, nothingSent: false)
        }
        let typeName = String(reflecting: type(of: error))
        let text = String(describing: error)
        if typeName.hasPrefix("NIOSSL.") {
            let reason =
                text.contains("CERTIFICATE_VERIFY_FAILED")
                ? "the server's certificate is not signed by a trusted CA (CERTIFICATE_VERIFY_FAILED)" : text
            return AttemptFailure(error: .tls(reason: reason, request: request, endpoint: endpoint), nothingSent: true)
        }
        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout: return connection("connect timed out", sent: false)
            case .deadlineExceeded, .readTimeout: return timeout
            case .cancelled: return AttemptFailure(error: .cancelled, nothingSent: false)
            case .remoteConnectionClosed: return connection("closed by the server", sent: true)
            default: break
            }
        }
        // NIOPosix's NIOConnectionError (every address failed to connect), or an IOError from
        // connect(2): the request was never written.
        if typeName.hasSuffix("NIOConnectionError") {
            return connection(text.contains("Connection refused") ? "connection refused" : text, sent: false)
        }
        if case .connectTimeout? = error as? ChannelError { return connection("connect timed out", sent: false) }
        if let io = error as? IOError, [ECONNREFUSED, ENETUNREACH, EHOSTUNREACH].contains(io.errnoCode) {
            let reason = io.errnoCode == ECONNREFUSED ? "connection refused" : String(cString: strerror(io.errnoCode))
            return connection(reason, sent: false)
        }
        return connection(text, sent: true)
    }
}

extension EtcdError {
    /// A failure of the endpoint rather than an answer to the request: another endpoint may do.
    var isFailoverCandidate: Bool {
        switch self {
        case .connection, .tls, .timeout: true
        case .server(let code, _, _, _): code == .unavailable
        default: false
        }
    }

    /// etcd answered Unavailable without having applied the request. Not so for "etcdserver:
    /// request timed out" (also Unavailable): the proposal may yet be committed, so a write that
    /// got it is not sent again elsewhere (etcd's Go client does not retry it either).
    var isServerUnavailable: Bool {
        if case .server(.unavailable, let message, _, _) = self { return !message.contains("timed out") }
        return false
    }

    /// etcd rejected or missed the token: `invalid auth token` (expired simple token),
    /// `user name is empty` (no token while auth is on), or an auth store revision that moved on.
    var needsAuthentication: Bool {
        guard case .server(let code, let message, _, _) = self else { return false }
        return Self.isAuthenticationProblem(code: code, message: message)
    }

    static func isAuthenticationProblem(code: GRPCStatusCode, message: String) -> Bool {
        code == .unauthenticated || message.contains("invalid auth token") || message.contains("user name is empty")
            || message.contains("auth store is old")
    }
}

/// The DER-in-PEM blocks of a certificate file, each with its BEGIN and END lines.
func pemCertificates(_ path: String) throws -> [[UInt8]] {
    let text = String(decoding: try readFile(path), as: UTF8.self)
    let begin = "-----BEGIN CERTIFICATE-----", end = "-----END CERTIFICATE-----"
    var blocks: [[UInt8]] = []
    var rest = text[...]
    while let start = rest.firstRange(of: begin), let stop = rest[start.upperBound...].firstRange(of: end) {
        blocks.append(Array(rest[start.lowerBound..<stop.upperBound].utf8))
        rest = rest[stop.upperBound...]
    }
    guard !blocks.isEmpty else {
        throw EtcdError.invalidConfiguration("\(path) holds no PEM certificate")
    }
    return blocks
}

func readFile(_ path: String) throws -> Data {
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw EtcdError.invalidConfiguration("cannot read \(path): \(error)")
    }
}
