// Leases (`/v3/lease/*`). etcd deletes the keys attached to a lease when it expires or is revoked,
// and watchers see a DELETE for each. TTLs are whole seconds; etcd raises small ones to its minimum
// (about 2 s on a default single node).
//
// Keepalive is a streaming method on the gateway, but one request object gives exactly one answer
// and the stream ends with the request body, so each refresh is one POST answered by one
// `{"result":{...}}` line. An answer without TTL means the lease is gone.

import NIOCore

extension EtcdClient {
    /// Grants a lease of `ttl` (rounded up to whole seconds); `id` nil lets etcd choose the ID.
    // etcdctl lease grant <ttl>
    public func grantLease(ttl: Duration, id: LeaseID? = nil) async throws(EtcdError) -> LeaseGrant {
        let (seconds, attoseconds) = ttl.components
        let whole = seconds + (attoseconds > 0 ? 1 : 0)
        let wire = try await transport.call(
            "/lease/grant", EtcdRequest.leaseGrant(ttlSeconds: whole, id: id),
            idempotent: false, as: LeaseGrantWire.self)
        guard wire.error.isEmpty else {
            throw .server(
                code: .unknown, message: wire.error, request: configuration.basePath + "/lease/grant",
                endpoint: currentEndpoint)
        }
        return wire.grant
    }

    /// Refreshes the lease once and returns its new TTL; throws ``EtcdError/leaseExpired(_:)``
    /// when the lease is gone.
    // etcdctl lease keep-alive --once <id>
    public func keepAliveOnce(_ id: LeaseID) async throws(EtcdError) -> Duration {
        // An error line in the answer ({"error":{"grpc_code":14,"message":"etcdserver: no leader"}})
        // is thrown from the decoder as a FrameError, so that the transport fails over as for any
        // other Unavailable answer.
        let result = try await transport.call("/lease/keepalive", EtcdRequest.lease(id), idempotent: true) { bytes in
            switch try firstFrame(bytes) {
            case .error(let error): throw FrameError(code: error.code, message: error.message)
            case .result(let result): return result
            }
        }
        guard result.ttl > 0 else { throw .leaseExpired(id) }
        return .seconds(result.ttl)
    }

    /// Keeps the lease alive while the sequence is iterated: the first element comes at once,
    /// then one every `interval` (default: a third of the last TTL), each the TTL after the
    /// refresh. Connection failures are retried with the configured backoff; the sequence throws
    /// ``EtcdError/leaseExpired(_:)`` once etcd says the lease is gone, and ends when the task is
    /// cancelled.
    // etcdctl lease keep-alive <id>
    public func keepAlive(_ id: LeaseID, interval: Duration? = nil) -> LeaseKeepAlive {
        LeaseKeepAlive(client: self, id: id, interval: interval)
    }

    /// Revokes the lease, deleting its keys. An unknown lease fails with
    /// `EtcdError.server(.notFound, ...)` (``EtcdError/isLeaseNotFound``).
    // etcdctl lease revoke <id>
    public func revokeLease(_ id: LeaseID) async throws(EtcdError) {
        _ = try await transport.call("/lease/revoke", EtcdRequest.lease(id), idempotent: false, as: HeaderOnlyWire.self)
    }

    /// The lease's remaining and granted TTL, and its keys when `keys` is true. An unknown or
    /// expired lease is not an error: its `remaining` is `nil`.
    // etcdctl lease timetolive <id> [--keys]
    public func timeToLive(_ id: LeaseID, keys: Bool = false) async throws(EtcdError) -> LeaseTimeToLive {
        try await transport.call(
            "/lease/timetolive", EtcdRequest.timeToLive(id, keys: keys), idempotent: true,
            as: LeaseTimeToLive.self)
    }
}

/// The first line of a keepalive answer.
private func firstFrame(_ bytes: ByteBufferView) throws -> StreamFrame<LeaseKeepAliveWire> {
    var lines = LineSplitter()
    guard let line = lines.append(bytes).first ?? lines.finish() else {
        throw WireDecodingError("empty keepalive answer")
    }
    return try decodeWire(StreamFrame<LeaseKeepAliveWire>.self, from: line)
}

/// The TTLs of a lease kept alive; see ``EtcdClient/keepAlive(_:interval:)``.
public struct LeaseKeepAlive: AsyncSequence, Sendable {
    public typealias Element = Duration
    public typealias Failure = EtcdError

    let client: EtcdClient
    let id: LeaseID
    let interval: Duration?

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(client: client, id: id, interval: interval)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let client: EtcdClient
        let id: LeaseID
        let interval: Duration?
        var lastTTL: Duration?
        var finished = false

        public mutating func next() async throws(EtcdError) -> Duration? {
            guard !finished else { return nil }
            if let lastTTL {
                do {
                    try await Task.sleep(for: interval ?? lastTTL / 3)
                } catch {
                    finished = true
                    return nil
                }
            }
            var failures = 0
            while true {
                do {
                    let ttl = try await client.keepAliveOnce(id)
                    lastTTL = ttl
                    return ttl
                } catch {
                    switch error {
                    case .cancelled:
                        finished = true
                        return nil
                    case .unavailable, .timeout, .connection, .tls, .server(.unavailable, _, _, _):
                        failures += 1
                        let delay = client.configuration.reconnectBackoff.delay(afterFailures: failures)
                        client.transport.logger.info(
                            "etcd lease keepalive failed, retrying",
                            metadata: [
                                "etcd.lease": "\(id)", "etcd.error": "\(error)",
                                "etcd.delay": "\(delay.logText)",
                            ])
                        do {
                            try await Task.sleep(for: delay)
                        } catch {
                            finished = true
                            return nil
                        }
                    default:
                        finished = true
                        throw error
                    }
                }
            }
        }
    }
}
