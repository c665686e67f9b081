// The node agent's HTTP endpoints, as flanneld's (PR #2523) plus metrics:
//   GET /healthz  200 "podnetd is running"
//   GET /readyz   503 "podnetd is not ready yet" until the subnet file is written, then 200
//   GET /metrics  Prometheus text format
//
// The server must not be a way to starve the daemon: every connection costs a descriptor and
// buffers, and a daemon at its descriptor limit can no longer reconnect its etcd watch. So:
// - at most `maxConnections` connections are open; one more closes the oldest (a client that
//   sends its request at once is answered long before it becomes the oldest, an idle flood is
//   what gets closed);
// - a connection that sends nothing for `idleTimeout` is closed, and one that has not been
//   answered `headerTimeout` after it was accepted (a request head sent byte by byte) too;
// - each connection gets one answer and is closed (`Connection: close`);
// - when the last connection of a busy period is gone, glibc is asked to give its free memory
//   back to the kernel (malloc_trim): otherwise the peak of a flood stays in the RSS for good.

import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Set once the subnet file has been written; read by /readyz.
public final class Readiness: Sendable {
    private let ready = Atomic<Bool>(false)
    public init() {}
    public func markReady() { ready.store(true, ordering: .releasing) }
    public var isReady: Bool { ready.load(ordering: .acquiring) }
}

public struct HealthServer {
    public struct Limits: Sendable {
        /// Connections open at once; one more closes the oldest.
        public var maxConnections = 64
        /// A connection that sends nothing for this long is closed.
        public var idleTimeout: Duration = .seconds(5)
        /// A connection not answered this long after it was accepted is closed.
        public var headerTimeout: Duration = .seconds(10)

        public init(
            maxConnections: Int = 64, idleTimeout: Duration = .seconds(5), headerTimeout: Duration = .seconds(10)
        ) {
            self.maxConnections = maxConnections; self.idleTimeout = idleTimeout; self.headerTimeout = headerTimeout
        }
    }

    public let host: String
    /// The port to listen on; 0 for any free one (`Listening.port` says which).
    public let port: Int
    public let readiness: Readiness
    public let registry: PrometheusCollectorRegistry
    public var limits = Limits()
    public let logger: Logger

    public init(
        host: String, port: Int, readiness: Readiness, registry: PrometheusCollectorRegistry,
        limits: Limits = Limits(), logger: Logger
    ) {
        self.host = host; self.port = port; self.readiness = readiness; self.registry = registry
        self.limits = limits; self.logger = logger
    }

    /// Binds the listening socket and starts answering. The returned service keeps it open until
    /// the graceful shutdown. podnetd binds it before anything else, as flanneld does: /healthz
    /// answers, /readyz says "not ready" and /metrics shows the config checks while podnetd still
    /// waits for a valid network config.
    public func start() async throws -> Listening {
        let readiness = self.readiness, registry = self.registry, limits = self.limits
        let connections = ConnectionTable(limit: limits.maxConnections, logger: logger)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.backlog, value: 128)
            .childChannelInitializer { channel in
                connections.add(channel)
                do {
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: TimeAmount(limits.idleTimeout)),
                        ConnectionGuard(table: connections, headerTimeout: TimeAmount(limits.headerTimeout)),
                    ])
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        HealthHandler(readiness: readiness, registry: registry))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            .bind(host: host, port: port).get()
        logger.info(
            "serving /healthz, /readyz and /metrics",
            metadata: [
                "http.address": "\(host):\(port)", "http.max_connections": "\(limits.maxConnections)",
                "http.idle_timeout": "\(limits.idleTimeout)", "http.header_timeout": "\(limits.headerTimeout)",
            ])
        return Listening(channel: channel)
    }

    /// The bound server as a service of podnetd's group: closed on graceful shutdown.
    public struct Listening: Service {
        let channel: any Channel

        /// The port the server listens on.
        public var port: Int? { channel.localAddress?.port }

        public func run() async throws {
            try await withGracefulShutdownHandler {
                try await channel.closeFuture.get()
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        }
    }
}

