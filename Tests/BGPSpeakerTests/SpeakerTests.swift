// Two speakers in this process over loopback: an iBGP session comes up, an UPDATE crosses it, an
// administrative stop takes it down; a connection that sends garbage after its OPEN gets the
// NOTIFICATION and is closed while the speaker keeps listening. No root: 127.0.0.1 only.

import Addressing
import BGP
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import BGPSpeaker

/// The next event of `speaker` that `match` accepts, within `seconds` (a bound, not a wait).
func next<T: Sendable>(
    _ speaker: BGPSpeaker, within seconds: Double = 10, _ match: @escaping @Sendable (BGPPeerEvent) -> T?
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            for await (_, event) in speaker.events { if let t = match(event) { return t } }
            return nil
        }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        let first = try await group.next() ?? nil
        group.cancelAll()
        guard let first else { throw TimedOut() }
        return first
    }
}

struct TimedOut: Error {}

func config(id: UInt32, passive: Bool = false) -> BGPSessionConfiguration {
    var c = BGPSessionConfiguration(localAS: 64512, peerAS: 64512, routerID: id)
    c.holdTime = 9
    c.passive = passive
    return c
}

@Suite struct BGPSpeakerTests {
    let logger = Logger(label: "bgp-test")

    @Test func aSessionComesUpCarriesAnUpdateAndGoesDownOnStop() async throws {
        let a = BGPSpeaker(logger: logger), b = BGPSpeaker(logger: logger)
        let port = try await a.listen(host: "127.0.0.1", port: 0)
        a.addPeer(config(id: 0x0a00_0001, passive: true), address: try SocketAddress(ipAddress: "127.0.0.1", port: 179))
        b.addPeer(config(id: 0x0a00_0002), address: try SocketAddress(ipAddress: "127.0.0.1", port: port))
        let negotiated = try await next(b) { if case .established(let n) = $0 { n } else { nil } }
        #expect(negotiated.holdTime == 9 && negotiated.peerRouterID == 0x0a00_0001)
        _ = try await next(a) { if case .established = $0 { true } else { nil } }

        var attributes = BGPPathAttributes()
        attributes.origin = 0
        attributes.asPath = []
        attributes.nextHop = IPAddress("127.0.0.1")
        attributes.localPref = 100
        #expect(try await a.announce(BGPUpdate(attributes: attributes, nlri: [IPNetwork("10.244.1.0/24")!])) == 1)
        let update = try await next(b) { if case .update(let u) = $0 { u } else { nil } }
        #expect(
            update.announced == [IPNetwork("10.244.1.0/24")!] && update.attributes.nextHop == IPAddress("127.0.0.1"))

        try await a.removePeer("127.0.0.1")
        let reason = try await next(b) { if case .down(let r, _) = $0 { r } else { nil } }
        #expect(reason.contains("Administrative Shutdown"), "\(reason)")
        try await a.shutdown()
        try await b.shutdown()
    }

    @Test func garbageAfterOpenIsANotificationAndTheSpeakerKeepsListening() async throws {
        let a = BGPSpeaker(logger: logger)
        let port = try await a.listen(host: "127.0.0.1", port: 0)
        a.addPeer(config(id: 0x0a00_0001, passive: true), address: try SocketAddress(ipAddress: "127.0.0.1", port: 179))
        // A hand-made client: a valid OPEN, then 19 bytes with a broken marker.
        let open = BGPMessage.open(config(id: 0x0a00_0009).open).encoded()
        var garbage = BGPMessage.keepalive.encoded()
        garbage[0] = 0
        let received = try await RawClient.exchange(port: port, send: [open, garbage])
        // Our OPEN, our KEEPALIVE, then NOTIFICATION Message Header Error/Connection Not Synchronized.
        let messages = try frames(received).map { try BGPMessage.decode($0) }
        #expect(messages.last == .notification(BGPNotification(.messageHeader, 1)), "\(messages)")
        #expect(messages.contains { if case .open = $0 { true } else { false } })

        // Still listening: a real session comes up afterwards.
        let b = BGPSpeaker(logger: logger)
        b.addPeer(config(id: 0x0a00_0002), address: try SocketAddress(ipAddress: "127.0.0.1", port: port))
        _ = try await next(b, within: 20) { if case .established = $0 { true } else { nil } }
        try await a.shutdown()
        try await b.shutdown()
    }
}

/// Splits bytes into BGP messages by their header's length.
func frames(_ bytes: [UInt8]) throws -> [[UInt8]] {
    var out: [[UInt8]] = [], at = 0
    while at + 19 <= bytes.count {
        let length = Int(bytes[at + 16]) << 8 | Int(bytes[at + 17])
        guard length >= 19, at + length <= bytes.count else { break }
        out.append(Array(bytes[at..<at + length]))
        at += length
    }
    return out
}

/// A TCP client that writes messages one after the other and collects all it receives until
/// the other side closes.
enum RawClient {
    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var bytes: [UInt8] = []
        let done: EventLoopPromise<[UInt8]>
        init(done: EventLoopPromise<[UInt8]>) { self.done = done }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            bytes += b.readBytes(length: b.readableBytes) ?? []
        }
        func channelInactive(context: ChannelHandlerContext) { done.succeed(bytes) }
    }

    static func exchange(port: Int, send: [[UInt8]]) async throws -> [UInt8] {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let done = loop.makePromise(of: [UInt8].self)
        let channel = try await ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(done: done))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        for message in send { try await channel.writeAndFlush(ByteBuffer(bytes: message)).get() }
        return try await done.futureResult.get()
    }
}
