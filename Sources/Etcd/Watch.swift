// Watches (`POST /v3/watch`): a long-lived stream of `{"result":{...}}` lines.
//
// The request body stays open: the first line creates the watch; later lines are progress
// requests, sent when the stream has been quiet for a while, whose answers prove the connection is
// alive (a half-open TCP connection would otherwise hang the watch forever).
//
// Resuming: after a disconnect the watch is created again from the last delivered event's
// mod_revision + 1, so every event is delivered once. Not header.revision + 1: etcd sends the
// catch-up of a lagging watcher in chunks stamped with the current revision. A watch "from now"
// takes its start from the `created` answer's header revision + 1, so events made while it
// reconnects are not lost either.
//
// Failover: a watch starts on the client's preferred endpoint. When its stream breaks it reports
// the endpoint as failing (see Transport) and reconnects to the preferred endpoint, or to the next
// one when the preference is still the endpoint that failed. It also reconnects at once when
// another request finds its endpoint failing: a member cut off the network leaves the stream open
// and silent, and the liveness check alone would notice only after a ping interval. The watch asks
// etcd to end it when the member loses its leader (`hasleader`), so a member cut off from the
// others but not from us does not keep it waiting for events that never come.
//
// Compaction: when the resume revision has been compacted away, etcd cancels the watch with
// `compact_revision`. The sequence then yields `.compacted` and ends: the caller re-lists (the
// events in between are gone) and watches again from the list's revision + 1.

import AsyncHTTPClient
import Logging
import NIOCore
import Synchronization

/// What a watch delivers.
public enum WatchUpdate: Sendable {
    /// Changes, in revision order; `revision` is the store's revision when they were sent.
    case events([WatchEvent], revision: Int64)
    /// The history the watch needed is gone: etcd compacted up to `revision`. The sequence ends
    /// after this; list the range again and start a new watch from the list's revision + 1.
    case compacted(revision: Int64)
    /// The stream broke (server restart, network, timeout). The watch reconnects by itself, with
    /// backoff, and resumes after the last event delivered; this is for logs and metrics.
    case interrupted(EtcdError)
}

extension EtcdClient {
    /// Watches the keys in `range` from `fromRevision` (0: changes after now) until the task
    /// iterating it is cancelled or the iteration stops. It survives disconnects and fails over
    /// between endpoints, and throws only what retrying cannot fix: a refused password, a watch
    /// the server cancels (permission denied).
    // etcdctl watch <key> [--prefix] [--rev <revision>] [--prev-kv]
    public func watch(_ range: KeyRange, fromRevision: Int64 = 0, prevKV: Bool = false) -> EtcdWatch {
        EtcdWatch(transport: transport, range: range, startRevision: fromRevision, prevKV: prevKV)
    }
}

/// A watch; see ``EtcdClient/watch(_:fromRevision:prevKV:)``. Each iterator opens its own stream.
public struct EtcdWatch: AsyncSequence, Sendable {
    public typealias Element = WatchUpdate
    public typealias Failure = EtcdError

    let transport: Transport
    let range: KeyRange
    let startRevision: Int64
    let prevKV: Bool

    public func makeAsyncIterator() -> AsyncIterator {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WatchUpdate.self)
        let session = WatchSession(transport: transport, range: range, startRevision: startRevision, prevKV: prevKV)
        let task = Task { await session.run(continuation) }
        continuation.onTermination = { _ in task.cancel() }
        return AsyncIterator(base: stream.makeAsyncIterator())
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: AsyncThrowingStream<WatchUpdate, any Error>.AsyncIterator

        public mutating func next() async throws(EtcdError) -> WatchUpdate? {
            do {
                return try await base.next()
            } catch let error as EtcdError {
                throw error
            } catch {
                throw .cancelled
            }
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(EtcdError) -> WatchUpdate? {
            do {
                return try await base.next(isolation: actor)
            } catch let error as EtcdError {
                throw error
            } catch {
                throw .cancelled
            }
        }
    }
}

/// The connection loop behind one watch iterator.
final class WatchSession: Sendable {
    private struct State {
        /// The revision to (re)create the watch from; 0 until the first `created` of a watch
        /// "from now".
        var next: Int64
        var created = false
        /// Lines received on the current stream, for the liveness check.
        var lines = 0
    }

    private enum Outcome {
        case compacted(Int64)
        case interrupted(EtcdError, wasCreated: Bool)
        /// Another request found the endpoint failing.
        case endpointFailed
        case fatal(EtcdError)
        case cancelled
    }