/// The open connections, oldest first, and the cap on their number.
final class ConnectionTable: Sendable {
    private struct State {
        var open: [UInt64: any Channel] = [:]
        var nextID: UInt64 = 0
        /// Connections accepted since memory was last trimmed.
        var acceptedSinceTrim = 0
        var evicted = 0
    }

    private let limit: Int
    private let state = Mutex(State())
    private let logger: Logger
    /// Trimming after a handful of probes is not worth a call; after a flood it is.
    private static let trimAfter = 256

    init(limit: Int, logger: Logger) {
        self.limit = max(1, limit)
        self.logger = logger
    }

    /// Registers a new connection; closes the oldest ones beyond the limit.
    func add(_ channel: any Channel) {
        let (victims, evicted): ([any Channel], Int) = state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.open[id] = channel
            s.acceptedSinceTrim += 1
            var victims: [any Channel] = []
            while s.open.count > limit, let oldest = s.open.keys.min() {
                victims.append(s.open.removeValue(forKey: oldest)!)
                s.evicted += 1
            }
            return (victims, s.evicted)
        }
        // The first eviction, then one line per thousand: a flood must not flood the log too.
        if !victims.isEmpty && (evicted == victims.count || evicted / 1000 != (evicted - victims.count) / 1000) {
            logger.warning(
                "too many HTTP connections; closing the oldest",
                metadata: ["http.max_connections": "\(limit)", "http.evicted_total": "\(evicted)"])
        }
        for v in victims { v.close(promise: nil) }
    }

    /// Forgets a closed connection; trims the heap when it was the last one after a busy period.
    func remove(_ channel: any Channel) {
        let trim = state.withLock { s -> Bool in
            if let id = s.open.first(where: { $0.value === channel })?.key { s.open.removeValue(forKey: id) }
            guard s.open.isEmpty, s.acceptedSinceTrim >= Self.trimAfter else { return false }
            s.acceptedSinceTrim = 0
            return true
        }
        if trim {
            // On the event loop's thread, never on the cooperative pool; it takes milliseconds.
            _ = mallocTrim?(0)
        }
    }
}

/// glibc's malloc_trim(3), looked up at run time: Swift's Glibc module leaves out malloc.h.
private let mallocTrim: (@convention(c) (Int) -> Int32)? = {
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
}()

/// Closes its connection when it is idle (IdleStateHandler's read event) or when the header
/// deadline passes, and keeps the connection table up to date.
private final class ConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private let table: ConnectionTable
    private let headerTimeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(table: ConnectionTable, headerTimeout: TimeAmount) {
        self.table = table
        self.headerTimeout = headerTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: headerTimeout) { bound.value.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        table.remove(context.channel)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .read? = event as? IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A malformed request (the HTTP decoder's error) or a reset: nothing to answer.
        context.close(promise: nil)
    }
}

private final class HealthHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let readiness: Readiness
    let registry: PrometheusCollectorRegistry

    init(readiness: Readiness, registry: PrometheusCollectorRegistry) {
        self.readiness = readiness
        self.registry = registry
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let (status, body, type): (HTTPResponseStatus, [UInt8], String) =
            switch (head.method, head.uri) {
            case (.GET, "/healthz"): (.ok, Array("podnetd is running\n".utf8), "text/plain")
            case (.GET, "/readyz"):
                readiness.isReady
                    ? (.ok, Array("podnetd is ready\n".utf8), "text/plain")
                    : (.serviceUnavailable, Array("podnetd is not ready yet\n".utf8), "text/plain")
            case (.GET, "/metrics"): (.ok, registry.emitToBuffer(), "text/plain; version=0.0.4")
            default: (.notFound, Array("not found\n".utf8), "text/plain")
            }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
    }
}
