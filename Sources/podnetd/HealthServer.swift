// podnetd's HTTP endpoints, as flanneld's (PR #2523) plus metrics:
//   GET /healthz  200 "podnetd is running"
//   GET /readyz   503 "podnetd is not ready yet" until the subnet file is written, then 200
//   GET /metrics  Prometheus text format

import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

/// Set once the subnet file has been written; read by /readyz.
final class Readiness: Sendable {
    private let ready = Atomic<Bool>(false)
    func markReady() { ready.store(true, ordering: .releasing) }
    var isReady: Bool { ready.load(ordering: .acquiring) }
}

struct HealthServer: Service {
    let host: String
    let port: Int
    let readiness: Readiness
    let registry: PrometheusCollectorRegistry
    let logger: Logger

    func run() async throws {
        let readiness = self.readiness, registry = self.registry
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(HealthHandler(readiness: readiness, registry: registry))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("serving /healthz, /readyz and /metrics", metadata: ["http.address": "\(host):\(port)"])
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
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
        let (status, body, type): (HTTPResponseStatus, [UInt8], String) = switch (head.method, head.uri) {
        case (.GET, "/healthz"): (.ok, Array("podnetd is running\n".utf8), "text/plain")
        case (.GET, "/readyz"):
            readiness.isReady ? (.ok, Array("podnetd is ready\n".utf8), "text/plain")
                : (.serviceUnavailable, Array("podnetd is not ready yet\n".utf8), "text/plain")
        case (.GET, "/metrics"): (.ok, registry.emitToBuffer(), "text/plain; version=0.0.4")
        default: (.notFound, Array("not found\n".utf8), "text/plain")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
    }
}