    private let transport: Transport
    private let range: KeyRange
    private let prevKV: Bool
    private let state: Mutex<State>
    private let logger: Logger
    private let request: String

    init(transport: Transport, range: KeyRange, startRevision: Int64, prevKV: Bool) {
        self.transport = transport
        self.range = range
        self.prevKV = prevKV
        state = Mutex(State(next: startRevision))
        var logger = transport.logger
        logger[metadataKey: "etcd.watch.range"] = "\(range)"
        self.logger = logger
        request = transport.configuration.basePath + "/watch"
    }

    func run(_ out: AsyncThrowingStream<WatchUpdate, any Error>.Continuation) async {
        var failures = 0
        var index = transport.preferredIndex
        while !Task.isCancelled {
            let endpoint = transport.endpoints[index]
            switch await connect(index, out) {
            case .compacted(let revision):
                logger.info(
                    "etcd watch fell behind a compaction",
                    metadata: ["etcd.endpoint": "\(endpoint)", "etcd.revision": "\(revision)"])
                out.yield(.compacted(revision: revision))
                out.finish()
                return
            case .fatal(let error):
                transport.count { $0.errors += 1 }
                out.finish(throwing: error)
                return
            case .cancelled:
                out.finish()
                return
            case .endpointFailed:
                failures = 1
                transport.count { $0.watchReconnects += 1 }
                logger.info(
                    "etcd watch leaving an endpoint another request found failing",
                    metadata: ["etcd.endpoint": "\(endpoint)", "etcd.revision": "\(state.withLock { $0.next })"])
                out.yield(
                    .interrupted(
                        .connection(
                            reason: "another request found the endpoint failing",
                            request: request, endpoint: endpoint)))
                index = nextEndpoint(after: index)
            case .interrupted(let error, let wasCreated):
                failures = wasCreated ? 1 : failures + 1
                transport.count { $0.watchReconnects += 1 }
                if error.isFailoverCandidate { transport.endpointFailed(index, error) }
                index = nextEndpoint(after: index)
                let delay = transport.configuration.reconnectBackoff.delay(afterFailures: failures)
                let next = state.withLock { $0.next }
                logger.info(
                    "etcd watch interrupted, reconnecting",
                    metadata: [
                        "etcd.endpoint": "\(endpoint)", "etcd.error": "\(error)",
                        "etcd.revision": "\(next)", "etcd.delay": "\(delay.logText)",
                    ])
                out.yield(.interrupted(error))
                do {
                    try await Task.sleep(for: delay)
                } catch {
                    break
                }
            }
        }
        out.finish()
    }

    /// Where to reconnect after `failed`: the preferred endpoint, unless that is still `failed`.
    private func nextEndpoint(after failed: Int) -> Int {
        let preferred = transport.preferredIndex
        return preferred != failed ? preferred : (failed + 1) % transport.endpoints.count
    }

    /// One stream: create the watch, deliver what comes, until it breaks.
    private func connect(
        _ index: Int,
        _ out: AsyncThrowingStream<WatchUpdate, any Error>.Continuation
    ) async -> Outcome {
        let endpoint = transport.endpoints[index]
        let token: String?
        do {
            token = try await transport.auth?.token(on: endpoint, transport: transport)
        } catch {
            return outcome(of: error)
        }
        let next = state.withLock { state in
            state.created = false
            state.lines = 0
            return state.next
        }
        let (body, writer) = AsyncStream.makeStream(of: ByteBuffer.self)
        defer { writer.finish() }
        writer.yield(ByteBuffer(string: EtcdRequest.watchCreate(range, startRevision: next, prevKV: prevKV) + "\n"))
        let response: HTTPClientResponse
        do {
            response = try await transport.open(
                endpoint, "/watch", body: .stream(body, length: .unknown), token: token,
                requireLeader: true)
        } catch {
            if error.error.needsAuthentication { await transport.auth?.invalidate(token) }
            return outcome(of: error)
        }
        logger.debug("etcd watch stream open", metadata: ["etcd.endpoint": "\(endpoint)", "etcd.revision": "\(next)"])
        let failure = transport.listenForFailure(of: index)
        defer { transport.stopListening(failure.id) }
        do {
            return try await withThrowingTaskGroup(of: Outcome.self) { group in
                group.addTask { try await self.read(response.body, endpoint, token: token, out) }
                group.addTask { try await self.checkAlive(writer, endpoint) }
                group.addTask {
                    for await _ in failure.signals { return .endpointFailed }
                    // Cancelled with the other two: stay out of the way until the group ends.
                    while true { try await Task.sleep(for: .seconds(3600)) }
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch {
            if Task.isCancelled { return .cancelled }
            return outcome(of: transport.classify(error, request, endpoint))
        }
    }

    private func outcome(of failure: AttemptFailure) -> Outcome {
        switch failure.error {
        case .cancelled: .cancelled
        case .authenticationFailed, .invalidConfiguration: .fatal(failure.error)
        case .server(let code, _, _, _) where code != .unavailable && !failure.error.needsAuthentication:
            .fatal(failure.error)
        default: .interrupted(failure.error, wasCreated: isCreated)
        }
    }

    /// Whether the current stream's watch has been created.
    private var isCreated: Bool { state.withLock { $0.created } }

    /// Reads the stream's lines until it ends or says something that ends this connection.
    private func read(
        _ body: HTTPClientResponse.Body, _ endpoint: String, token: String?,
        _ out: AsyncThrowingStream<WatchUpdate, any Error>.Continuation
    ) async throws -> Outcome {
        var lines = LineSplitter()
        for try await chunk in body {
            for line in lines.append(chunk.readableBytesView) {
                let frame: StreamFrame<WatchResponseWire>
                do {
                    frame = try decodeWire(StreamFrame<WatchResponseWire>.self, from: line)
                } catch {
                    let text = String(decoding: line.prefix(200), as: UTF8.self)
                    let error = EtcdError.malformedResponse(
                        reason: "\(error) in \(text)", request: request,
                        endpoint: endpoint)
                    return .interrupted(error, wasCreated: isCreated)
                }
                switch frame {
                case .error(let error):
                    // e.g. {"grpc_code":14,"message":"transport is closing"} when etcd shuts down.
                    return .interrupted(
                        .server(
                            code: error.code, message: error.message, request: request,
                            endpoint: endpoint), wasCreated: isCreated)
                case .result(let answer):
                    if let outcome = await handle(answer, endpoint, token: token, out) { return outcome }
                }
            }
        }
        return .interrupted(
            .connection(
                reason: "the server ended the watch stream", request: request,
                endpoint: endpoint), wasCreated: isCreated)
    }

    /// Applies one answer; returns an outcome when it ends the connection.
    private func handle(
        _ answer: WatchResponseWire, _ endpoint: String, token: String?,
        _ out: AsyncThrowingStream<WatchUpdate, any Error>.Continuation
    ) async -> Outcome? {
        let wasCreated = state.withLock { state in
            state.lines += 1
            return state.created
        }
        if answer.compactRevision != 0 {
            return .compacted(answer.compactRevision)
        }
        if answer.canceled {
            let error = EtcdError.watchCanceled(reason: answer.cancelReason, endpoint: endpoint)
            // A token that expired between requests: a new one, then the same revision again.
            if transport.auth != nil, EtcdError.isAuthenticationProblem(code: .ok, message: answer.cancelReason) {
                await transport.auth?.invalidate(token)
                return .interrupted(error, wasCreated: wasCreated)
            }
            return .fatal(error)
        }
        if answer.created {
            state.withLock { state in
                state.created = true
                if state.next == 0 { state.next = answer.header.revision + 1 }
            }
            transport.count { $0.watchesCreated += 1 }
        }
        if let last = answer.events.last {
            state.withLock { $0.next = last.kv.modRevision + 1 }
            out.yield(.events(answer.events, revision: answer.header.revision))
        }
        return nil
    }

    /// Fails the connection when the watch is not created within the request timeout, or when
    /// the stream stays silent for a ping interval and then does not answer a progress request
    /// within the request timeout.
    private func checkAlive(
        _ writer: AsyncStream<ByteBuffer>.Continuation,
        _ endpoint: String
    ) async throws -> Outcome {
        let timeout = transport.configuration.requestTimeout
        try await Task.sleep(for: timeout)
        guard isCreated else {
            throw EtcdError.timeout(after: timeout, request: request, endpoint: endpoint)
        }
        var seen = state.withLock { $0.lines }
        while true {
            try await Task.sleep(for: transport.configuration.watchPingInterval)
            let now = state.withLock { $0.lines }
            if now != seen {
                seen = now
                continue
            }
            writer.yield(ByteBuffer(string: EtcdRequest.watchProgress + "\n"))
            try await Task.sleep(for: timeout)
            seen = state.withLock { $0.lines }
            if seen == now {
                throw EtcdError.timeout(after: timeout, request: request, endpoint: endpoint)
            }
        }
    }
}

extension GRPCStatusCode {
    static let ok = Self(rawValue: 0)
}
